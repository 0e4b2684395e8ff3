"""Seeded, vectorised demo cameras for a Shanxi 雪亮工程 network.

`generate_cameras(n)` returns the canonical columns (names from `fields.py`) for `n` plausible
cameras: valid GB/T 28181 IDs counted up per county, point names and addresses built from
road/estate/school/village names, Hikvision/Dahua/Uniview models with matching RTSP URLs, and
IP, MAC and device serial numbers that never repeat. All randomness comes from one
`numpy.random.Generator`, so a seed always gives the same cameras; all maths is done on numpy
arrays. Strings are never built piece by piece per row: every distinct fragment (name tails,
address parts, IP prefixes, serial heads) is in a cached table, rows pick fragments by index
arithmetic and each final string is one join; IDs and MACs are written as fixed-width ASCII
bytes. So millions of rows take seconds.

Chunked generation (see `bench/gen_ledger.py`): pass `serial_start` with each region's next free
serial and advance it by the chunk's per-region counts. IDs, IPs, MACs and device serials are
functions of (region, serial), so they stay unique across chunks too.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from camera_registry.demo.regions import Region, shanxi_regions
from camera_registry.fields import FIELDS

# Columns generate_cameras returns, in export (fields.FIELDS) order: every field the demo
# has a plausible value for.
_NOT_GENERATED = frozenset(
    {"crs", "vfov", "owner", "contact", "firmware", "snapshot", "username", "password"}
)
COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.name not in _NOT_GENERATED)

# lon_min, lat_min, lon_max, lat_max: every generated point is clipped into this box.
SHANXI_BBOX = (110.2, 34.5, 114.6, 40.8)

MAX_SERIAL = 999_999  # GB/T 28181: six digits per region

# Relative camera counts: a 市辖区 weighs 3; a county 1 plus 1 per 3000 km² (so 1.07-2.05).
# Districts are also far smaller, so their camera density is many times the counties'.
_URBAN_WEIGHT = 3.0
_RURAL_WEIGHT = 1.0
_RURAL_AREA_SCALE = 3000.0
_SIGMA_KM = {"urban": 2.0, "rural": 8.0}

_ROADS = (
    "长风街", "体育路", "并州路", "五一路", "迎泽大街", "解放路", "府西街", "府东街",
    "学府街", "坞城路", "亲贤街", "龙城大街", "平阳路", "建设路", "和平街", "新建路",
    "胜利街", "文化路", "人民路", "振兴街", "育才路", "朝阳街", "东风路", "红旗街",
    "青年路", "友谊街", "光明路", "康乐街", "富强路", "太行路", "汾河路", "晋阳街",
    "滨河东路", "滨河西路", "南环路", "北环路", "迎宾路", "新华街", "开发路", "工业路",
    "车站街", "府前街", "东大街", "西大街", "南大街", "北大街", "中心街", "幸福街",
)  # fmt: skip
_ESTATES = (
    "锦绣苑", "阳光花园", "幸福家园", "和平里", "金色家园", "康乐苑", "丽华苑", "龙城花园",
    "滨河湾", "御景园", "书香苑", "翠竹园", "怡和苑", "福馨园", "紫薇苑", "兴华苑",
    "民安", "铁路", "电力", "煤运",
)  # fmt: skip
_SCHOOLS = (
    "第一小学", "第二小学", "第三小学", "实验小学", "育才小学", "新华小学", "朝阳小学",
    "第一中学", "第二中学", "第五中学", "第十中学", "实验中学", "职业中学", "中心小学",
)  # fmt: skip
_TOWNS = (
    "城关镇", "东阳镇", "西河镇", "南庄镇", "北营镇", "新民镇", "龙泉镇", "永安镇",
    "太平镇", "石门乡", "杨家庄乡", "马家堡乡", "三交镇", "大营镇", "古城镇", "河底镇",
    "王村镇", "下社乡", "南关镇", "东冶镇",
)  # fmt: skip
_VILLAGES = (
    "张家庄", "王家峪", "李家沟", "赵家堡", "刘家寨", "陈家湾", "杨家坪", "郭家庄",
    "东庄", "西庄", "南堡", "北堡", "前进", "红星", "后沟", "上河", "下河", "马坊",
    "石桥", "柳树湾", "枣园", "东关", "西关", "南寨", "北寨", "白家庄", "高家岭",
)  # fmt: skip
_HIGHWAYS = ("108国道", "207国道", "208国道", "209国道", "307国道", "309国道")
_CORNERS = ("东北角", "东南角", "西北角", "西南角")
_SIDES = ("东北角", "东南角", "西北角", "西南角", "东侧", "西侧", "南侧", "北侧")

# Point templates. Urban: intersection, road junction, estate gate, school gate;
# rural adds village entrances and highway junctions.
_T_CROSS, _T_JUNCTION, _T_ESTATE, _T_SCHOOL, _T_VILLAGE = range(5)
_P_URBAN = (0.40, 0.20, 0.25, 0.15, 0.0)
_P_RURAL = (0.15, 0.10, 0.10, 0.15, 0.50)

_LEVELS = ("1", "2", "3")
_P_LEVEL = (0.15, 0.35, 0.50)

# Lenses on a 1/2.8" sensor (5.1 mm wide): horizontal FOV = 2·atan(5.1 / 2f).
_LENS_MM = (4.0, 6.0, 8.0)
_P_LENS = (0.5, 0.3, 0.2)
_HFOV = tuple(round(2 * math.degrees(math.atan(5.1 / (2 * f))), 1) for f in _LENS_MM)
_VIEW_RANGE_M = ((30, 70), (50, 110), (80, 150))  # max view distance per lens, metres
_HEIGHTS_M = (3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 8.0)
_P_HEIGHT = (0.05, 0.10, 0.15, 0.20, 0.15, 0.15, 0.08, 0.07, 0.05)

_VENDORS = ("海康威视", "大华", "宇视")
_P_VENDOR = (0.50, 0.35, 0.15)
_HIK_MODELS = ("DS-2CD3T46WDV3-I3", "DS-2CD3T47WDV3-L", "DS-2CD3T26WDV3-I3", "DS-2CD2T47G2-L")
_DAHUA_MODELS = (
    "DH-IPC-HFW2433M-I1",
    "DH-IPC-HFW2433DM-IL",
    "DH-IPC-HFW4433M-I2",
    "DH-IPC-HFW3441E-AS",
)
_UNV_MODELS = ("IPC2124LE-ADF40KM-G", "IPC2124LE-ADF60KM-G", "IPC2124LE-ADF80KM-G")  # per lens
_OUIS = (
    (0xBCAD28, 0x4419B6, 0xC056E3),  # Hikvision
    (0x3CEF8C, 0x9002A9, 0xE0508B),  # Dahua
    (0x48EA63,),  # Uniview
)
_STREAM_MAIN = (
    ":554/Streaming/Channels/101",
    ":554/cam/realmonitor?channel=1&subtype=0",
    ":554/media/video1",
)
_STREAM_SUB = (
    ":554/Streaming/Channels/102",
    ":554/cam/realmonitor?channel=1&subtype=1",
    ":554/media/video2",
)
_DAHUA_BATCHES = ("5J0B2D3P", "6G04A9EP", "4L01A87P", "7F0DB1AP")
_UNV_BATCHES = ("C3E", "C4D", "C5K")

_FIRST_INSTALL = np.datetime64("2016-01-01")
_LAST_INSTALL = np.datetime64("2024-12-31")
_TABLE_START = np.datetime64("2015-06-01")  # manufacture dates run up to ~200 days earlier

_WORDS = ("交叉口", "路口")  # crossing / junction
_HOUSE_NUMBERS = 399  # 1号 … 399号

ObjArray = NDArray[np.object_]
IntArray = NDArray[np.int64]

# Sizes of the name parts, and where each template's block starts in the cached tables.
_R, _T, _H = len(_ROADS), len(_TOWNS), len(_HIGHWAYS)
_E, _K, _V = len(_ESTATES), len(_SCHOOLS), len(_VILLAGES)
_C, _S, _W = len(_CORNERS), len(_SIDES), len(_WORDS)
_NAME_CROSS = 0
_NAME_HIGHWAY = _NAME_CROSS + _W * _R * _R * _C
_NAME_ESTATE = _NAME_HIGHWAY + _W * _T * _H * _R * _C
_NAME_SCHOOL = _NAME_ESTATE + _R * _E * _S
_NAME_VILLAGE = _NAME_SCHOOL + _R * _K * _S
_ADDR_CROSS = 0
_ADDR_HIGHWAY = _ADDR_CROSS + _W * _R * _R
_ADDR_ESTATE = _ADDR_HIGHWAY + _W * _T * _H * _R
_ADDR_SCHOOL = _ADDR_ESTATE + _E
_ADDR_VILLAGE = _ADDR_SCHOOL + _K
_N_HIK, _N_DAHUA = len(_HIK_MODELS), len(_DAHUA_MODELS)
_N_DAYS = int((_LAST_INSTALL - _TABLE_START).astype(np.int64)) + 1
_SERIAL_DAHUA = _N_HIK * _N_DAYS
_SERIAL_UNV = _SERIAL_DAHUA + len(_DAHUA_BATCHES)
_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def _objects(values: Iterable[object]) -> ObjArray:
    """A 1-d object array (numpy must not turn a list of str into a fixed-width array)."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@dataclass(frozen=True)
class _Tables:
    """Every distinct string fragment, built once; rows only index into these."""

    name_tails: ObjArray  # 长风街与体育路交叉口东北角, 城关镇张家庄村村口南侧, …
    addr_heads: ObjArray  # "" or 长风街123号
    addr_tails: ObjArray  # 长风街与体育路交叉口, 锦绣苑小区, 第一小学, 城关镇张家庄村, …
    ip_prefixes: ObjArray  # index a·256+b → "10.a.b."
    rtsp_prefixes: ObjArray  # index a·256+b → "rtsp://10.a.b."
    octets: ObjArray  # "0" … "255"
    stream_tails: ObjArray  # index (vendor·2 + sub)·256 + octet → "3:554/Streaming/Channels/101"
    iso_dates: ObjArray  # day index from _TABLE_START → "2016-01-01"
    serial_heads: ObjArray  # Hikvision model+date+AACH, Dahua batch, Uniview 210235…A+yy


@cache
def _tables() -> _Tables:
    p = itertools.product
    name_tails = _objects(
        [
            *(f"{a}与{b}{w}{c}" for w, a, b, c in p(_WORDS, _ROADS, _ROADS, _CORNERS)),
            *(
                f"{t}{h}与{r}{w}{c}"
                for w, t, h, r, c in p(_WORDS, _TOWNS, _HIGHWAYS, _ROADS, _CORNERS)
            ),
            *(f"{r}{e}小区门口{s}" for r, e, s in p(_ROADS, _ESTATES, _SIDES)),
            *(f"{r}{k}校门口{s}" for r, k, s in p(_ROADS, _SCHOOLS, _SIDES)),
            *(f"{t}{v}村村口{s}" for t, v, s in p(_TOWNS, _VILLAGES, _SIDES)),
        ]
    )
    addr_tails = _objects(
        [
            *(f"{a}与{b}{w}" for w, a, b in p(_WORDS, _ROADS, _ROADS)),
            *(f"{t}{h}与{r}{w}" for w, t, h, r in p(_WORDS, _TOWNS, _HIGHWAYS, _ROADS)),
            *(f"{e}小区" for e in _ESTATES),
            *_SCHOOLS,
            *(f"{t}{v}村" for t, v in p(_TOWNS, _VILLAGES)),
        ]
    )
    numbers = range(1, _HOUSE_NUMBERS + 1)
    addr_heads = _objects(["", *(f"{r}{i}号" for r, i in p(_ROADS, numbers))])
    iso = (_TABLE_START + np.arange(_N_DAYS)).astype("U10").tolist()
    compact = [d.replace("-", "") for d in iso]
    serial_heads = _objects(
        [
            *(f"{m}{d}AACH" for m, d in p(_HIK_MODELS, compact)),
            *_DAHUA_BATCHES,
            *(f"210235{b}A{d[2:4]}" for b, d in p(_UNV_BATCHES, compact)),
        ]
    )
    return _Tables(
        name_tails=name_tails,
        addr_heads=addr_heads,
        addr_tails=addr_tails,
        ip_prefixes=_objects(f"10.{a}.{b}." for a, b in p(range(256), range(256))),
        rtsp_prefixes=_objects(f"rtsp://10.{a}.{b}." for a, b in p(range(256), range(256))),
        octets=_objects(str(i) for i in range(256)),
        stream_tails=_objects(
            f"{o}{path}"
            for main, sub in zip(_STREAM_MAIN, _STREAM_SUB, strict=True)
            for path in (main, sub)
            for o in range(256)
        ),
        iso_dates=_objects(iso),
        serial_heads=serial_heads,
    )


def _digits(values: NDArray[np.integer[Any]], width: int, base: int = 10) -> NDArray[np.uint8]:
    """ASCII digits of `values`, zero-padded to `width` (upper-case for base 16), per row."""
    out = np.empty((len(values), width), dtype=np.uint8)
    rest = values.copy()
    for k in range(width - 1, -1, -1):  # one column at a time: far cheaper than broadcasting
        out[:, k] = _HEX[rest % base]
        rest //= base
    return out


def _ascii_rows(buf: NDArray[np.uint8]) -> list[object]:
    """Each row of an (n, width) byte array as a str; trailing NUL padding is dropped."""
    width = buf.shape[1]
    strings: list[object] = (
        np.ascontiguousarray(buf).view(f"S{width}").ravel().astype(f"U{width}").tolist()
    )
    return strings


def _cdf(p: tuple[float, ...]) -> NDArray[np.float64]:
    """Cumulative probabilities ending at exactly 1.0 (so u in [0, 1) never runs off the end)."""
    cdf = np.cumsum(p)
    out: NDArray[np.float64] = cdf / cdf[-1]
    return out


def _mix24(x: IntArray, key: int) -> IntArray:
    """A bijection on 24-bit ints (xor-shifts and odd multipliers mod 2^24) that looks random."""
    mask = 0xFFFFFF
    x = (x ^ key) & mask
    x ^= x >> 12
    x = (x * 0x9E3779) & mask
    x ^= x >> 11
    x = (x * 0x2545F5) & mask
    x ^= x >> 12
    return x


def _per_region_rank(ridx: IntArray, n_regions: int) -> IntArray:
    """0, 1, 2, … counting each row's position among the rows of its own region."""
    order = np.argsort(ridx, kind="stable")
    counts = np.bincount(ridx, minlength=n_regions)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(ridx), dtype=np.int64)
    rank[order] = np.arange(len(ridx), dtype=np.int64) - starts[ridx[order]]
    return rank


def _places(
    rng: np.random.Generator,
    template: IntArray,
    rural: NDArray[np.bool_],
    draws_only: bool = False,
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Per row: index of the name tail, address head and address tail, and the industry code."""
    n = len(template)
    road1 = rng.integers(_R, size=n)
    road2 = (road1 + 1 + rng.integers(_R - 1, size=n)) % _R  # never the same road twice
    estate = rng.integers(_E, size=n)
    school = rng.integers(_K, size=n)
    town = rng.integers(_T, size=n)
    village = rng.integers(_V, size=n)
    highway = rng.integers(_H, size=n)
    corner = rng.integers(_C, size=n)
    side = rng.integers(_S, size=n)
    number = rng.integers(_HOUSE_NUMBERS, size=n)
    # Rural crossings often sit on a national highway outside the county town.
    on_highway = rural & (rng.random(n) < 0.6)
    traffic = rng.random(n) < 0.15  # shared with the traffic police: industry 04
    if draws_only:  # the caller needs no names, only the random stream to advance the same
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty

    word = (template == _T_JUNCTION).astype(np.int64)
    crossing = (template == _T_CROSS) | (template == _T_JUNCTION)
    kinds = [
        crossing & ~on_highway,
        crossing & on_highway,
        template == _T_ESTATE,
        template == _T_SCHOOL,
    ]
    cross = (word * _R + road1) * _R + road2
    by_highway = ((word * _T + town) * _H + highway) * _R + road1
    name_idx = np.select(
        kinds,
        [
            _NAME_CROSS + cross * _C + corner,
            _NAME_HIGHWAY + by_highway * _C + corner,
            _NAME_ESTATE + (road1 * _E + estate) * _S + side,
            _NAME_SCHOOL + (road1 * _K + school) * _S + side,
        ],
        default=_NAME_VILLAGE + (town * _V + village) * _S + side,
    )
    tail_idx = np.select(
        kinds,
        [
            _ADDR_CROSS + cross,
            _ADDR_HIGHWAY + by_highway,
            _ADDR_ESTATE + estate,
            _ADDR_SCHOOL + school,
        ],
        default=_ADDR_VILLAGE + town * _V + village,
    )
    numbered = kinds[2] | kinds[3]
    head_idx = np.where(numbered, 1 + road1 * _HOUSE_NUMBERS + number, 0)
    # GB/T 28181 industry: 00 社会治安路面, 01 社会治安社区 (estate gates), 04 交通路面.
    industry = np.where(kinds[2], 1, np.where(crossing & traffic, 4, 0))
    return name_idx, head_idx, tail_idx, industry.astype(np.int64)


def _inside_boundaries(
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    ridx: IntArray,
    regs: list[Region],
    boundaries: Mapping[str, shapely.Geometry],
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Move points that fell outside their region's polygon to uniform points inside it.

    One vectorised `contains_xy` per region over that region's rows (rows grouped by one
    argsort), then rejection sampling for the misses; regions without a polygon keep theirs.
    """
    rng = np.random.default_rng([seed, 7])
    lon, lat = lon.copy(), lat.copy()
    order = np.argsort(ridx, kind="stable")
    ends = np.cumsum(np.bincount(ridx, minlength=len(regs)))
    starts = ends - np.bincount(ridx, minlength=len(regs))
    for r, region in enumerate(regs):
        poly = boundaries.get(region.code)
        if poly is None or starts[r] == ends[r]:
            continue
        rows = order[starts[r] : ends[r]]
        shapely.prepare(poly)
        out = rows[~shapely.contains_xy(poly, lon[rows], lat[rows])]
        if len(out) == 0:
            continue
        x0, y0, x1, y1 = shapely.bounds(poly).tolist()
        fill = max(float(shapely.area(poly)) / max((x1 - x0) * (y1 - y0), 1e-12), 0.05)
        while len(out):
            m = int(len(out) / fill * 1.3) + 16
            x = rng.uniform(x0, x1, m).round(6)
            y = rng.uniform(y0, y1, m).round(6)
            good = shapely.contains_xy(poly, x, y)
            take = min(len(out), int(good.sum()))
            lon[out[:take]] = x[good][:take]
            lat[out[:take]] = y[good][:take]
            out = out[take:]
    return lon, lat


@dataclass(frozen=True, eq=False)
class CameraArrays:
    """The coverage-relevant columns of `generate_cameras`, as numpy arrays (same seed, same
    cameras), without building millions of strings: what a coverage benchmark needs."""

    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    region_code: ObjArray
    level: IntArray  # 1, 2 or 3
    azimuth: NDArray[np.float64]  # NaN: orientation never surveyed
    hfov: NDArray[np.float64]
    max_view_distance: NDArray[np.float64]
    mount_height: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.lon)


def generate_camera_arrays(
    n: int,
    *,
    seed: int = 2024,
    regions: list[Region] | None = None,
    boundaries: Mapping[str, shapely.Geometry] | None = None,
) -> CameraArrays:
    """The cameras `generate_cameras(n, seed=…, regions=…, boundaries=…)` makes, numeric only.

    Draws the same random numbers in the same order and stops before the strings, so the
    positions, levels and optics equal those of the full columns (tested).
    """
    out = _generate(n, seed, regions, None, boundaries, numeric=True)
    assert isinstance(out, CameraArrays)
    return out


def generate_cameras(
    n: int,
    *,
    seed: int = 2024,
    regions: list[Region] | None = None,
    serial_start: Mapping[str, int] | None = None,
    boundaries: Mapping[str, shapely.Geometry] | None = None,
) -> dict[str, list[object]]:
    """`n` demo cameras as canonical columns (see `COLUMNS`), all lists of length `n`.

    `serial_start` maps a region code to the first GB/T 28181 serial to use there (default 1);
    chunked generators pass each region's next free serial so IDs stay unique across chunks.
    `boundaries` maps region codes to WGS-84 polygons (see `geodemo`): a camera scattered
    outside its region's polygon is moved to a uniform point inside it, so coverage sees every
    camera in the county it is registered to. The move draws from its own random stream, so
    every other column is the same with or without boundaries.
    """
    out = _generate(n, seed, regions, serial_start, boundaries, numeric=False)
    assert isinstance(out, dict)
    return out


def _generate(
    n: int,
    seed: int,
    regions: list[Region] | None,
    serial_start: Mapping[str, int] | None,
    boundaries: Mapping[str, shapely.Geometry] | None,
    *,
    numeric: bool,
) -> dict[str, list[object]] | CameraArrays:
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    regs = shanxi_regions() if regions is None else list(regions)
    if not regs:
        raise ValueError("need at least one region to place cameras in")
    tables = _tables()
    rng = np.random.default_rng(seed)
    n_regions = len(regs)

    # --- where: region by urban/rural weight, point scattered around its seat -------------
    urban = np.array([r.kind == "urban" for r in regs], dtype=bool)
    area = np.array([r.area_km2 for r in regs])
    weight = np.where(urban, _URBAN_WEIGHT, _RURAL_WEIGHT + area / _RURAL_AREA_SCALE)
    ridx = rng.choice(n_regions, size=n, p=weight / weight.sum()).astype(np.int64)
    is_urban = urban[ridx]

    lon0 = np.array([r.lon for r in regs])[ridx]
    lat0 = np.array([r.lat for r in regs])[ridx]
    sigma = np.where(is_urban, _SIGMA_KM["urban"], _SIGMA_KM["rural"])
    offset_km = np.clip(rng.standard_normal((n, 2)), -3.0, 3.0) * sigma[:, None]
    lon_min, lat_min, lon_max, lat_max = SHANXI_BBOX
    lat = np.clip(lat0 + offset_km[:, 1] / 110.574, lat_min, lat_max).round(6)
    lon = np.clip(
        lon0 + offset_km[:, 0] / (111.320 * np.cos(np.radians(lat0))), lon_min, lon_max
    ).round(6)
    if boundaries:
        lon, lat = _inside_boundaries(lon, lat, ridx, regs, boundaries, seed)

    # --- what: point type, name, address, level ------------------------------------------
    u = rng.random(n)
    template = np.where(
        is_urban,
        np.searchsorted(_cdf(_P_URBAN), u, side="right"),
        np.searchsorted(_cdf(_P_RURAL), u, side="right"),
    ).astype(np.int64)
    name_idx, head_idx, tail_idx, industry = _places(rng, template, ~is_urban, numeric)
    level_idx = rng.choice(len(_LEVELS), size=n, p=_P_LEVEL).astype(np.int64)
    # record_days: level 1 keeps 90 days, level 2 30, level 3 30 or unknown (None).
    days_idx = np.where(level_idx == 0, 0, 1 + ((level_idx == 2) & (rng.random(n) < 0.3)))

    # --- GB/T 28181 ID: region + 00 + industry + type + network + per-region serial ------
    # (numeric-only callers skip the string work but make the same random draws)
    if not numeric:
        start = np.array(
            [1 if serial_start is None else serial_start.get(r.code, 1) for r in regs],
            dtype=np.int64,
        )
        serial = start[ridx] + _per_region_rank(ridx, n_regions)
        if n and (serial.min() < 0 or serial.max() > MAX_SERIAL):
            raise ValueError(f"GB/T 28181 serials must stay within 0..{MAX_SERIAL}")
    type_code = np.where(rng.random(n) < 0.9, 132, 131).astype(np.int64)
    network = np.where(rng.random(n) < 0.85, 5, 0).astype(np.int64)
    if not numeric:
        region_ascii = np.array([list(r.code.encode("ascii")) for r in regs], dtype=np.uint8)
        gb = np.empty((n, 20), dtype=np.uint8)
        gb[:, 0:6] = region_ascii[ridx]
        gb[:, 6:8] = ord("0")  # grassroots unit
        gb[:, 8:10] = _digits(industry, 2)
        gb[:, 10:13] = _digits(type_code, 3)
        gb[:, 13:14] = _digits(network, 1)
        gb[:, 14:20] = _digits(serial.astype(np.int32), 6)

    # --- optics and mounting ----------------------------------------------------------------
    lens = rng.choice(len(_LENS_MM), size=n, p=_P_LENS).astype(np.int64)
    lo = np.array([r[0] for r in _VIEW_RANGE_M])[lens]
    hi = np.array([r[1] for r in _VIEW_RANGE_M])[lens]
    view = lo + (rng.random(n) * (hi - lo + 1)).astype(np.int64)
    height_idx = rng.choice(len(_HEIGHTS_M), size=n, p=_P_HEIGHT)
    azimuth_idx = rng.integers(360, size=n)
    azimuth_idx[rng.random(n) < 0.10] = 360  # orientation never surveyed
    if numeric:
        return CameraArrays(
            lon=lon,
            lat=lat,
            region_code=_objects(r.code for r in regs)[ridx],
            level=level_idx + 1,
            azimuth=np.where(azimuth_idx == 360, np.nan, azimuth_idx.astype(np.float64)),
            hfov=np.asarray(_HFOV, dtype=np.float64)[lens],
            max_view_distance=view.astype(np.float64),
            mount_height=np.asarray(_HEIGHTS_M, dtype=np.float64)[height_idx],
        )

    # --- device: vendor and model ------------------------------------------------------------
    vendor = rng.choice(len(_VENDORS), size=n, p=_P_VENDOR).astype(np.int64)
    u = rng.random(n)
    hik_model = (u * _N_HIK).astype(np.int64)
    model_idx = np.select(
        [vendor == 0, vendor == 1],
        [hik_model, _N_HIK + (u * _N_DAHUA).astype(np.int64)],
        default=_N_HIK + _N_DAHUA + lens,  # Uniview's model number names the lens
    )
    models = _objects(_HIK_MODELS + _DAHUA_MODELS + _UNV_MODELS)

    # --- network identity: a 24-bit number per camera, unique while (region, serial) is ---
    # IP 10.x.y.z: region block in the high bits, serial-derived host (no .0/.255) below.
    region_bits = max(1, math.ceil(math.log2(n_regions + 1)))
    host_bits = 24 - region_bits
    host = ((serial // 254) << 8) | (serial % 254 + 1)
    if n and host.max() >= 1 << host_bits:
        raise ValueError("too many cameras in one region for the demo 10.0.0.0/8 address plan")
    addr24 = ((ridx + 1) << host_bits) | host
    net24, octet = addr24 >> 8, addr24 & 255

    # MAC: vendor OUI + a bijective scramble of addr24, so MACs never repeat either.
    oui_choice = rng.random(n)
    oui = np.zeros(n, dtype=np.int64)
    for v, ouis in enumerate(_OUIS):
        rows = vendor == v
        pick = (oui_choice[rows] * len(ouis)).astype(np.int64)
        oui[rows] = np.array(ouis, dtype=np.int64)[pick]
    mac48 = (oui << 24) | _mix24(addr24, 0x5A5A5A)
    nibbles = _digits(mac48, 12, 16)
    mac = np.full((n, 17), ord(":"), dtype=np.uint8)
    for k in range(6):
        mac[:, 3 * k : 3 * k + 2] = nibbles[:, 2 * k : 2 * k + 2]

    # --- dates and device serial numbers (each vendor's format) ----------------------------
    first = int((_FIRST_INSTALL - _TABLE_START).astype(np.int64))
    day = first + rng.integers(_N_DAYS - first, size=n)
    made = day - rng.integers(30, 200, size=n)  # manufactured a month or more before
    batch = rng.integers(12, size=n)
    uid = _mix24(addr24, 0xA5C3E1)
    serial_head = np.select(
        [vendor == 0, vendor == 1],
        [hik_model * _N_DAYS + made, _SERIAL_DAHUA + batch % len(_DAHUA_BATCHES)],
        default=_SERIAL_UNV + (batch % len(_UNV_BATCHES)) * _N_DAYS + made,
    )
    serial_tail = np.zeros((n, 9), dtype=np.uint8)  # NUL padding is dropped
    for v, width, base in ((0, 9, 10), (1, 7, 16), (2, 8, 10)):
        rows = vendor == v
        serial_tail[rows, :width] = _digits(uid[rows], width, base)

    port = np.where(rng.random(n) < 0.92, 80, 8080)
    rtsp = tables.rtsp_prefixes[net24].tolist()
    prefix = _objects(f"{r.city}{r.name}" for r in regs)[ridx].tolist()
    full_prefix = _objects(f"山西省{r.city}{r.name}" for r in regs)[ridx].tolist()

    return {
        "gb_id": _ascii_rows(gb),
        "name": list(map(operator.add, prefix, tables.name_tails[name_idx].tolist())),
        "level": _objects(_LEVELS)[level_idx].tolist(),
        "lon": lon.tolist(),
        "lat": lat.tolist(),
        "region_code": _objects(r.code for r in regs)[ridx].tolist(),
        "address": list(
            map(
                "".join,
                zip(
                    full_prefix,
                    tables.addr_heads[head_idx].tolist(),
                    tables.addr_tails[tail_idx].tolist(),
                    strict=True,
                ),
            )
        ),
        "azimuth": _objects([*(float(a) for a in range(360)), None])[azimuth_idx].tolist(),
        "hfov": _objects(_HFOV)[lens].tolist(),
        "max_view_distance": _objects(float(d) for d in range(151))[view].tolist(),
        "mount_height": _objects(_HEIGHTS_M)[height_idx].tolist(),
        "installed_at": tables.iso_dates[day].tolist(),
        "record_days": _objects((90, 30, None))[days_idx].tolist(),
        "vendor": _objects(_VENDORS)[vendor].tolist(),
        "model": models[model_idx].tolist(),
        "serial": list(
            map(
                operator.add,
                tables.serial_heads[serial_head].tolist(),
                _ascii_rows(serial_tail),
            )
        ),
        "mac": _ascii_rows(mac),
        "ip": list(
            map(operator.add, tables.ip_prefixes[net24].tolist(), tables.octets[octet].tolist())
        ),
        "onvif_port": port.tolist(),
        "stream_main": list(
            map(operator.add, rtsp, tables.stream_tails[vendor * 512 + octet].tolist())
        ),
        "stream_sub": list(
            map(operator.add, rtsp, tables.stream_tails[vendor * 512 + 256 + octet].tolist())
        ),
    }
