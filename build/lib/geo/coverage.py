"""Coverage of zones by camera footprints (DESIGN.md §2 "Layout policy").

Urban zones are measured on a grid of cells (a cell is covered when a footprint
reaches its centre); rural zones by villages and junctions (a point is covered when
a footprint reaches it). All geometry is in projected metres.

Candidate (point, camera) pairs come from a KD-tree over a strip of points, queried
with every nearby camera's own radius (``query_ball_point`` with an array of radii);
the ragged hit lists are flattened in C and the exact sector test runs on the flat
pairs. Measured on 2.4 M points x 100 k cameras (bench/bench_coverage.py), this beat
a dual-tree ``sparse_distance_matrix`` join over radius bands by more than 2x: one radius
per camera yields a third fewer candidates, and an unbalanced tree builds faster.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from geo.errors import GeoError, InvalidZone
from geo.footprint import Footprints, covers

__all__ = [
    "ZoneSummary",
    "coverage_counts",
    "covered_mask",
    "grid_cells",
    "summarise_zone",
    "validate_zone",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.intp]

ZoneKind = Literal["urban", "rural"]

# Cells per grid build; bounds a zone's bounding-box grid to ~80 MB of float64 pairs.
_MAX_GRID_CELLS: Final = 5_000_000


def validate_zone(zone_polygon_xy: shapely.Geometry) -> shapely.Geometry:
    """Refuse invalid zone polygons instead of repairing them.

    A bow-tie district boundary is a digitising error; ``make_valid`` would turn it
    into two triangles and we would then report coverage of an area nobody drew.
    Raising makes the planner fix the source polygon, and the message says where.
    """
    if zone_polygon_xy is None:
        raise InvalidZone("zone polygon is missing")
    if not isinstance(zone_polygon_xy, shapely.Geometry):
        raise InvalidZone(f"zone must be a shapely geometry, got {type(zone_polygon_xy).__name__}")
    if shapely.is_empty(zone_polygon_xy):
        return zone_polygon_xy
    kind = shapely.get_type_id(zone_polygon_xy)
    if kind not in (3, 6):  # Polygon, MultiPolygon
        raise InvalidZone(
            f"zone must be a Polygon or MultiPolygon, got {zone_polygon_xy.geom_type}"
        )
    if not shapely.is_valid(zone_polygon_xy):
        reason = shapely.is_valid_reason(zone_polygon_xy)
        raise InvalidZone(
            f"zone polygon is invalid ({reason}); fix the boundary (e.g. a self-intersecting "
            "ring) in the source data, or repair it deliberately with shapely.make_valid"
        )
    return zone_polygon_xy


def grid_cells(
    zone_polygon_xy: shapely.Geometry, cell_m: float = 100.0
) -> tuple[FloatArray, FloatArray]:
    """Centres of the grid cells whose centre lies in the zone.

    The grid is anchored at multiples of ``cell_m`` rather than at the zone's corner,
    so neighbouring zones share one grid and their gap polygons line up.
    """
    if not cell_m > 0:
        raise InvalidZone(f"cell size must be positive metres, got {cell_m}")
    zone = validate_zone(zone_polygon_xy)
    empty = np.zeros(0, dtype=np.float64)
    if shapely.is_empty(zone):
        return empty, empty.copy()
    min_x, min_y, max_x, max_y = shapely.bounds(zone)
    x0 = np.floor(min_x / cell_m) * cell_m
    y0 = np.floor(min_y / cell_m) * cell_m
    nx = int(np.ceil((max_x - x0) / cell_m))
    ny = int(np.ceil((max_y - y0) / cell_m))
    if nx * ny > _MAX_GRID_CELLS * 20:
        raise InvalidZone(
            f"zone needs a {nx}x{ny} grid at {cell_m} m cells; use larger cells "
            "or check that the polygon is in projected metres, not degrees"
        )
    xs = x0 + (np.arange(nx) + 0.5) * cell_m
    ys = y0 + (np.arange(ny) + 0.5) * cell_m
    shapely.prepare(zone)
    out_x: list[FloatArray] = []
    out_y: list[FloatArray] = []
    rows_per_block = max(1, _MAX_GRID_CELLS // max(nx, 1))
    # Loop over row blocks (a few at most) to bound memory for very large zones.
    for start in range(0, ny, rows_per_block):
        gx, gy = np.meshgrid(xs, ys[start : start + rows_per_block])
        gx = gx.ravel()
        gy = gy.ravel()
        inside = shapely.contains_xy(zone, gx, gy)
        out_x.append(gx[inside])
        out_y.append(gy[inside])
    return np.concatenate(out_x), np.concatenate(out_y)


def _covering_pairs(
    fp: Footprints, px: FloatArray, py: FloatArray, chunk: int
) -> Iterator[tuple[IntArray, IntArray]]:
    """Yield (point index, camera index) for every footprint that covers a point, chunked.

    Points are processed in strips of ``chunk`` (sorted by y unless they already are,
    as grid cells are), so a strip's KD-tree and candidate pairs stay bounded. Only
    cameras whose disc reaches the strip's bounding box are queried, each with its own
    radius, so a few long-range cameras do not widen everyone's search.
    """
    n_pts = px.shape[0]
    if n_pts == 0 or len(fp) == 0:
        return
    if chunk < 1:
        raise GeoError(f"chunk must be positive, got {chunk}")
    finite = np.isfinite(px) & np.isfinite(py)
    if bool(np.all(finite)) and bool(np.all(py[1:] >= py[:-1])):
        order: IntArray | None = None
        sx, sy = px, py
    else:
        keep = np.flatnonzero(finite)  # NaN points are never covered
        order = keep[np.argsort(py[keep], kind="stable")]
        sx, sy = px[order], py[order]
    cam_r = fp.radius_m
    for start in range(0, sx.shape[0], chunk):  # bounded memory: one strip of pairs at a time
        stop = min(start + chunk, sx.shape[0])
        bx, by = sx[start:stop], sy[start:stop]
        cams = np.flatnonzero(
            (fp.x + cam_r >= bx.min())
            & (fp.x - cam_r <= bx.max())
            & (fp.y + cam_r >= by[0])  # strips are sorted by y
            & (fp.y - cam_r <= by[-1])
            & (cam_r > 0)
        )
        if cams.size == 0:
            continue
        # Unbalanced trees build ~2.5x faster and query as fast on near-uniform points.
        tree = cKDTree(np.column_stack([bx, by]), balanced_tree=False, compact_nodes=False)
        hits = tree.query_ball_point(
            np.column_stack([fp.x[cams], fp.y[cams]]), r=cam_r[cams], return_sorted=False
        )
        lens = np.fromiter(map(len, hits), dtype=np.intp, count=hits.shape[0])
        total = int(lens.sum())
        if total == 0:
            continue
        # Flatten the ragged per-camera lists in C; no Python-level loop over cameras.
        local = np.fromiter(itertools.chain.from_iterable(hits), dtype=np.intp, count=total)
        ci = np.repeat(cams, lens)
        ok = covers(fp, ci, bx[local], by[local])
        pi = local[ok] + start
        yield (pi if order is None else order[pi]), ci[ok]


def _points(px: ArrayLike, py: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.atleast_1d(np.asarray(px, dtype=np.float64))
    y = np.atleast_1d(np.asarray(py, dtype=np.float64))
    if x.shape != y.shape or x.ndim != 1:
        raise GeoError(f"px and py must be 1-D and equal length, got {x.shape} and {y.shape}")
    return x, y


def covered_mask(
    fp: Footprints, px: ArrayLike, py: ArrayLike, *, chunk: int = 200_000
) -> BoolArray:
    """Whether any footprint reaches each point; NaN points are never covered."""
    x, y = _points(px, py)
    out = np.zeros(x.shape[0], dtype=np.bool_)
    for pi, _ in _covering_pairs(fp, x, y, chunk):
        out[pi] = True
    return out


def coverage_counts(
    fp: Footprints, px: ArrayLike, py: ArrayLike, *, chunk: int = 200_000
) -> NDArray[np.int64]:
    """How many footprints reach each point.

    Redundancy tells planners where cameras could be moved rather than added, and
    it is what a proposal needs when an existing camera may be retired.
    """
    x, y = _points(px, py)
    out = np.zeros(x.shape[0], dtype=np.int64)
    for pi, _ in _covering_pairs(fp, x, y, chunk):
        out += np.bincount(pi, minlength=x.shape[0])
    return out


@dataclass(frozen=True)
class ZoneSummary:
    """One zone's line in the coverage report.

    Shares and densities are None when undefined (a zone with no cells, villages or
    area), so an empty zone reads as "not measured" rather than "0 % covered".
    """

    zone_id: str
    kind: ZoneKind
    cells_total: int
    cells_covered: int
    covered_share: float | None
    area_km2: float
    cameras: int
    cameras_per_km2: float | None
    villages_total: int
    villages_covered: int
    junctions_total: int
    junctions_covered: int

    @property
    def village_share(self) -> float | None:
        """The rural coverage rate of DESIGN.md's layout policy."""
        return self.villages_covered / self.villages_total if self.villages_total else None


def summarise_zone(
    zone_id: str,
    kind: ZoneKind,
    zone_polygon_xy: shapely.Geometry,
    fp: Footprints,
    *,
    cell_m: float = 100.0,
    villages_xy: tuple[ArrayLike, ArrayLike] | None = None,
    junctions_xy: tuple[ArrayLike, ArrayLike] | None = None,
) -> ZoneSummary:
    """Measure one zone against all footprints (cameras outside the zone still count).

    Footprints are not clipped to the zone: a camera across the road from the
    boundary still watches it. ``cameras`` counts only cameras standing inside,
    which is what the density target means. Villages and junctions are points
    (a village's entrance); callers pass polygon villages as their entrance or
    centroid.
    """
    if kind not in ("urban", "rural"):
        raise InvalidZone(f"zone kind must be 'urban' or 'rural', got {kind!r}")
    zone = validate_zone(zone_polygon_xy)
    cx, cy = grid_cells(zone, cell_m)
    cells_cov = int(np.count_nonzero(covered_mask(fp, cx, cy)))
    area_km2 = 0.0 if shapely.is_empty(zone) else float(shapely.area(zone)) / 1e6
    if len(fp) and not shapely.is_empty(zone):
        shapely.prepare(zone)
        n_cams = int(np.count_nonzero(shapely.contains_xy(zone, fp.x, fp.y)))
    else:
        n_cams = 0

    def count(points: tuple[ArrayLike, ArrayLike] | None) -> tuple[int, int]:
        if points is None:
            return 0, 0
        mask = covered_mask(fp, points[0], points[1])
        return int(mask.shape[0]), int(np.count_nonzero(mask))

    v_total, v_cov = count(villages_xy)
    j_total, j_cov = count(junctions_xy)
    return ZoneSummary(
        zone_id=zone_id,
        kind=kind,
        cells_total=int(cx.shape[0]),
        cells_covered=cells_cov,
        covered_share=cells_cov / cx.shape[0] if cx.shape[0] else None,
        area_km2=area_km2,
        cameras=n_cams,
        cameras_per_km2=n_cams / area_km2 if area_km2 > 0 else None,
        villages_total=v_total,
        villages_covered=v_cov,
        junctions_total=j_total,
        junctions_covered=j_cov,
    )
