"""Camera validation as columns: one set of rules for one API call or a 2.4-million-row ledger.

Input is a mapping field -> list of values (ledger cell text, or JSON scalars from the API) and
the row numbers the user sees. Output is typed columns for the good rows and a `FieldError` for
every problem of every bad row, naming the row and the field. Checks run over whole columns
with numpy; Python-level work is limited to the cells that need it (bad cells, stream URIs with
credentials, distinct CRS names), so the cost per row stays in the microseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from camera_registry.crypto import CredentialBox
from camera_registry.errors import FieldError
from camera_registry.fields import BY_NAME, DB_COLUMNS
from camera_registry.gbid import PROVINCES, gb_id_problem, region_code_problem
from camera_registry.stream_uri import StreamURIError, split_stream_uri
from geo.crs import in_china_bbox, looks_swapped, normalise_crs, to_wgs84
from geo.errors import UnknownCRS

LEVELS: dict[str, int] = {
    "1": 1,
    "2": 2,
    "3": 3,
    "9": 9,
    "一类": 1,
    "二类": 2,
    "三类": 3,
    "其他": 9,
    "其它": 9,
    "一类点位": 1,
    "二类点位": 2,
    "三类点位": 3,
    "1类": 1,
    "2类": 2,
    "3类": 3,
    "i": 1,
    "ii": 2,
    "iii": 3,
    "1.0": 1,
    "2.0": 2,
    "3.0": 3,
    "9.0": 9,
}
LEVEL_HINT = "use 1/2/3/9 or 一类/二类/三类/其他 (GB/T 28181 PointType)"

_RANGES: dict[str, tuple[float, float, bool, str]] = {
    # field: (low, high, low_inclusive, unit)
    "azimuth": (0.0, 360.0, True, "degrees clockwise from north"),
    "hfov": (0.0, 360.0, False, "degrees"),
    "vfov": (0.0, 180.0, False, "degrees"),
    "max_view_distance": (0.0, 10_000.0, False, "metres"),
    "mount_height": (0.0, 500.0, True, "metres"),
}
_INTS: dict[str, tuple[int, int]] = {"record_days": (1, 3650), "onvif_port": (1, 65535)}
_TEXT_MAX = {"name": 200}
_TEXT_DEFAULT_MAX = 500
_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
_MAC = re.compile(r"[0-9a-f]{2}([:\-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://")
_PROVINCE_OK = np.zeros(100, dtype=bool)
_PROVINCE_OK[[int(p) for p in PROVINCES]] = True


@dataclass
class CameraBatch:
    """Validated cameras: `cols[c][i]` is DB column c of good row i (None = NULL)."""

    rows: NDArray[np.int64]
    cols: dict[str, list[Any]]
    present: frozenset[str]  # input fields the source provided (others keep stored values)
    warnings: list[FieldError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def without(self, drop: Sequence[int]) -> CameraBatch:
        """A copy without the rows at positions `drop`."""
        keep = np.setdiff1d(np.arange(len(self.rows)), np.asarray(drop, dtype=np.intp))
        idx = keep.tolist()
        cols = {k: [v[i] for i in idx] for k, v in self.cols.items()}
        return CameraBatch(self.rows[keep], cols, self.present, self.warnings)

    def records(self) -> list[tuple[Any, ...]]:
        return list(zip(*(self.cols[c] for c in DB_COLUMNS), strict=True))


class _Checker:
    def __init__(self, n: int, rows: NDArray[np.int64]) -> None:
        self.n = n
        self.rows = rows
        self.bad = np.zeros(n, dtype=bool)
        self.errors: list[tuple[int, FieldError]] = []

    def fail(self, idx: NDArray[np.intp] | Sequence[int], name: str, message: str) -> None:
        for i in np.asarray(idx, dtype=np.intp).tolist():
            self.bad[i] = True
            self.errors.append((i, FieldError(name, message, int(self.rows[i]))))

    def fail_each(self, items: list[tuple[int, str]], name: str) -> None:
        for i, message in items:
            self.bad[i] = True
            self.errors.append((i, FieldError(name, message, int(self.rows[i]))))


def _label(name: str) -> str:
    f = BY_NAME.get(name)
    return f"{f.label_zh}/{name}" if f else name


_STR_OR_NONE = {str, type(None)}


def _texts(values: Sequence[Any] | None, name: str, ck: _Checker) -> list[str | None]:
    """Cell text, '' as None. Strings arrive stripped (ledger reader, API model)."""
    if values is None:
        return [None] * ck.n
    # The caller's list is returned as is when it needs no change: callers copy before editing.
    out: list[str | None] = values if isinstance(values, list) else list(values)
    if not set(map(type, out)) <= _STR_OR_NONE:
        out = [None if v is None else str(v).strip() or None for v in out]
    elif "" in out:
        out = [v or None for v in out]
    limit = _TEXT_MAX.get(name, _TEXT_DEFAULT_MAX)
    if max(map(len, filter(None, out)), default=0) > limit:
        too_long = [i for i, v in enumerate(out) if v is not None and len(v) > limit]
        ck.fail(too_long, name, f"{_label(name)} is longer than {limit} characters; shorten it")
    return out


def _all_match(pattern: re.Pattern[str], texts: list[str]) -> bool:
    """Whether every text matches: one C-level scan of the joined column, not n calls."""
    joined = "\n".join(texts)
    return len(pattern.findall(joined)) == len(texts) and "\n\n" not in joined


def _floats(values: Sequence[Any], name: str, ck: _Checker) -> NDArray[np.float64]:
    """Parse a column to float64 (NaN = empty), reporting unparseable or non-finite cells."""
    out = np.full(ck.n, np.nan)
    if None not in values and "" not in values:
        idx: Sequence[int] = range(ck.n)
        picked = values if isinstance(values, list) else list(values)
    else:
        idx = [i for i, v in enumerate(values) if v is not None and v != ""]
        picked = [values[i] for i in idx]
    if not picked:
        return out
    bad: list[int] = []
    try:
        parsed = np.array(picked, dtype=np.float64)
    except (ValueError, TypeError):
        parsed = np.empty(len(picked))
        for j, v in enumerate(picked):
            try:
                text = v.strip().rstrip("°").replace("，", ".") if isinstance(v, str) else v
                parsed[j] = float(text)
            except (ValueError, TypeError):
                parsed[j] = np.nan
                bad.append(idx[j])
        if bad:
            ck.fail(bad, name, f"{_label(name)} is not a number")
    finite = np.isfinite(parsed)
    if not finite.all():
        unparsed = set(bad)
        nonfinite = [idx[j] for j in np.flatnonzero(~finite).tolist() if idx[j] not in unparsed]
        if nonfinite:
            ck.fail(nonfinite, name, f"{_label(name)} must be a finite number")
    if len(picked) == ck.n:
        return parsed
    out[np.asarray(idx)] = parsed
    return out


def _ints(values: Sequence[Any], name: str, ck: _Checker) -> list[int | None]:
    lo, hi = _INTS[name]
    floats = _floats(values, name, ck)
    has = ~np.isnan(floats)
    bad = has & ((floats != np.round(floats)) | (floats < lo) | (floats > hi))
    if bad.any():
        ck.fail(np.flatnonzero(bad), name, f"{_label(name)} must be a whole number {lo}–{hi}")
    return [
        int(v) if ok else None for v, ok in zip(floats.tolist(), (has & ~bad).tolist(), strict=True)
    ]


def _nullable(arr: NDArray[np.float64]) -> list[float | None]:
    return [None if v != v else v for v in arr.tolist()]


def _gb_ids(values: Sequence[Any], ck: _Checker) -> list[str | None]:
    texts = _texts(values, "gb_id", ck)
    present = np.fromiter((t is not None for t in texts), dtype=bool, count=ck.n)
    if not present.any():
        return texts
    idx = np.flatnonzero(present)
    picked = [texts[i] for i in idx.tolist()]
    lengths = np.fromiter(map(len, picked), dtype=np.int64, count=len(picked))  # type: ignore[arg-type]
    ok = lengths == 20
    arr = np.array([p if len(p) == 20 else "0" * 20 for p in picked], dtype="<U20")  # type: ignore[arg-type]
    codes = arr.view(np.uint32).reshape(-1, 20).astype(np.int64) - 48
    ok &= ((codes >= 0) & (codes <= 9)).all(axis=1)
    ok &= _PROVINCE_OK[np.clip(codes[:, 0] * 10 + codes[:, 1], 0, 99)]
    type_code = codes[:, 10] * 100 + codes[:, 11] * 10 + codes[:, 12]
    ok &= (type_code == 131) | (type_code == 132)
    ok &= codes[:, 13] != 9
    ok &= ~((codes[:, 2] == 0) & (codes[:, 3] == 0) & ((codes[:, 4] != 0) | (codes[:, 5] != 0)))
    problems = []
    for j in np.flatnonzero(~ok).tolist():
        i = int(idx[j])
        problem = gb_id_problem(picked[j]) or "is not a valid camera ID"  # type: ignore[arg-type]
        problems.append((i, f"国标编码/gb_id {problem}"))
    ck.fail_each(problems, "gb_id")
    return texts


def _region_codes(
    values: Sequence[Any] | None, gb: list[str | None], ck: _Checker, scope: str | None
) -> list[str | None]:
    given = _texts(values, "region_code", ck) if values is not None else [None] * ck.n
    out: list[str | None] = [None] * ck.n
    problems: dict[str, str | None] = {}
    mismatch: list[tuple[int, str]] = []
    invalid: list[tuple[int, str]] = []
    missing: list[int] = []
    for i, (r, g) in enumerate(zip(given, gb, strict=True)):
        from_gb = g[:6] if g is not None and len(g) == 20 else None
        if r is not None:
            if r not in problems:
                problems[r] = region_code_problem(r)
            if problems[r] is not None:
                invalid.append((i, f"行政区划/region_code {problems[r]}"))
                continue
            if from_gb is not None and r != from_gb:
                mismatch.append(
                    (
                        i,
                        f"行政区划/region_code {r} disagrees with 国标编码/gb_id, "
                        f"whose digits 1-6 say {from_gb}; correct one of them",
                    )
                )
                continue
            out[i] = r
        elif from_gb is not None:
            out[i] = from_gb
        elif g is None:
            missing.append(i)
    ck.fail_each(invalid, "region_code")
    ck.fail_each(mismatch, "region_code")
    if missing:
        ck.fail(
            missing,
            "region_code",
            "give 国标编码/gb_id, or 行政区划/region_code so an ID can be generated",
        )
    if scope:
        outside = [i for i, r in enumerate(out) if r is not None and not r.startswith(scope)]
        if outside:
            ck.fail(
                outside,
                "region_code",
                f"is outside your region scope {scope}; ask an admin for a token that covers it",
            )
    return out


def _levels(values: Sequence[Any] | None, ck: _Checker) -> list[int | None]:
    if values is None:
        ck.fail(list(range(ck.n)), "level", f"点位类型/level is required; {LEVEL_HINT}")
        return [None] * ck.n
    out: list[int | None] = [None] * ck.n
    bad: list[int] = []
    for i, v in enumerate(values):
        key = (v.strip().lower() if isinstance(v, str) else str(v)) if v is not None else ""
        level = LEVELS.get(key)
        if level is None:
            bad.append(i)
        out[i] = level
    if bad:
        ck.fail(bad, "level", f"点位类型/level is missing or unknown; {LEVEL_HINT}")
    return out


def _given(values: Sequence[Any] | None, n: int) -> NDArray[np.bool_]:
    if values is None:
        return np.zeros(n, dtype=bool)
    return np.fromiter((v is not None and v != "" for v in values), dtype=bool, count=n)


def _coordinates(
    cols: Mapping[str, Sequence[Any]], levels: list[int | None], default_crs: str, ck: _Checker
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    nan = np.full(ck.n, np.nan)
    lon = _floats(cols["lon"], "lon", ck) if "lon" in cols else nan.copy()
    lat = _floats(cols["lat"], "lat", ck) if "lat" in cols else nan.copy()
    has_lon, has_lat = ~np.isnan(lon), ~np.isnan(lat)
    given_lon, given_lat = _given(cols.get("lon"), ck.n), _given(cols.get("lat"), ck.n)
    half = given_lon ^ given_lat  # an unparseable cell is reported once, as itself
    if half.any():
        ck.fail(np.flatnonzero(half), "lat", "give both 经度/lon and 纬度/lat, or neither")
    both = has_lon & has_lat
    needs = np.array([lv in (1, 2) for lv in levels], dtype=bool) & ~given_lon & ~given_lat
    if needs.any():
        ck.fail(
            np.flatnonzero(needs),
            "lon",
            "一类/二类 points need WGS-84 经度/lon and 纬度/lat (GB/T 28181)",
        )
    # CRS per row (ledger column) or the caller's default; converted to WGS-84 below. A ledger
    # nearly always has one system throughout: then it is one name, not a per-row array.
    crs: str | NDArray[np.object_] = default_crs
    if "crs" in cols:
        names = set(cols["crs"])
        known: dict[Any, str] = {}
        for name in names:
            text = name.strip() if isinstance(name, str) else ""
            try:
                known[name] = normalise_crs(text) if text else default_crs
            except UnknownCRS as exc:
                known[name] = default_crs
                bad = [i for i, v in enumerate(cols["crs"]) if v == name and both[i]]
                ck.fail(bad, "crs", f"坐标系/crs: {exc}")
        systems = set(known.values())
        if len(systems) == 1:
            crs = systems.pop()
        else:
            crs = np.array([known[v] for v in cols["crs"]], dtype=object)
    with np.errstate(invalid="ignore"):
        swapped = both & looks_swapped(lon, lat)
        out_of_range = both & ~swapped & ((np.abs(lon) > 180) | (np.abs(lat) > 90))
    for i in np.flatnonzero(swapped).tolist():
        ck.fail(
            [i],
            "lat",
            f"经度/lon {lon[i]:g} and 纬度/lat {lat[i]:g} look swapped; "
            "put the longitude (73–135 in China) in 经度/lon",
        )
    if out_of_range.any():
        ck.fail(
            np.flatnonzero(out_of_range),
            "lon",
            "经度/lon must be within ±180 and 纬度/lat within ±90 degrees",
        )
    ok = both & ~swapped & ~out_of_range
    wlon, wlat = lon.copy(), lat.copy()
    if ok.any():
        idx = np.flatnonzero(ok)
        systems_of = crs if isinstance(crs, str) else crs[idx]
        if not (isinstance(systems_of, str) and systems_of == "wgs84"):
            wlon[idx], wlat[idx] = to_wgs84(lon[idx], lat[idx], systems_of)
        outside = ok & ~in_china_bbox(wlon, wlat)
        if outside.any():
            ck.fail(
                np.flatnonzero(outside),
                "lon",
                "the point is outside China (经度 73.4–135.1, 纬度 17.9–53.6); check the "
                "coordinates and their 坐标系/crs",
            )
    return wlon, wlat


def _ranges(cols: Mapping[str, Sequence[Any]], ck: _Checker) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {}
    for name, (lo, hi, lo_incl, unit) in _RANGES.items():
        if name not in cols:
            out[name] = [None] * ck.n
            continue
        arr = _floats(cols[name], name, ck)
        with np.errstate(invalid="ignore"):
            below = arr < lo if lo_incl else arr <= lo
            bad = below | (arr > hi)
        if bad.any():
            lo_s = "[" if lo_incl else "("
            ck.fail(
                np.flatnonzero(bad), name, f"{_label(name)} must be in {lo_s}{lo:g}, {hi:g}] {unit}"
            )
        if name == "azimuth":
            arr = np.where(arr == 360.0, 0.0, arr)
        out[name] = _nullable(arr)
    return out


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.M)


def _dates(values: Sequence[Any] | None, ck: _Checker) -> list[dt.date | None]:
    out: list[dt.date | None] = [None] * ck.n
    if values is None:
        return out
    idx = [i for i, v in enumerate(values) if v is not None and v != ""]
    if not idx:
        return out
    picked = [values[i] for i in idx]
    if all(type(v) is str for v in picked) and _all_match(_ISO_DATE, picked):
        try:
            for i, v in zip(idx, picked, strict=True):
                out[i] = dt.date.fromisoformat(v)
            return out
        except ValueError:
            pass  # an impossible date such as 2023-02-30: find it below
    bad: list[int] = []
    for i in idx:
        v = values[i]
        if isinstance(v, dt.datetime):
            out[i] = v.date()
            continue
        if isinstance(v, dt.date):
            out[i] = v
            continue
        text = str(v).strip().split(" ")[0].split("T")[0].replace("/", "-").replace(".", "-")
        try:
            if "-" in text:
                y, m, d = (int(p) for p in text.split("-"))
                out[i] = dt.date(y, m, d)
            else:
                out[i] = dt.datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            bad.append(i)
    if bad:
        ck.fail(bad, "installed_at", "安装时间/installed_at must be a date like 2023-05-01")
    return out


_IPV4_LINES = re.compile(
    r"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$", re.M
)


def _ips(values: Sequence[Any] | None, ck: _Checker) -> list[str | None]:
    out = _texts(values, "ip", ck)
    present = [v for v in out if v is not None]
    if not present or _all_match(_IPV4_LINES, present):
        return out
    out = list(out)
    bad: list[int] = []
    for i, s in enumerate(out):
        if s is None or _IPV4.fullmatch(s):
            continue
        try:
            out[i] = str(ipaddress.ip_address(s))
        except ValueError:
            bad.append(i)
    if bad:
        ck.fail(bad, "ip", "IP地址/ip is not an IPv4 or IPv6 address")
    return out


_MAC_LINES = re.compile(r"^[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}$", re.M)


def _macs(values: Sequence[Any] | None, ck: _Checker) -> list[str | None]:
    out = list(_texts(values, "mac", ck))
    idx = [i for i, v in enumerate(out) if v is not None]
    if not idx:
        return out
    present = [out[i] for i in idx]
    if _all_match(_MAC_LINES, present):  # type: ignore[arg-type]
        normal = "\n".join(present).lower().replace("-", ":").split("\n")  # type: ignore[arg-type]
        for i, v in zip(idx, normal, strict=True):
            out[i] = v
        return out
    bad: list[int] = []
    for i in idx:
        low = out[i].lower()  # type: ignore[union-attr]
        if not _MAC.fullmatch(low):
            bad.append(i)
            continue
        hexes = low.replace(":", "").replace("-", "")
        out[i] = ":".join(hexes[k : k + 2] for k in range(0, 12, 2))
    if bad:
        ck.fail(bad, "mac", "MAC地址/mac must look like 44:19:b6:01:02:03")
    return out


# Without an '@' a URI carries no credentials: the common case skips the per-value parser.
_PLAIN_URI = re.compile(r"^(?:rtsps?|https?|rtmp)://[^@\s]+$", re.M | re.I)


def _streams(
    values: Sequence[Any] | None, name: str, ck: _Checker, creds: dict[int, list[str | None]]
) -> list[str | None]:
    """Check stream URIs and move any user:password@ in them into the sealed credentials.

    Credentials given in their own columns win over those inside a URI."""
    out = _texts(values, name, ck)
    present = [v for v in out if v is not None]
    if not present or _all_match(_PLAIN_URI, present):
        return out  # the usual case: well-formed URIs without userinfo
    out = list(out)
    bad: dict[str, list[int]] = {}
    for i, s in enumerate(out):
        if s is None:
            continue
        if "@" not in s and s.lower().startswith(_STREAM_SCHEMES):
            continue
        try:
            split = split_stream_uri(s)
        except StreamURIError as exc:
            bad.setdefault(str(exc), []).append(i)
            out[i] = None
            continue
        if split.has_credentials:
            pair = creds.setdefault(i, [None, None])
            if pair[0] is None:
                pair[0] = split.username
            if pair[1] is None:
                pair[1] = split.password
        out[i] = split.uri
    for message, rows in bad.items():
        ck.fail(rows, name, f"{_label(name)} {message}")
    return out


def validate_columns(
    cols: Mapping[str, Sequence[Any]],
    rows: NDArray[np.int64] | Sequence[int],
    *,
    box: CredentialBox,
    default_crs: str = "wgs84",
    scope: str | None = None,
) -> tuple[CameraBatch, list[FieldError]]:
    """Validate and type a batch. Bad rows are left out of the batch and listed in the errors."""
    rows_arr = np.asarray(rows, dtype=np.int64)
    n = len(rows_arr)
    ck = _Checker(n, rows_arr)
    try:
        default = normalise_crs(default_crs)
    except UnknownCRS as exc:
        raise ValueError(str(exc)) from None
    none: list[Any] = [None] * n
    out: dict[str, list[Any]] = {}
    out["gb_id"] = _gb_ids(cols["gb_id"], ck) if "gb_id" in cols else none
    out["region_code"] = _region_codes(cols.get("region_code"), out["gb_id"], ck, scope)
    names = _texts(cols.get("name", none), "name", ck)
    missing_name = [i for i, s in enumerate(names) if s is None]
    if missing_name:
        ck.fail(missing_name, "name", "点位名称/name is required")
    out["name"] = names
    out["level"] = _levels(cols.get("level"), ck)
    lon, lat = _coordinates(cols, out["level"], default, ck)
    out["lon"], out["lat"] = _nullable(lon), _nullable(lat)
    out.update(_ranges(cols, ck))
    level_one_without_days: list[int] = []
    out["record_days"] = _ints(cols.get("record_days", none), "record_days", ck)
    for i, (lv, days) in enumerate(zip(out["level"], out["record_days"], strict=True)):
        if lv == 1 and days is None:
            level_one_without_days.append(i)
    if level_one_without_days:
        ck.fail(
            level_one_without_days,
            "record_days",
            "一类 points must state 录像保存天数/record_days (GB/T 28181)",
        )
    out["onvif_port"] = _ints(cols.get("onvif_port", none), "onvif_port", ck)
    out["installed_at"] = _dates(cols.get("installed_at", none), ck)
    out["ip"] = _ips(cols.get("ip", none), ck)
    out["mac"] = _macs(cols.get("mac", none), ck)
    for name in ("address", "owner", "contact", "vendor", "model", "firmware", "serial"):
        out[name] = _texts(cols.get(name, none), name, ck)
    creds: dict[int, list[str | None]] = {}
    if "username" in cols or "password" in cols:
        users = _texts(cols.get("username"), "username", ck)
        passwords = cols.get("password", none)
        for i, (u, p) in enumerate(zip(users, passwords, strict=True)):
            p = None if p is None or p == "" else str(p)
            if u is not None or p is not None:
                creds[i] = [u, p]
    for name in ("stream_main", "stream_sub", "snapshot"):
        out[name] = _streams(cols.get(name), name, ck, creds)
    sealed: list[bytes | None] = [None] * n
    macs: list[bytes | None] = [None] * n
    cache: dict[tuple[str | None, str | None], tuple[bytes, bytes] | None] = {}
    for i, (u, p) in creds.items():
        key = (u, p)
        if key not in cache:  # one seal per distinct pair: equal pairs already share a MAC
            cache[key] = box.seal(u, p)
        pair = cache[key]
        if pair is not None:
            sealed[i], macs[i] = pair
    out["credentials"], out["credentials_mac"] = sealed, macs

    good = np.flatnonzero(~ck.bad)
    if len(good) < n:
        keep = good.tolist()
        out = {k: [v[i] for i in keep] for k, v in out.items()}
    present = frozenset(cols)
    if "lon" in cols or "lat" in cols:
        present |= {"lon", "lat"}
    if "username" in cols or "password" in cols or creds:
        present |= {"credentials", "credentials_mac"}
    ck.errors.sort(key=lambda e: e[0])
    return CameraBatch(rows_arr[good], out, present), [e for _, e in ck.errors]
