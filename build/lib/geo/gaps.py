"""Blind spots as polygons a planner can act on.

Thousands of uncovered 100 m cells are unreadable on a map; merged into connected
patches and ranked, they become a short worklist ("the 0.8 km² block east of the
station first").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from geo.errors import GeoError

__all__ = ["Gap", "merge_uncovered_cells"]

FloatArray = NDArray[np.float64]


class Gap(NamedTuple):
    """One connected uncovered patch.

    ``weight`` is the summed cell weight (e.g. residents) and ``priority`` is
    weight density × area, i.e. Σ cell weight × cell area; without weights every
    cell weighs 1 and priority equals the area.
    """

    polygon: shapely.Geometry
    area_m2: float
    n_cells: int
    weight: float
    priority: float


def merge_uncovered_cells(
    cx: ArrayLike,
    cy: ArrayLike,
    covered_mask: ArrayLike,
    cell_m: float,
    weight: ArrayLike | None = None,
) -> list[Gap]:
    """Union uncovered cells into polygons, highest priority first.

    Cells are snapped to a common lattice, merged into horizontal runs (a 100x
    reduction on a mostly-blind rural grid) and the runs unioned; the parts of that
    union are the gaps. Cells touching only at a corner normally end up in separate
    gaps: one camera rarely sees across such a diagonal. Each run is then attributed
    to its part through one interior point, so cell counts and weights add up
    exactly to the uncovered cells. Order: priority, then area, descending, then
    lowest-left corner, so reruns list gaps identically.
    """
    x = np.atleast_1d(np.asarray(cx, dtype=np.float64))
    y = np.atleast_1d(np.asarray(cy, dtype=np.float64))
    covered = np.atleast_1d(np.asarray(covered_mask, dtype=np.bool_))
    if not (x.shape == y.shape == covered.shape) or x.ndim != 1:
        raise GeoError(
            f"cell arrays must be 1-D and equal length, got {x.shape}, {y.shape}, {covered.shape}"
        )
    if not cell_m > 0:
        raise GeoError(f"cell size must be positive metres, got {cell_m}")
    w = np.ones(x.shape[0]) if weight is None else np.asarray(weight, dtype=np.float64)
    if w.shape != x.shape:
        raise GeoError(f"weight has shape {w.shape} but there are {x.shape[0]} cells")
    if not bool(np.all(np.isfinite(w) & (w >= 0))):
        raise GeoError("cell weights must be finite and non-negative")

    open_ = np.flatnonzero(~covered)
    if open_.size == 0:
        return []
    if not bool(np.all(np.isfinite(x[open_]) & np.isfinite(y[open_]))):
        raise GeoError("uncovered cells include NaN coordinates; drop them first")
    half = cell_m / 2.0
    ox = float(x[open_].min()) - half
    oy = float(y[open_].min()) - half
    ix = np.rint((x[open_] - half - ox) / cell_m).astype(np.int64)
    iy = np.rint((y[open_] - half - oy) / cell_m).astype(np.int64)
    order = np.lexsort((ix, iy))
    ix, iy, cells = ix[order], iy[order], open_[order]
    new_run = np.r_[True, (ix[1:] != ix[:-1] + 1) | (iy[1:] != iy[:-1])]
    run_of_cell = np.cumsum(new_run) - 1
    first = np.flatnonzero(new_run)
    last = np.r_[first[1:], ix.size] - 1
    runs = shapely.box(
        ox + ix[first] * cell_m,
        oy + iy[first] * cell_m,
        ox + (ix[last] + 1) * cell_m,
        oy + (iy[first] + 1) * cell_m,
    )
    parts = np.asarray(shapely.get_parts(shapely.union_all(runs)), dtype=object)

    # Attribute each run to the part containing its first cell's centre (strictly inside).
    shapely.prepare(parts)
    rx = ox + (ix[first] + 0.5) * cell_m
    ry = oy + (iy[first] + 0.5) * cell_m
    run_i, part_i = shapely.STRtree(parts).query(shapely.points(rx, ry))
    inside = shapely.contains_xy(parts[part_i], rx[run_i], ry[run_i])
    part_of_run = np.full(first.size, -1, dtype=np.int64)
    part_of_run[run_i[inside]] = part_i[inside]
    if bool((part_of_run < 0).any()):
        raise GeoError("cell lattice is inconsistent; are cx, cy centres of one regular grid?")
    part_of_cell = part_of_run[run_of_cell]
    n_cells = np.bincount(part_of_cell, minlength=parts.size)
    part_w = np.bincount(part_of_cell, weights=w[cells], minlength=parts.size)
    area = np.asarray(shapely.area(parts), dtype=np.float64)
    priority = part_w * cell_m * cell_m
    bounds = shapely.bounds(parts)
    rank = np.lexsort((bounds[:, 1], bounds[:, 0], -area, -priority))
    return [
        Gap(parts[i], float(area[i]), int(n_cells[i]), float(part_w[i]), float(priority[i]))
        for i in rank.tolist()  # building the result list, not a geometric loop
    ]
