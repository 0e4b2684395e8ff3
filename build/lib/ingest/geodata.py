"""Load a planner's geodata files: region boundaries, villages, road junctions, built-up areas.

Input is GeoJSON (a FeatureCollection), or CSV with lon/lat columns for villages and
junctions. Every feature is checked and every problem is reported with its index, as the file
numbers it (`features[i]`, 0-based, or the CSV line); one fatal problem and nothing is written.
What is only doubtful does not stop the load but is reported: boundaries that were invalid and
have been repaired (shapely's `make_valid`, accepted only when the repair keeps the area within
`repair_tolerance`), and points outside China or outside every loaded county (stored with
`region_code` NULL so a planner can find them).

Coordinates copied from 高德/腾讯 (GCJ-02) or 百度 (BD-09) are converted to WGS-84 with
`geo.crs`, vectorised over all vertices. Villages, junctions and built-up areas get their county
by one STRtree query of all points against the county boundaries already loaded. Parsing and
geometry run in a worker thread so the event loop stays free; the write replaces the data set
named `source` in one transaction and records the file's sha256 in `geo_datasets`.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import shapely
from numpy.typing import NDArray

from camera_registry.planning import geodata as gd
from camera_registry.planning.geodata import Builtup, Junctions, Kind, RegionRow, Villages
from geo.crs import CHINA_BBOX, in_china_bbox, looks_swapped, normalise_crs, to_wgs84
from geo.errors import UnknownCRS
from ingest.errors import IngestError

FloatArray = NDArray[np.float64]
ObjArray = NDArray[np.object_]
# (stage, fraction of that stage done); called from the worker thread too.
Progress = Callable[[str, float], None]

REPAIR_TOLERANCE = 0.01  # a repair may change a polygon's area by at most 1 %
MAX_PROBLEMS = 1000  # listed in an error; beyond this the file is not what --kind says
_POLYGONAL = ("Polygon", "MultiPolygon")
_LON_NAMES = ("lon", "lng", "longitude", "经度", "x")
_LAT_NAMES = ("lat", "latitude", "纬度", "y")
# Declared CRSs that are longitude/latitude on WGS-84 or CGCS2000 (the same within centimetres).
_LONLAT_CRS = ("CRS84", "EPSG:4326", "EPSG::4326", "EPSG:4490", "EPSG::4490")


@dataclass(frozen=True)
class Problem:
    """One problem with one feature; `index` is as the file numbers it (see `where`)."""

    index: int | None
    field: str
    message: str
    where: str = "feature"  # "feature" (0-based GeoJSON index) or "line" (CSV, 1-based)

    def __str__(self) -> str:
        at = f"{self.where} {self.index}: " if self.index is not None else ""
        return f"{at}{self.field}: {self.message}"


class GeodataError(IngestError):
    """The file was not loaded; `problems` lists every fatal problem with its feature index."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        shown = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{message}: {shown}{more}" if shown else message)
        self.reason = message


@dataclass(eq=False)
class Parsed:
    """A file's features, validated and in WGS-84, before they get their county."""

    kind: Kind
    checksum: str
    count: int = 0
    regions: list[RegionRow] = field(default_factory=list)
    lon: FloatArray = field(default_factory=lambda: np.zeros(0))
    lat: FloatArray = field(default_factory=lambda: np.zeros(0))
    index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    name: list[str | None] = field(default_factory=list)
    population: FloatArray = field(default_factory=lambda: np.zeros(0))
    outline: list[shapely.Geometry | None] = field(default_factory=list)
    junction_kind: list[str] = field(default_factory=list)
    weight: FloatArray = field(default_factory=lambda: np.zeros(0))
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    where: str = "feature"
    repaired: int = 0  # invalid polygons repaired (each also a warning)


@dataclass
class GeodataReport:
    kind: Kind
    source: str
    features: int
    checksum: str
    warnings: list[Problem]
    outside_regions: int = 0
    repaired: int = 0

    def summary(self) -> str:
        extra = []
        if self.repaired:
            extra.append(f"{self.repaired} repaired")
        if self.outside_regions:
            extra.append(f"{self.outside_regions} outside every loaded county")
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"loaded {self.features} {self.kind} as data set {self.source!r}{tail}"


# -- small value checks --------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    """A finite number from JSON or CSV text; None when blank; NaN when not a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


class _Collector:
    def __init__(self, where: str) -> None:
        self.where = where
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, index: int, fld: str, message: str) -> None:
        if len(self.errors) < MAX_PROBLEMS:
            self.errors.append(Problem(index, fld, message, self.where))

    def warn(self, index: int, fld: str, message: str) -> None:
        if len(self.warnings) < MAX_PROBLEMS:
            self.warnings.append(Problem(index, fld, message, self.where))


def _population(c: _Collector, i: int, value: Any) -> float:
    n = _number(value)
    if n is None:
        return math.nan
    if n != n or n < 0 or n != int(n):
        c.error(i, "population", f"must be a whole number >= 0, not {value!r}")
        return math.nan
    return n


def _weight(c: _Collector, i: int, value: Any) -> float:
    w = _number(value)
    if w is None:
        return math.nan
    if w != w or w < 0:
        c.error(i, "weight", f"must be a number >= 0, not {value!r}")
        return math.nan
    return w


def _junction_kind(c: _Collector, i: int, value: Any) -> str:
    text = _text(value)
    if text is None:
        return "junction"
    if text not in ("junction", "trunk"):
        c.error(i, "kind", f"must be junction or trunk (a checkpoint), not {text!r}")
    return text


# -- GeoJSON -------------------------------------------------------------------------------------
def _features(data: bytes, filename: str) -> list[Any]:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise GeodataError(
            f"{filename} is not UTF-8 text ({exc.reason}); save it as UTF-8"
        ) from exc
    except json.JSONDecodeError as exc:
        raise GeodataError(
            f"{filename} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise GeodataError(
            f"{filename} must be a GeoJSON FeatureCollection "
            f"(found {type(doc).__name__ if not isinstance(doc, dict) else doc.get('type')!r})"
        )
    declared = doc.get("crs")
    if isinstance(declared, dict):  # GeoJSON 2008's crs member; RFC 7946 files have none
        name = str((declared.get("properties") or {}).get("name", ""))
        if not any(ok in name.upper() for ok in _LONLAT_CRS):
            raise GeodataError(
                f"{filename} declares coordinate system {name!r}; give WGS-84/CGCS2000 "
                "longitude/latitude (or GCJ-02/BD-09 with --crs), e.g. export as EPSG:4326"
            )
    features = doc.get("features")
    if not isinstance(features, list):
        raise GeodataError(f"{filename}: 'features' must be a list")
    return features


def _to_wgs84_coords(crs: str) -> Callable[[FloatArray], FloatArray]:
    def apply(coords: FloatArray) -> FloatArray:
        lon, lat = to_wgs84(coords[:, 0], coords[:, 1], crs)
        return np.column_stack([lon, lat])

    return apply


def _shape(c: _Collector, i: int, geom: Any, allowed: tuple[str, ...]) -> shapely.Geometry | None:
    if not isinstance(geom, dict) or geom.get("type") not in allowed:
        got = geom.get("type") if isinstance(geom, dict) else geom
        c.error(i, "geometry", f"must be {' or '.join(allowed)}, not {got!r}")
        return None
    try:
        shp = shapely.from_geojson(json.dumps(geom))
    except (shapely.errors.GEOSException, ValueError, TypeError) as exc:
        c.error(i, "geometry", f"unreadable coordinates ({exc})")
        return None
    if shapely.is_empty(shp):
        c.error(i, "geometry", "is empty")
        return None
    return shp


def _point_xy(geom: Any) -> tuple[float, float] | None:
    """(lon, lat) of a well-formed GeoJSON Point, else None (the slow path reports why)."""
    if not isinstance(geom, dict) or geom.get("type") != "Point":
        return None
    xy = geom.get("coordinates")
    if (
        isinstance(xy, list)
        and len(xy) in (2, 3)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in xy)
    ):
        return float(xy[0]), float(xy[1])
    return None


def _check_coords(
    c: _Collector, index: NDArray[np.int64], lon: FloatArray, lat: FloatArray
) -> None:
    """Fatal: not numbers or not on Earth. Flagged: outside China (maybe swapped or projected)."""
    bad = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90))
    for i in index[bad].tolist():
        c.error(
            i, "coordinates", "must be WGS-84/GCJ-02/BD-09 degrees (lon -180..180, lat -90..90)"
        )
    ok = ~bad
    outside = ok & ~in_china_bbox(np.where(ok, lon, 0), np.where(ok, lat, 0))
    swapped = outside & looks_swapped(np.where(ok, lon, 0), np.where(ok, lat, 0))
    for i in index[swapped].tolist():
        c.warn(i, "coordinates", "outside China; longitude and latitude look swapped")
    for i in index[outside & ~swapped].tolist():
        c.warn(i, "coordinates", f"outside China's bounding box {CHINA_BBOX}")


def _repair(
    c: _Collector, index: Sequence[int], geoms: list[shapely.Geometry], tolerance: float
) -> tuple[list[shapely.Geometry | None], int]:
    """Repair invalid polygons when the repair keeps their area; else an error naming them.

    The signed area of a self-intersecting ring (shapely's `area` before repair) is what the
    drawer saw as the shape; a bow-tie whose lobes cancel changes by 100 % and is rejected, a
    small twist at one corner changes by a fraction of a percent and is repaired. Rejected
    polygons come back as None so later checks skip them instead of reporting them twice.
    """
    arr = np.asarray(geoms, dtype=object)
    if arr.size == 0:
        return [], 0
    invalid = ~shapely.is_valid(arr)
    repaired = 0
    out: list[shapely.Geometry | None] = list(arr)
    for k in np.flatnonzero(invalid).tolist():  # only the invalid few, each repaired alone
        before = float(shapely.area(arr[k]))
        reason = shapely.is_valid_reason(arr[k])
        parts = shapely.get_parts(shapely.make_valid(arr[k]))
        polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
        fixed = shapely.union_all(polys) if len(polys) else shapely.Polygon()
        after = float(shapely.area(fixed))
        change = abs(after - before) / after if after > 0 else math.inf
        if shapely.is_empty(fixed) or change > tolerance:
            c.error(
                index[k],
                "geometry",
                f"invalid polygon ({reason}) cannot be repaired without changing its area by "
                f"{'all of it' if change == math.inf else f'{change:.1%}'}; fix it in your GIS",
            )
            out[k] = None
        else:
            c.warn(index[k], "geometry", f"invalid polygon repaired ({reason})")
            out[k] = fixed
            repaired += 1
    return out, repaired


def _convert(geoms: list[Any], crs: str) -> list[shapely.Geometry]:
    """To WGS-84 lon/lat, flat: heights (a third coordinate) mean nothing to coverage."""
    if not geoms:
        return geoms
    arr = shapely.force_2d(np.asarray(geoms, dtype=object))
    if crs != "wgs84":
        arr = shapely.transform(arr, _to_wgs84_coords(crs))
    return list(arr)


def _tick(progress: Progress | None, stage: str, i: int, n: int) -> None:
    if progress is not None and n and (i % max(1, n // 50) == 0 or i == n - 1):
        progress(stage, (i + 1) / n)


def _parse_geojson(
    features: list[Any],
    kind: Kind,
    crs: str,
    tolerance: float,
    out: Parsed,
    progress: Progress | None,
) -> None:
    c = _Collector("feature")
    n = len(features)
    idx: list[int] = []
    geoms: list[shapely.Geometry | None] = []
    props_kept: list[dict[str, Any]] = []
    # Points are most of a big file: their coordinates are gathered here and turned into
    # geometries in one vectorised call instead of one GeoJSON parse each.
    point_at: list[int] = []
    point_xy: list[tuple[float, float]] = []
    allowed = {
        "regions": _POLYGONAL,
        "builtup": _POLYGONAL,
        "villages": ("Point", *_POLYGONAL),
        "junctions": ("Point",),
    }[kind]
    for i, feat in enumerate(features):
        _tick(progress, "reading features", i, n)
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            c.error(i, "type", "must be a GeoJSON Feature")
            continue
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            c.error(i, "properties", "must be an object")
            continue
        raw = feat.get("geometry")
        xy = _point_xy(raw) if "Point" in allowed else None
        if xy is not None:
            point_at.append(len(geoms))
            point_xy.append(xy)
            geom = None
        else:
            geom = _shape(c, i, raw, allowed)
            if geom is None:
                continue
        idx.append(i)
        geoms.append(geom)
        props_kept.append(props)
    if point_at:
        made = shapely.points(np.asarray(point_xy, dtype=np.float64))
        for k, g in zip(point_at, made.tolist(), strict=True):
            geoms[k] = g
    geoms = _convert(geoms, crs)
    index = np.asarray(idx, dtype=np.int64)

    if kind in ("regions", "builtup"):
        b = shapely.bounds(np.asarray(geoms, dtype=object)) if geoms else np.zeros((0, 4))
        x0, y0, x1, y1 = CHINA_BBOX
        far = (b[:, 0] < x0) | (b[:, 1] < y0) | (b[:, 2] > x1) | (b[:, 3] > y1)
        for k in np.flatnonzero(far).tolist():
            c.error(
                idx[k],
                "geometry",
                "extends outside China: give lon/lat degrees (WGS-84, or --crs gcj02/bd09), "
                "not projected metres, with longitude first",
            )
        near = np.flatnonzero(~far).tolist()
        idx, geoms, props_kept = (
            [idx[k] for k in near],
            [geoms[k] for k in near],
            [props_kept[k] for k in near],
        )
        if progress is not None:
            progress("checking polygons", 0.0)
        fixed, out.repaired = _repair(c, idx, geoms, tolerance)
        keep = [k for k, g in enumerate(fixed) if g is not None]
        idx = [idx[k] for k in keep]
        geoms = [fixed[k] for k in keep]
        props_kept = [props_kept[k] for k in keep]
        index = np.asarray(idx, dtype=np.int64)
        out.outline = list(geoms)
    if kind == "regions":
        _regions(c, idx, geoms, props_kept, out)
    elif kind == "builtup":
        pts = shapely.point_on_surface(np.asarray(geoms, dtype=object)) if geoms else []
        out.lon = np.asarray(shapely.get_x(pts), dtype=np.float64) if geoms else np.zeros(0)
        out.lat = np.asarray(shapely.get_y(pts), dtype=np.float64) if geoms else np.zeros(0)
        out.name = [_text(p.get("name")) for p in props_kept]
    else:
        _points(c, index, geoms, props_kept, kind, crs, tolerance, out)
    out.index = index
    out.errors, out.warnings = c.errors, c.warnings


def _regions(
    c: _Collector,
    idx: list[int],
    geoms: list[shapely.Geometry],
    props: list[dict[str, Any]],
    out: Parsed,
) -> None:
    seen: dict[str, int] = {}
    areas = gd.areas_km2(geoms) if geoms else np.zeros(0)
    for k, (i, geom, p) in enumerate(zip(idx, geoms, props, strict=True)):
        raw = p.get("adcode")
        code = str(raw).strip() if raw is not None else ""
        if not (len(code) == 6 and code.isdigit()):
            c.error(i, "adcode", f"must be a 6-digit GB/T 2260 code, not {raw!r}")
            continue
        if code in seen:
            c.error(i, "adcode", f"{code} appears twice (also feature {seen[code]})")
            continue
        seen[code] = i
        name = _text(p.get("name"))
        if name is None:
            c.error(i, "name", "is required (e.g. 小店区)")
            continue
        rank = _text(p.get("rank")) or gd.rank_of(code)
        if rank not in gd.RANKS:
            c.error(i, "rank", f"must be one of {', '.join(gd.RANKS)}, not {rank!r}")
            continue
        parent = p.get("parent")
        parent_code = str(parent).strip() if parent not in (None, "") else gd.parent_of(code)
        if parent_code is not None and not (len(parent_code) == 6 and parent_code.isdigit()):
            c.error(i, "parent", f"must be the enclosing region's 6-digit code, not {parent!r}")
            continue
        if not areas[k] > 0:
            c.error(i, "geometry", "has no area")
            continue
        out.regions.append(RegionRow(code, name, parent_code, rank, geom, float(areas[k])))


def _points(
    c: _Collector,
    index: NDArray[np.int64],
    geoms: list[shapely.Geometry],
    props: list[dict[str, Any]],
    kind: Kind,
    crs: str,
    tolerance: float,
    out: Parsed,
) -> None:
    arr = np.asarray(geoms, dtype=object)
    n = len(arr)
    polygonal = shapely.get_type_id(arr) >= 3 if n else np.zeros(0, dtype=bool)
    outlines: list[shapely.Geometry | None] = [None] * n
    if polygonal.any():
        pos = np.flatnonzero(polygonal)
        fixed, out.repaired = _repair(c, index[pos].tolist(), list(arr[pos]), tolerance)
        for k, g in zip(pos.tolist(), fixed, strict=True):
            # A rejected outline (the load will fail) still needs a point for the other checks.
            arr[k] = g if g is not None else shapely.centroid(arr[k])
            outlines[k] = g
    rep = shapely.point_on_surface(arr) if n else arr
    lon = np.asarray(shapely.get_x(rep), dtype=np.float64) if n else np.zeros(0)
    lat = np.asarray(shapely.get_y(rep), dtype=np.float64) if n else np.zeros(0)
    # A village's `entrance` (same CRS as the file) overrides its representative point.
    ent_k, ent_lon, ent_lat = [], [], []
    for k, p in enumerate(props):
        e = p.get("entrance") if kind == "villages" else None
        if e is None:
            continue
        if (
            isinstance(e, list)
            and len(e) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in e)
        ):
            ent_k.append(k)
            ent_lon.append(float(e[0]))
            ent_lat.append(float(e[1]))
        else:
            c.error(int(index[k]), "entrance", f"must be [lon, lat], not {e!r}")
    if ent_k:
        elon, elat = to_wgs84(np.asarray(ent_lon), np.asarray(ent_lat), crs)
        lon[ent_k], lat[ent_k] = elon, elat
    _fill_points(c, index, lon, lat, props, kind, out)
    out.outline = outlines


def _fill_points(
    c: _Collector,
    index: NDArray[np.int64],
    lon: FloatArray,
    lat: FloatArray,
    props: Sequence[dict[str, Any]],
    kind: Kind,
    out: Parsed,
) -> None:
    _check_coords(c, index, lon, lat)
    out.lon, out.lat = lon, lat
    out.name = [_text(p.get("name") or p.get("名称")) for p in props]
    if kind == "villages":
        out.population = np.asarray(
            [
                _population(c, int(i), p.get("population", p.get("人口")))
                for i, p in zip(index, props, strict=True)
            ],
            dtype=np.float64,
        )
    else:
        out.junction_kind = [
            _junction_kind(c, int(i), p.get("kind")) for i, p in zip(index, props, strict=True)
        ]
        out.weight = np.asarray(
            [_weight(c, int(i), p.get("weight")) for i, p in zip(index, props, strict=True)],
            dtype=np.float64,
        )


# -- CSV -----------------------------------------------------------------------------------------
def _parse_csv(data: bytes, kind: Kind, crs: str, filename: str, out: Parsed) -> None:
    if kind not in ("villages", "junctions"):
        raise GeodataError(f"{filename}: CSV holds points only; give {kind} as GeoJSON polygons")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise GeodataError(f"{filename} is neither UTF-8 nor GB18030 text")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
    lon_col = next((header[h] for h in _LON_NAMES if h in header), None)
    lat_col = next((header[h] for h in _LAT_NAMES if h in header), None)
    if lon_col is None or lat_col is None:
        raise GeodataError(
            f"{filename}: needs lon and lat columns (or 经度/纬度); found {reader.fieldnames}"
        )
    c = _Collector("line")
    rows = list(reader)
    props = [{k.strip().lower(): v for k, v in r.items() if k is not None} for r in rows]
    index = np.arange(2, len(rows) + 2, dtype=np.int64)  # line 1 is the header
    lon = np.asarray([_number(r[lon_col]) for r in rows], dtype=np.float64)
    lat = np.asarray([_number(r[lat_col]) for r in rows], dtype=np.float64)
    missing = np.isnan(lon) | np.isnan(lat)
    for i in index[missing].tolist():
        c.error(i, "lon/lat", "must both be numbers")
    if crs != "wgs84" and len(lon):
        lon, lat = to_wgs84(lon, lat, crs)
    _fill_points(
        c,
        index[~missing],
        lon[~missing],
        lat[~missing],
        [p for p, m in zip(props, missing, strict=True) if not m],
        kind,
        out,
    )
    out.index = index[~missing]
    out.outline = [None] * len(out.index)
    out.errors, out.warnings = c.errors, c.warnings
    out.where = "line"


def parse_geodata(
    data: bytes,
    kind: str,
    *,
    crs: str = "wgs84",
    filename: str = "input",
    repair_tolerance: float = REPAIR_TOLERANCE,
    progress: Progress | None = None,
) -> Parsed:
    """Validate a whole file (CPU only; run it in a thread). Problems are in the result."""
    if kind not in gd.KINDS:
        raise GeodataError(f"kind must be one of {', '.join(gd.KINDS)}, not {kind!r}")
    try:
        crs = normalise_crs(crs)
    except UnknownCRS as exc:
        raise GeodataError(str(exc)) from exc
    out = Parsed(kind=kind, checksum=hashlib.sha256(data).hexdigest())
    head = data.lstrip()[:4].removeprefix(b"\xef\xbb\xbf").lstrip()
    if filename.lower().endswith((".csv", ".txt")) or not head.startswith(b"{"):
        _parse_csv(data, out.kind, crs, filename, out)
        out.count = len(out.index)
    else:
        features = _features(data, filename)
        _parse_geojson(features, out.kind, crs, repair_tolerance, out, progress)
        out.count = len(out.regions) if kind == "regions" else len(out.index)
    return out


def assign_regions(lon: FloatArray, lat: FloatArray, counties: Sequence[RegionRow]) -> ObjArray:
    """The county adcode holding each point (None outside all), by one STRtree query.

    A point on a shared border belongs to the county with the smaller adcode, so the answer
    does not depend on the order boundaries were loaded in.
    """
    out = np.full(len(lon), None, dtype=object)
    if not len(lon) or not counties:
        return out
    ordered = sorted(counties, key=lambda r: r.adcode)
    polys = np.asarray([r.boundary for r in ordered], dtype=object)
    codes = np.asarray([r.adcode for r in ordered], dtype=object)
    tree = shapely.STRtree(polys)
    pt_idx, poly_idx = tree.query(shapely.points(lon, lat), predicate="intersects")
    # Keep the first (smallest adcode) polygon per point: sort by point, then polygon.
    order = np.lexsort((poly_idx, pt_idx))
    pt_idx, poly_idx = pt_idx[order], poly_idx[order]
    first = np.ones(len(pt_idx), dtype=bool)
    first[1:] = pt_idx[1:] != pt_idx[:-1]
    out[pt_idx[first]] = codes[poly_idx[first]]
    return out


# -- the whole load ------------------------------------------------------------------------------
async def load_geodata(
    pool: asyncpg.Pool,
    path: Path,
    kind: str,
    *,
    crs: str = "wgs84",
    source: str | None = None,
    repair_tolerance: float = REPAIR_TOLERANCE,
    progress: Progress | None = None,
) -> GeodataReport:
    """Validate `path` and replace the data set `source` (default: the file name) with it.

    Raises `GeodataError` listing every fatal problem; then nothing is written.
    """
    name = source or path.name
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise GeodataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    parsed = await asyncio.to_thread(
        parse_geodata,
        data,
        kind,
        crs=crs,
        filename=path.name,
        repair_tolerance=repair_tolerance,
        progress=progress,
    )
    if parsed.errors:
        raise GeodataError(
            f"{path.name}: {len(parsed.errors)} problem(s); nothing was loaded", parsed.errors
        )
    report = GeodataReport(
        parsed.kind, name, parsed.count, parsed.checksum, list(parsed.warnings), 0, parsed.repaired
    )
    async with pool.acquire() as conn, conn.transaction():
        if parsed.kind == "regions":
            await gd.replace_regions(conn, name, parsed.regions, parsed.checksum)
            return report
        counties = await gd.regions(conn, rank="county")
        if progress is not None:
            progress("assigning counties", 0.0)
        region = await asyncio.to_thread(assign_regions, parsed.lon, parsed.lat, counties)
        outside = np.flatnonzero(np.equal(region, np.array(None, dtype=object)))
        report.outside_regions = len(outside)
        if len(outside) and counties:
            for i in parsed.index[outside][:MAX_PROBLEMS].tolist():
                report.warnings.append(
                    Problem(
                        i,
                        "coordinates",
                        "outside every loaded county (region_code left empty)",
                        parsed.where,
                    )
                )
        elif len(outside):
            report.warnings.append(
                Problem(
                    None,
                    "region_code",
                    "no county boundaries are loaded; load --kind regions first so points "
                    "get their county",
                )
            )
        if progress is not None:
            progress("writing", 0.0)
        await _write_points(conn, parsed, region, name)
    return report


async def _write_points(
    conn: asyncpg.Connection, parsed: Parsed, region: ObjArray, name: str
) -> None:
    if parsed.kind == "villages":
        wkb = [None if g is None else shapely.to_wkb(g) for g in parsed.outline]
        v = Villages.build(parsed.lon, parsed.lat, region, parsed.name, parsed.population, wkb)
        await gd.replace_villages(conn, name, v, parsed.checksum)
    elif parsed.kind == "junctions":
        j = Junctions.build(
            parsed.lon, parsed.lat, region, parsed.junction_kind, parsed.weight, parsed.name
        )
        await gd.replace_junctions(conn, name, j, parsed.checksum)
    else:
        b = Builtup(
            outline=np.asarray([*parsed.outline, None], dtype=object)[:-1],
            region_code=region,
            name=np.asarray([*parsed.name, None], dtype=object)[:-1],
            id=np.zeros(len(region), dtype=np.int64),
        )
        await gd.replace_builtup(conn, name, b, parsed.checksum)
