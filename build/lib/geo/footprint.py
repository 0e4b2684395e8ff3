"""Camera footprints: what ground a camera can usefully see.

A footprint is a sector with its apex at the camera, bearing clockwise from
north, opening HFOV and radius R = min(max view distance, DORI distance), minus
a near dead zone under the camera (DESIGN.md §2 "Camera footprint"). Everything
works on arrays of cameras at once, because a county has tens of thousands of
them and coverage is recomputed on every ledger import.

Coordinates are projected metres (see :mod:`geo.project`); bearings in degrees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

from geo.errors import GeoError

__all__ = [
    "DETECT",
    "IDENTIFY",
    "OBSERVE",
    "RECOGNISE",
    "Footprints",
    "covers",
    "dori_distance_m",
    "footprints",
    "hfov_from_lens",
    "sector_polygons",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.intp]

# IEC 62676-4 pixel densities (px per metre at the target) for the DORI levels.
DETECT: Final = 25.0
OBSERVE: Final = 62.5
RECOGNISE: Final = 125.0
IDENTIFY: Final = 250.0

# Ledgers give horizontal field angles only; the vertical one matters just for the
# dead zone, and almost every surveillance sensor is 16:9.
_ASPECT_H_OVER_W: Final = 9.0 / 16.0


def hfov_from_lens(focal_mm: ArrayLike, sensor_width_mm: ArrayLike) -> FloatArray:
    """Horizontal field of view in degrees, for ledgers that list the lens but not the angle.

    Pinhole model 2·atan(w / 2f); NaN where either input is missing or non-positive,
    so callers can fall back to other data element-wise.
    """
    f = np.asarray(focal_mm, dtype=np.float64)
    w = np.asarray(sensor_width_mm, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.degrees(2.0 * np.arctan(w / (2.0 * f)))
    return np.asarray(np.where((f > 0) & (w > 0), out, np.nan), dtype=np.float64)


def dori_distance_m(
    h_px: ArrayLike, focal_mm: ArrayLike, sensor_width_mm: ArrayLike, px_per_m: ArrayLike
) -> FloatArray:
    """Farthest distance at which the image still has ``px_per_m`` pixels per metre.

    From similar triangles: the scene width at distance d is d·w/f, spread over
    H_px pixels, so d = H_px·f / (w·P). NaN where any input is missing or non-positive.
    """
    h = np.asarray(h_px, dtype=np.float64)
    f = np.asarray(focal_mm, dtype=np.float64)
    w = np.asarray(sensor_width_mm, dtype=np.float64)
    p = np.asarray(px_per_m, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = h * f / (w * p)
    return np.asarray(np.where((h > 0) & (f > 0) & (w > 0) & (p > 0), d, np.nan), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Footprints:
    """Resolved footprints of N cameras, one array element per camera.

    ``assumed`` marks cameras whose orientation is unknown: they are drawn and
    counted as full discs of their level's default radius, and reports should say
    so, because that coverage is a guess. ``hfov_deg`` is 360 for every disc, so
    bearing tests can rely on it alone.
    """

    x: FloatArray
    y: FloatArray
    azimuth_deg: FloatArray
    hfov_deg: FloatArray
    radius_m: FloatArray
    near_m: FloatArray
    assumed: BoolArray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_disc(self) -> BoolArray:
        """Discs skip the bearing test; that is both assumed cameras and 360° domes."""
        return np.asarray(self.assumed | (self.hfov_deg >= 360.0), dtype=np.bool_)

    def subset(self, idx: ArrayLike) -> Footprints:
        """Select cameras (e.g. one zone's) without recomputing anything."""
        i = np.asarray(idx)
        return Footprints(
            x=self.x[i],
            y=self.y[i],
            azimuth_deg=self.azimuth_deg[i],
            hfov_deg=self.hfov_deg[i],
            radius_m=self.radius_m[i],
            near_m=self.near_m[i],
            assumed=self.assumed[i],
        )

    @classmethod
    def concat(cls, parts: list[Footprints]) -> Footprints:
        """Existing cameras plus proposed ones, for "what if" coverage."""
        if not parts:
            return _empty_footprints()
        return cls(
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            azimuth_deg=np.concatenate([p.azimuth_deg for p in parts]),
            hfov_deg=np.concatenate([p.hfov_deg for p in parts]),
            radius_m=np.concatenate([p.radius_m for p in parts]),
            near_m=np.concatenate([p.near_m for p in parts]),
            assumed=np.concatenate([p.assumed for p in parts]),
        )


def _empty_footprints() -> Footprints:
    z = np.zeros(0, dtype=np.float64)
    return Footprints(z, z, z, z, z, z, np.zeros(0, dtype=np.bool_))


def _column(name: str, value: ArrayLike | None, n: int) -> FloatArray:
    """Broadcast an optional per-camera input; None means unknown for every camera."""
    if value is None:
        return np.full(n, np.nan, dtype=np.float64)
    a = np.asarray(value, dtype=np.float64)
    try:
        return np.array(np.broadcast_to(a, (n,)), dtype=np.float64)
    except ValueError as exc:
        raise GeoError(f"{name} has shape {a.shape} but there are {n} cameras") from exc


def _first_bad(mask: BoolArray) -> int:
    return int(np.flatnonzero(mask)[0])


def _level_defaults(
    level: ArrayLike, default_radius_by_level: Mapping[int, float], n: int
) -> FloatArray:
    """Vectorised dict lookup: sorted keys + searchsorted, so no loop over cameras."""
    lv = np.asarray(level)
    try:
        lv = np.array(np.broadcast_to(lv, (n,)), dtype=np.int64)
    except (ValueError, TypeError) as exc:
        raise GeoError(f"level must be one integer per camera ({n} cameras)") from exc
    if not default_radius_by_level:
        raise GeoError(
            "default_radius_by_level is empty; the layout policy must give one per level"
        )
    keys = np.array(sorted(default_radius_by_level), dtype=np.int64)
    values = np.array([float(default_radius_by_level[int(k)]) for k in keys], dtype=np.float64)
    if not bool(np.all(np.isfinite(values) & (values > 0))):
        raise GeoError(
            f"default radii must be positive metres, got {dict(default_radius_by_level)}"
        )
    pos = np.clip(np.searchsorted(keys, lv), 0, keys.size - 1)
    known = keys[pos] == lv if n else np.zeros(0, dtype=np.bool_)
    if not bool(np.all(known)):
        i = _first_bad(~known)
        raise GeoError(
            f"camera {i} has level {int(lv[i])}, which has no default radius in the layout "
            f"policy (levels configured: {keys.tolist()})"
        )
    return np.asarray(values[pos], dtype=np.float64)


def footprints(
    x: ArrayLike,
    y: ArrayLike,
    azimuth: ArrayLike | None,
    hfov: ArrayLike | None,
    max_view_distance: ArrayLike | None,
    level: ArrayLike,
    *,
    default_radius_by_level: Mapping[int, float],
    dori_px_per_m: float | None = None,
    h_px: ArrayLike | None = None,
    focal_mm: ArrayLike | None = None,
    sensor_mm: ArrayLike | None = None,
    mount_height: ArrayLike | None = None,
    tilt_deg: ArrayLike | None = None,
) -> Footprints:
    """Turn ledger columns into footprints, using the best data each camera has.

    NaN in any optional column means "unknown for this camera". Per camera:

    * HFOV: the ledger angle, else derived from focal length and sensor width.
    * Radius: the smaller of the max view distance and the DORI distance at
      ``dori_px_per_m`` (when resolution, focal length and sensor width are known);
      if neither is known, the level's default radius.
    * Orientation unknown (no azimuth, or no HFOV at all): a full disc of the
      level's default radius, flagged ``assumed`` — DESIGN.md's rule, because
      what a camera of unknown aim sees is a guess and the guess should be the
      policy's, not a ledger value that was measured along some unknown bearing.
    * Dead zone: the ground under a camera is out of frame until the lower edge of
      the image meets it, at mount_height / tan(tilt + VFOV/2), with VFOV taken
      from the HFOV and a 16:9 sensor. Zero when height or tilt is unknown, or when
      the frame's lower edge is at or above the horizon (bad data, not a blind camera).

    Inputs that cannot be right (NaN position, HFOV outside (0, 360], negative
    distances) raise :class:`GeoError` naming the first bad camera, because silently
    dropping cameras would understate coverage.
    """
    xa = np.atleast_1d(np.asarray(x, dtype=np.float64))
    n = int(xa.shape[0])
    ya = _column("y", y, n)
    xa = _column("x", xa, n)
    bad_pos = ~(np.isfinite(xa) & np.isfinite(ya))
    if bool(bad_pos.any()):
        raise GeoError(
            f"camera {_first_bad(bad_pos)} has no projected position; "
            "drop cameras without coordinates before computing coverage"
        )

    az = _column("azimuth", azimuth, n)
    hf = _column("hfov", hfov, n)
    mvd = _column("max_view_distance", max_view_distance, n)
    bad_hfov = np.isfinite(hf) & ~((hf > 0) & (hf <= 360.0))
    if bool(bad_hfov.any()):
        i = _first_bad(bad_hfov)
        raise GeoError(f"camera {i} has HFOV {hf[i]}°; a field angle must be in (0, 360]")
    bad_mvd = np.isfinite(mvd) & (mvd <= 0)
    if bool(bad_mvd.any()):
        i = _first_bad(bad_mvd)
        raise GeoError(f"camera {i} has max view distance {mvd[i]} m; it must be positive")

    focal = _column("focal_mm", focal_mm, n)
    sensor = _column("sensor_mm", sensor_mm, n)
    hf = np.where(np.isfinite(hf), hf, hfov_from_lens(focal, sensor))

    default_r = _level_defaults(level, default_radius_by_level, n)
    if dori_px_per_m is not None:
        dori = dori_distance_m(_column("h_px", h_px, n), focal, sensor, dori_px_per_m)
    else:
        dori = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        radius = np.fmin(mvd, dori)  # fmin ignores a NaN operand
    radius = np.where(np.isfinite(radius), radius, default_r)

    assumed = ~np.isfinite(az) | ~np.isfinite(hf)
    radius = np.where(assumed, default_r, radius)
    hf = np.where(assumed, 360.0, hf)
    az = np.where(assumed, np.nan, np.mod(az, 360.0))

    height = _column("mount_height", mount_height, n)
    tilt = _column("tilt_deg", tilt_deg, n)
    vfov = np.degrees(
        2.0 * np.arctan(np.tan(np.radians(np.minimum(hf, 179.0)) / 2.0) * _ASPECT_H_OVER_W)
    )
    lower_edge = np.radians(tilt + vfov / 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = height / np.tan(lower_edge)
    usable = (
        np.isfinite(near) & (height > 0) & (lower_edge > 0) & (lower_edge < math.pi / 2) & ~assumed
    )
    near = np.where(usable, np.minimum(near, radius), 0.0)

    return Footprints(
        x=xa,
        y=ya,
        azimuth_deg=np.asarray(az, dtype=np.float64),
        hfov_deg=np.asarray(hf, dtype=np.float64),
        radius_m=np.asarray(radius, dtype=np.float64),
        near_m=np.asarray(near, dtype=np.float64),
        assumed=np.asarray(assumed, dtype=np.bool_),
    )


def covers(fp: Footprints, cam_idx: ArrayLike, px: ArrayLike, py: ArrayLike) -> BoolArray:
    """Whether point i lies in footprint ``cam_idx[i]``, for many (camera, point) pairs.

    This is the exact test behind coverage; the spatial index only proposes
    candidate pairs. Boundaries count as inside (a point exactly R away is seen).
    The bearing difference is wrapped into [-180, 180) so a sector facing 350°
    with 40° HFOV covers bearings 330°..10°. The camera's own position counts as
    covered unless it has a dead zone.
    """
    c = np.asarray(cam_idx, dtype=np.intp)
    dx = np.asarray(px, dtype=np.float64) - fp.x[c]
    dy = np.asarray(py, dtype=np.float64) - fp.y[c]
    d2 = dx * dx + dy * dy
    r = fp.radius_m[c]
    near = fp.near_m[c]
    in_ring = (d2 <= r * r) & (d2 >= near * near)
    bearing = np.degrees(np.arctan2(dx, dy))  # clockwise from north: atan2(east, north)
    with np.errstate(invalid="ignore"):  # NaN azimuths belong to discs and are masked out
        diff = np.mod(bearing - fp.azimuth_deg[c] + 180.0, 360.0) - 180.0
        in_wedge = np.abs(diff) <= fp.hfov_deg[c] / 2.0
    free_bearing = fp.is_disc[c] | (d2 == 0.0)
    return np.asarray(in_ring & (in_wedge | free_bearing), dtype=np.bool_)


def sector_polygons(fp: Footprints, n_arc: int = 16) -> NDArray[np.object_]:
    """Shapely polygons of the footprints, for maps and for area checks.

    Sectors get ``n_arc`` segments along each arc; discs get ``4 * n_arc`` around
    the circle so a full turn is as smooth as a 90° sector. With a dead zone the
    polygon is a ring sector (or an annulus). Chord error is below 0.2 % of area
    for n_arc = 16 at any opening.
    """
    if n_arc < 2:
        raise GeoError(f"n_arc must be at least 2, got {n_arc}")
    n = len(fp)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    disc = fp.is_disc
    sec = np.flatnonzero(~disc)
    if sec.size:
        half = fp.hfov_deg[sec, None] / 2.0
        t = np.linspace(0.0, 1.0, n_arc + 1)[None, :]
        bearings = np.radians(fp.azimuth_deg[sec, None] - half + t * 2.0 * half)
        sin_b, cos_b = np.sin(bearings), np.cos(bearings)
        r = fp.radius_m[sec, None]
        near = fp.near_m[sec, None]
        # Outer arc forward, inner arc back; a zero dead zone collapses the inner arc onto
        # the apex, and the repeated vertices are harmless to shapely.
        xs = np.concatenate([r * sin_b, (near * sin_b)[:, ::-1]], axis=1) + fp.x[sec, None]
        ys = np.concatenate([r * cos_b, (near * cos_b)[:, ::-1]], axis=1) + fp.y[sec, None]
        coords = np.stack([xs, ys], axis=-1)
        coords = np.concatenate([coords, coords[:, :1]], axis=1)
        out[sec] = shapely.polygons(coords)
    dsc = np.flatnonzero(disc)
    if dsc.size:
        theta = np.linspace(0.0, 2.0 * math.pi, 4 * n_arc + 1)[None, :]
        ring_x = np.sin(theta)
        ring_y = np.cos(theta)

        def circles(radius: FloatArray) -> NDArray[np.object_]:
            pts = np.stack(
                [
                    fp.x[dsc, None] + radius[:, None] * ring_x,
                    fp.y[dsc, None] + radius[:, None] * ring_y,
                ],
                axis=-1,
            )
            return np.asarray(shapely.polygons(pts), dtype=object)

        outer = circles(fp.radius_m[dsc])
        near = fp.near_m[dsc]
        holed = near > 0
        if bool(holed.any()):
            outer[holed] = shapely.difference(outer[holed], circles(near)[holed])
        out[dsc] = outer
    return out
