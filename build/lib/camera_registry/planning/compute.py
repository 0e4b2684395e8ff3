"""The CPU side of a coverage run: one county's arrays in, its measurements out.

These functions run in worker processes (``ProcessPoolExecutor``), so everything they take
and return is plain data (numpy arrays, WKB, strings) that pickles cheaply, and nothing here
touches the database or the event loop. Geometry itself is :mod:`geo`'s; this module only
composes it in the order a run needs: project, footprints, urban grid, covered masks, merged
gaps, and the demand and candidate sites the proposals need later.

Every county of a run is projected with the *same* equal-area plane (centred on the run's
region), so grid cells of neighbouring counties line up and proposals can be chosen across
county borders; across a province the distance error of one LAEA plane stays below 0.1 %.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.coverage import covered_mask, grid_cells
from geo.footprint import Footprints, footprints
from geo.gaps import merge_uncovered_cells
from geo.project import LocalProjection
from geo.propose import greedy_sites

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Zone = Literal["urban", "rural"]

# Demand kinds, as codes in the proposal arrays (the order is the API's kind names).
CELL: Final = 0
VILLAGE: Final = 1
JUNCTION: Final = 2
KIND_NAMES: Final = ("cell", "village", "junction")
_COORD_DIGITS: Final = 7  # ~1 cm: output GeoJSON stays small and reruns compare equal


@dataclass(frozen=True)
class CoverageParams:
    """What a run needs of the layout policy, as plain numbers (the policy model may grow).

    Built from the validated policy in :mod:`camera_registry.coverage_policy`; it is also what
    the worker processes receive, so it must stay picklable and small.
    """

    cell_m: float = 100.0
    village_entrance_m: float = 150.0
    default_radius_by_level: Mapping[int, float] = field(
        default_factory=lambda: {1: 100.0, 2: 80.0, 3: 50.0, 9: 50.0}
    )
    proposal_radius_m: float = 38.4
    cell_weight: float = 10.0
    village_weight: float = 100.0
    use_population: bool = True
    junction_weight: float = 50.0
    trunk_junction_weight: float = 150.0
    # The policy's drawn zone overrides (WGS-84 WKB): urban areas inside rural counties are
    # gridded, rural areas inside urban counties are not.
    urban_polygons_wkb: bytes | None = None
    rural_polygons_wkb: bytes | None = None

    @property
    def max_default_radius_m(self) -> float:
        return max(self.default_radius_by_level.values(), default=0.0)


@dataclass(frozen=True)
class CountyInput:
    """One county's inputs, read by the runner and shipped to a worker process."""

    adcode: str
    name: str
    zone: Zone
    boundary_wkb: bytes  # WGS-84 (Multi)Polygon
    builtup_wkb: tuple[bytes, ...]  # WGS-84 polygons near the county (rural zones' urban parts)
    centre: tuple[float, float]  # the run's projection centre (lon, lat)
    cameras: FloatArray  # (n, 7): lon, lat, level, azimuth, hfov, max_view_distance, height
    village_ids: IntArray
    village_names: tuple[str | None, ...]
    village_lonlat: FloatArray  # (n, 2)
    village_population: FloatArray  # NaN where unknown
    junction_ids: IntArray
    junction_names: tuple[str | None, ...]
    junction_lonlat: FloatArray
    junction_weight: FloatArray  # NaN where unknown
    junction_trunk: NDArray[np.bool_]  # trunk-road checkpoints weigh more
    params: CoverageParams


@dataclass(frozen=True)
class GapRow:
    kind: str
    priority: float
    area_m2: float | None
    name: str | None
    geometry: str  # GeoJSON geometry, WGS-84
    bbox: tuple[float, float, float, float]  # lon0, lat0, lon1, lat1


@dataclass(frozen=True)
class Demand:
    """Uncovered demand and candidate sites of one county, in the run's shared plane."""

    x: FloatArray
    y: FloatArray
    weight: FloatArray
    kind: NDArray[np.int8]
    ref: IntArray  # village/junction id, or -1 for cells
    name: tuple[str | None, ...]
    cand_x: FloatArray
    cand_y: FloatArray
    cand_kind: NDArray[np.int8]


@dataclass(frozen=True)
class CountyResult:
    adcode: str
    summary: dict[str, Any]
    gaps: list[GapRow]
    demand: Demand
    # Covered weight of this county's demand: proposals report the share over the whole run.
    covered_weight: float
    total_weight: float


@functools.lru_cache(maxsize=4)
def _projection(lon0: float, lat0: float) -> LocalProjection:
    """Transformers are costly to build; a worker process reuses one per run centre."""
    return LocalProjection(lon0, lat0)


def _round(coords: FloatArray) -> FloatArray:
    return np.round(coords, _COORD_DIGITS)


def _geojson(geoms: NDArray[np.object_]) -> list[str]:
    rounded = shapely.transform(geoms, _round)
    return [str(s) for s in shapely.to_geojson(rounded)]


def camera_footprints(
    xy: tuple[FloatArray, FloatArray], cams: FloatArray, p: CoverageParams
) -> Footprints:
    return footprints(
        xy[0],
        xy[1],
        cams[:, 3],
        cams[:, 4],
        cams[:, 5],
        cams[:, 2].astype(np.int64),
        default_radius_by_level=p.default_radius_by_level,
        mount_height=cams[:, 6],
    )


def entrance_discs(x: FloatArray, y: FloatArray, radius_m: float) -> Footprints:
    """Every camera as a disc of the entrance radius: the rural rule is "a camera within 150 m"."""
    n = x.shape[0]
    return Footprints(
        x=x,
        y=y,
        azimuth_deg=np.full(n, np.nan),
        hfov_deg=np.full(n, 360.0),
        radius_m=np.full(n, float(radius_m)),
        near_m=np.zeros(n),
        assumed=np.zeros(n, dtype=np.bool_),
    )


def _urban_area(
    zone: Zone,
    county_xy: shapely.Geometry,
    builtup_xy: list[Any],
    proj: LocalProjection,
    p: CoverageParams,
) -> Any:
    """Urban zones are gridded whole; rural ones only where built-up polygons lie; the
    policy's drawn polygons add urban area or take it away."""
    if zone == "urban":
        area = county_xy
    elif builtup_xy:
        area = shapely.intersection(
            shapely.union_all(np.asarray(builtup_xy, dtype=object)), county_xy
        )
    else:
        area = shapely.Polygon()
    if p.urban_polygons_wkb is not None:
        extra = proj.forward_geometry(shapely.from_wkb(p.urban_polygons_wkb))
        area = shapely.union(area, shapely.intersection(extra, county_xy))
    if p.rural_polygons_wkb is not None:
        area = shapely.difference(
            area, proj.forward_geometry(shapely.from_wkb(p.rural_polygons_wkb))
        )
    return area


def compute_county(c: CountyInput) -> CountyResult:
    """Measure one county against every camera that can reach it.

    Cameras were read with a margin of the longest camera range around the county, so those
    across the border count for coverage; only those standing inside count as the county's
    cameras (density, level breakdown, assumed orientations).
    """
    p = c.params
    proj = _projection(*c.centre)
    county_xy = proj.forward_geometry(shapely.from_wkb(c.boundary_wkb))
    shapely.prepare(county_xy)
    cams = c.cameras
    cx_cam, cy_cam = proj.forward(cams[:, 0], cams[:, 1])
    fp = camera_footprints((cx_cam, cy_cam), cams, p)
    inside_cam = shapely.contains_xy(county_xy, cx_cam, cy_cam)

    builtup = [proj.forward_geometry(shapely.from_wkb(b)) for b in c.builtup_wkb]
    urban = _urban_area(c.zone, county_xy, builtup, proj, p)
    gx, gy = (
        grid_cells(urban, p.cell_m) if not shapely.is_empty(urban) else (np.zeros(0), np.zeros(0))
    )
    cell_cov = covered_mask(fp, gx, gy)

    vx, vy = proj.forward(c.village_lonlat[:, 0], c.village_lonlat[:, 1])
    v_in = shapely.contains_xy(county_xy, vx, vy)
    vx, vy = vx[v_in], vy[v_in]
    v_ids = c.village_ids[v_in]
    v_names = (
        tuple(np.asarray(c.village_names, dtype=object)[v_in].tolist())
        if len(c.village_names)
        else ()
    )
    v_pop = c.village_population[v_in] if p.use_population else np.full(int(v_in.sum()), np.nan)
    v_cov = covered_mask(entrance_discs(cx_cam, cy_cam, p.village_entrance_m), vx, vy)

    jx, jy = proj.forward(c.junction_lonlat[:, 0], c.junction_lonlat[:, 1])
    j_in = shapely.contains_xy(county_xy, jx, jy)
    jx, jy = jx[j_in], jy[j_in]
    j_ids = c.junction_ids[j_in]
    j_names = (
        tuple(np.asarray(c.junction_names, dtype=object)[j_in].tolist())
        if len(c.junction_names)
        else ()
    )
    j_w = c.junction_weight[j_in]
    j_trunk = c.junction_trunk[j_in]
    j_cov = covered_mask(fp, jx, jy)

    area_km2 = float(shapely.area(county_xy)) / 1e6
    n_cams = int(np.count_nonzero(inside_cam))
    levels = cams[inside_cam, 2].astype(np.int64)
    lv, counts = np.unique(levels, return_counts=True)
    summary: dict[str, Any] = {
        "region_code": c.adcode,
        "name": c.name,
        "zone": c.zone,
        "area_km2": area_km2,
        "cells": int(gx.shape[0]),
        "cells_covered": int(np.count_nonzero(cell_cov)),
        "covered_share": float(np.count_nonzero(cell_cov)) / gx.shape[0] if gx.shape[0] else None,
        "villages": int(vx.shape[0]),
        "villages_covered": int(np.count_nonzero(v_cov)),
        "junctions": int(jx.shape[0]),
        "junctions_covered": int(np.count_nonzero(j_cov)),
        "cameras": n_cams,
        "cameras_assumed": int(np.count_nonzero(fp.assumed & inside_cam)),
        "cameras_per_km2": n_cams / area_km2 if area_km2 > 0 else None,
        "cameras_by_level": {str(int(k)): int(n) for k, n in zip(lv, counts, strict=True)},
    }

    # Gaps: merged cell patches first (priority order from geo.gaps), then points.
    gaps: list[GapRow] = []
    merged = merge_uncovered_cells(gx, gy, cell_cov, p.cell_m, np.full(gx.shape[0], p.cell_weight))
    if merged:
        polys = proj.inverse_geometry(np.asarray([g.polygon for g in merged], dtype=object))
        texts = _geojson(polys)
        bounds = shapely.bounds(polys)
        gaps.extend(
            GapRow("cell", g.weight, g.area_m2, None, t, tuple(b))
            for g, t, b in zip(merged, texts, bounds.tolist(), strict=True)
        )
    v_weight = np.where(np.isfinite(v_pop), v_pop, p.village_weight)
    # A junction weighs the policy's weight (trunk checkpoints more), times its own if given.
    j_weight = np.where(j_trunk, p.trunk_junction_weight, p.junction_weight) * np.where(
        np.isfinite(j_w), j_w, 1.0
    )
    for kind, ok, xs, ys, w, names in (
        ("village", v_cov, vx, vy, v_weight, v_names),
        ("junction", j_cov, jx, jy, j_weight, j_names),
    ):
        idx = np.flatnonzero(~ok)
        if idx.size == 0:
            continue
        # Highest priority first, then input order (ids ascend): stable across reruns.
        idx = idx[np.argsort(-w[idx], kind="stable")]
        lon, lat = proj.inverse(xs[idx], ys[idx])
        lon, lat = _round(lon), _round(lat)
        texts = _geojson(shapely.points(lon, lat))
        gaps.extend(
            GapRow(kind, float(w[i]), None, names[i] if names else None, t, (a, b, a, b))
            for i, t, a, b in zip(idx.tolist(), texts, lon.tolist(), lat.tolist(), strict=True)
        )

    # Demand left for proposals: what is uncovered; candidates: junctions, village
    # entrances (all of them: a site there may also close nearby cells) and open cells.
    open_c, open_v, open_j = ~cell_cov, ~v_cov, ~j_cov
    n_vnames = len(v_names)
    n_jnames = len(j_names)
    demand = Demand(
        x=np.concatenate([gx[open_c], vx[open_v], jx[open_j]]),
        y=np.concatenate([gy[open_c], vy[open_v], jy[open_j]]),
        weight=np.concatenate(
            [np.full(int(open_c.sum()), p.cell_weight), v_weight[open_v], j_weight[open_j]]
        ),
        kind=np.concatenate(
            [
                np.full(int(open_c.sum()), CELL, dtype=np.int8),
                np.full(int(open_v.sum()), VILLAGE, dtype=np.int8),
                np.full(int(open_j.sum()), JUNCTION, dtype=np.int8),
            ]
        ),
        ref=np.concatenate(
            [np.full(int(open_c.sum()), -1, dtype=np.int64), v_ids[open_v], j_ids[open_j]]
        ),
        name=(
            (None,) * int(open_c.sum())
            + (
                tuple(np.asarray(v_names, dtype=object)[open_v].tolist())
                if n_vnames
                else (None,) * int(open_v.sum())
            )
            + (
                tuple(np.asarray(j_names, dtype=object)[open_j].tolist())
                if n_jnames
                else (None,) * int(open_j.sum())
            )
        ),
        cand_x=np.concatenate([jx, vx, gx[open_c]]),
        cand_y=np.concatenate([jy, vy, gy[open_c]]),
        cand_kind=np.concatenate(
            [
                np.full(jx.shape[0], JUNCTION, dtype=np.int8),
                np.full(vx.shape[0], VILLAGE, dtype=np.int8),
                np.full(int(open_c.sum()), CELL, dtype=np.int8),
            ]
        ),
    )
    total_w = float(gx.shape[0] * p.cell_weight + v_weight.sum() + j_weight.sum())
    covered_w = float(
        np.count_nonzero(cell_cov) * p.cell_weight + v_weight[v_cov].sum() + j_weight[j_cov].sum()
    )
    return CountyResult(c.adcode, summary, gaps, demand, covered_w, total_w)


@dataclass(frozen=True)
class ProposalRow:
    rank: int
    lon: float
    lat: float
    site_kind: str
    region_code: str
    newly_covered: int
    newly_cells: int
    newly_villages: int
    newly_junctions: int
    gain_weight: float
    covered_share_after: float
    covers: dict[str, Any]


def propose(
    centre: tuple[float, float],
    demands: list[tuple[str, Demand]],
    covered_weight: float,
    total_weight: float,
    radius_m: float,
    k: int,
) -> list[ProposalRow]:
    """Greedy sites over the whole run: candidates and open demand of every county together.

    Only open demand goes into the greedy (covered demand adds nothing), and the share after
    each pick is reported over all demand of the run, covered or not, so the planner sees the
    run's real covered share climb with each site.
    """
    if k <= 0 or not demands:
        return []
    d_x = np.concatenate([d.x for _, d in demands])
    d_y = np.concatenate([d.y for _, d in demands])
    d_w = np.concatenate([d.weight for _, d in demands])
    d_kind = np.concatenate([d.kind for _, d in demands])
    d_ref = np.concatenate([d.ref for _, d in demands])
    d_name = [n for _, d in demands for n in d.name]
    c_x = np.concatenate([d.cand_x for _, d in demands])
    c_y = np.concatenate([d.cand_y for _, d in demands])
    c_kind = np.concatenate([d.cand_kind for _, d in demands])
    c_region = np.repeat(np.arange(len(demands)), [d.cand_x.shape[0] for _, d in demands])
    if d_x.size == 0 or c_x.size == 0:
        return []
    picks = greedy_sites(
        c_x, c_y, d_x, d_y, d_w, np.zeros(d_x.shape[0], dtype=np.bool_), radius_m=radius_m, k=k
    )
    if not picks:
        return []
    proj = _projection(*centre)
    lon, lat = proj.inverse(
        np.array([s.x for s in picks], dtype=np.float64),
        np.array([s.y for s in picks], dtype=np.float64),
    )
    rows: list[ProposalRow] = []
    gained = covered_weight
    for rank, (s, lo, la) in enumerate(zip(picks, lon.tolist(), lat.tolist(), strict=True), 1):
        kinds = d_kind[s.newly_covered]
        counts = np.bincount(kinds, minlength=3)
        gained += s.gain_weight
        villages = s.newly_covered[kinds == VILLAGE]
        junctions = s.newly_covered[kinds == JUNCTION]
        rows.append(
            ProposalRow(
                rank=rank,
                lon=round(lo, _COORD_DIGITS),
                lat=round(la, _COORD_DIGITS),
                site_kind=KIND_NAMES[int(c_kind[s.index])],
                region_code=demands[int(c_region[s.index])][0],
                newly_covered=int(s.newly_covered.shape[0]),
                newly_cells=int(counts[CELL]),
                newly_villages=int(counts[VILLAGE]),
                newly_junctions=int(counts[JUNCTION]),
                gain_weight=float(s.gain_weight),
                covered_share_after=min(1.0, gained / total_weight) if total_weight > 0 else 0.0,
                covers={
                    "cells": int(counts[CELL]),
                    "villages": [
                        {"id": int(d_ref[i]), "name": d_name[i]} for i in villages.tolist()
                    ],
                    "junctions": [
                        {"id": int(d_ref[i]), "name": d_name[i]} for i in junctions.tolist()
                    ],
                },
            )
        )
    return rows
