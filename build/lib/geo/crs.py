"""Conversions between the three coordinate systems found in Chinese camera ledgers.

Chinese web maps do not publish WGS-84: 高德/腾讯 use GCJ-02 (the state-mandated
obfuscation, "火星坐标") and 百度 adds its own BD-09 shift on top. A technician who
copies a point from one of those maps into a ledger is off by 100-700 m, which is
enough to put a camera on the wrong street. Everything here is numpy-vectorised
so a 100k-row ledger converts in a few array passes, and nothing does I/O.

The GCJ-02 formulas and constants are the widely reimplemented ones (eviltransform,
coordtransform) so that our output agrees with what 高德/腾讯 show to the metre.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geo.errors import GeoError, UnknownCRS

__all__ = [
    "CHINA_BBOX",
    "CRS_NAMES",
    "EARTH_RADIUS_M",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "haversine_m",
    "in_china_bbox",
    "looks_swapped",
    "normalise_crs",
    "to_wgs84",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
LonLat = tuple[FloatArray, FloatArray]

CRS_NAMES: Final = ("wgs84", "gcj02", "bd09")

# (lon_min, lat_min, lon_max, lat_max). Tighter than the GCJ-02 zone below: it is
# meant for plausibility checks on ledger rows (a camera at lat 2 is a typo), not
# for deciding whether the obfuscation applies.
CHINA_BBOX: Final = (73.4, 17.9, 135.1, 53.6)

EARTH_RADIUS_M: Final = 6371008.8  # IUGG mean radius; minimises haversine error on average.

# Krasovsky-1940 ellipsoid as used by the GCJ-02 algorithm; changing these
# breaks agreement with every map that uses it.
_GCJ_A: Final = 6378245.0
_GCJ_EE: Final = 0.00669342162296594323
_BD_X_PI: Final = math.pi * 3000.0 / 180.0

# The rough rectangle every public GCJ-02 implementation uses to decide whether
# the offset applies. It must stay this exact box (not CHINA_BBOX) or points near
# the border would disagree with 高德/腾讯.
_GCJ_LON_MIN: Final = 72.004
_GCJ_LON_MAX: Final = 137.8347
_GCJ_LAT_MIN: Final = 0.8293
_GCJ_LAT_MAX: Final = 55.8271

# The offset's Jacobian is within ~1e-3 of identity, so fixed-point iteration
# gains about three digits per pass; 1e-7 degrees is ~1 cm.
_INVERSE_TOL_DEG: Final = 1e-7
_INVERSE_MAX_ITER: Final = 10


def _as_lonlat(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Coerce once so every public function accepts scalars, lists and arrays alike."""
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    lon_b, lat_b = np.broadcast_arrays(lon_a, lat_a)
    return lon_b, lat_b


def _in_gcj_zone(lon: FloatArray, lat: FloatArray) -> BoolArray:
    """NaN compares False, so missing coordinates are left untouched rather than poisoned."""
    return (
        (lon >= _GCJ_LON_MIN)
        & (lon <= _GCJ_LON_MAX)
        & (lat >= _GCJ_LAT_MIN)
        & (lat <= _GCJ_LAT_MAX)
    )


def _gcj_offset(lon: FloatArray, lat: FloatArray) -> LonLat:
    """GCJ-02 minus WGS-84 at a WGS-84 point, ignoring the zone test.

    Kept separate from the zone test so the inverse can iterate on it without
    the discontinuity at the zone edge.
    """
    with np.errstate(invalid="ignore"):  # inf inputs: their result is discarded by the zone mask
        x = lon - 105.0
        y = lat - 35.0
        x_pi = x * math.pi
        y_pi = y * math.pi
        sqrt_abs_x = np.sqrt(np.abs(x))
        common = 20.0 * np.sin(6.0 * x_pi) + 20.0 * np.sin(2.0 * x_pi)

        d_lat = (
            common
            + 20.0 * np.sin(y_pi)
            + 40.0 * np.sin(y_pi / 3.0)
            + 160.0 * np.sin(y_pi / 12.0)
            + 320.0 * np.sin(y_pi / 30.0)
        ) * (2.0 / 3.0)
        d_lat += -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x

        d_lon = (
            common
            + 20.0 * np.sin(x_pi)
            + 40.0 * np.sin(x_pi / 3.0)
            + 150.0 * np.sin(x_pi / 12.0)
            + 300.0 * np.sin(x_pi / 30.0)
        ) * (2.0 / 3.0)
        d_lon += 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x

        rad_lat = lat / 180.0 * math.pi
        magic = 1.0 - _GCJ_EE * np.sin(rad_lat) ** 2
        sqrt_magic = np.sqrt(magic)
        d_lat = (d_lat * 180.0) / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sqrt_magic) * math.pi)
        d_lon = (d_lon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(rad_lat) * math.pi)
    return d_lon, d_lat


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Needed before plotting our WGS-84 points on 高德/腾讯 tiles, which are GCJ-02."""
    lon_a, lat_a = _as_lonlat(lon, lat)
    d_lon, d_lat = _gcj_offset(lon_a, lat_a)
    zone = _in_gcj_zone(lon_a, lat_a)
    return (
        np.where(zone, lon_a + d_lon, lon_a).astype(np.float64),
        np.where(zone, lat_a + d_lat, lat_a).astype(np.float64),
    )


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Undo GCJ-02 to centimetre accuracy.

    The one-step ``g - offset(g)`` shortcut many libraries use is off by up to ~5 m, which
    is visible when cameras sit on opposite corners of a junction, so we solve
    ``w + offset(w) = g`` by fixed-point iteration instead. The loop is over
    iterations (normally four), never over points. As in eviltransform, the
    zone test is applied to the GCJ-02 input.
    """
    g_lon, g_lat = _as_lonlat(lon, lat)
    zone = _in_gcj_zone(g_lon, g_lat)
    w_lon, w_lat = g_lon, g_lat
    # Points outside the zone (including inf) iterate harmlessly and are discarded below.
    with np.errstate(invalid="ignore"):
        for _ in range(_INVERSE_MAX_ITER):
            d_lon, d_lat = _gcj_offset(w_lon, w_lat)
            r_lon = w_lon + d_lon - g_lon
            r_lat = w_lat + d_lat - g_lat
            w_lon = w_lon - r_lon
            w_lat = w_lat - r_lat
            residual = np.maximum(np.abs(r_lon), np.abs(r_lat))[zone]
            if residual.size == 0 or float(residual.max()) < _INVERSE_TOL_DEG:
                break
    return (
        np.where(zone, w_lon, g_lon).astype(np.float64),
        np.where(zone, w_lat, g_lat).astype(np.float64),
    )


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Needed before plotting on 百度 tiles; applied everywhere, as 百度's own formula is."""
    x, y = _as_lonlat(lon, lat)
    with np.errstate(invalid="ignore"):  # inf in, NaN out, without a warning per batch
        z = np.hypot(x, y) + 0.00002 * np.sin(y * _BD_X_PI)
        theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _BD_X_PI)
    return (
        np.asarray(z * np.cos(theta) + 0.0065, dtype=np.float64),
        np.asarray(z * np.sin(theta) + 0.006, dtype=np.float64),
    )


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Use the published closed-form inverse rather than iterating.

    It round-trips to under 0.25 m across China (median ~6 cm), well below ledger
    accuracy, and matching it keeps our numbers identical to every other tool.
    """
    lon_a, lat_a = _as_lonlat(lon, lat)
    x = lon_a - 0.0065
    y = lat_a - 0.006
    with np.errstate(invalid="ignore"):
        z = np.hypot(x, y) - 0.00002 * np.sin(y * _BD_X_PI)
        theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _BD_X_PI)
    return (
        np.asarray(z * np.cos(theta), dtype=np.float64),
        np.asarray(z * np.sin(theta), dtype=np.float64),
    )


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """BD-09 is defined on top of GCJ-02, so there is no direct formula."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> LonLat:
    """Points copied from 百度地图 need both shifts removed."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


# Keys are what _alias_key() makes of a user's spelling.
_ALIASES: Final[dict[str, str]] = {
    # WGS-84; CGCS2000 (北斗/国家2000) differs from it by centimetres, far below
    # the accuracy of any ledger we ingest.
    "wgs84": "wgs84",
    "wgs1984": "wgs84",
    "gps": "wgs84",
    "epsg4326": "wgs84",
    "cgcs2000": "wgs84",
    "国家2000": "wgs84",
    "epsg4490": "wgs84",
    # GCJ-02
    "gcj02": "gcj02",
    "火星": "gcj02",
    "国测局": "gcj02",
    "高德": "gcj02",
    "腾讯": "gcj02",
    "amap": "gcj02",
    "gaode": "gcj02",
    # BD-09 (lon/lat flavour; BD-09MC is Mercator metres and deliberately absent)
    "bd09": "bd09",
    "bd09ll": "bd09",
    "百度": "bd09",
    "baidu": "bd09",
}

_ACCEPTED_HINT: Final = (
    "wgs84 (WGS84, WGS-84, GPS, CGCS2000), gcj02 (GCJ-02, 火星坐标, 高德, 腾讯), bd09 (BD-09, 百度)"
)

_SEPARATORS = re.compile(r"[\s\-_.:/·]+")


def _alias_key(name: str) -> str:
    """Fold the ways people type the same name: full-width, case, dashes, "坐标系" suffix."""
    key = unicodedata.normalize("NFKC", name).casefold()
    key = _SEPARATORS.sub("", key)
    for suffix in ("坐标系", "坐标"):
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
            break
    return key


def normalise_crs(name: str) -> str:
    """Map a free-text 坐标系 value to one of CRS_NAMES, refusing to guess.

    Guessing would silently shift a camera by hundreds of metres, so anything
    unrecognised (including blank) raises and the caller decides the default.
    """
    if isinstance(name, str):
        canonical = _ALIASES.get(_alias_key(name))
        if canonical is not None:
            return canonical
    raise UnknownCRS(f"unknown coordinate system {name!r}; accepted: {_ACCEPTED_HINT}")


_TO_WGS84: Final[dict[str, Callable[[ArrayLike, ArrayLike], LonLat]]] = {
    "gcj02": gcj02_to_wgs84,
    "bd09": bd09_to_wgs84,
}


def _convert_all(lon: FloatArray, lat: FloatArray, canonical: str) -> LonLat:
    if canonical == "wgs84":
        return np.array(lon, dtype=np.float64), np.array(lat, dtype=np.float64)
    return _TO_WGS84[canonical](lon, lat)


def to_wgs84(
    lon: ArrayLike, lat: ArrayLike, crs: str | Sequence[str | None] | ArrayLike | None
) -> LonLat:
    """Bring ledger coordinates into the one system we store.

    ``crs`` is either one name for the whole batch or a per-row column (a ledger's
    坐标系 column), because a single spreadsheet often mixes points copied from
    GPS, 高德 and 百度. Blank cells (None, "", NaN) mean WGS-84, the default of
    handheld GPS. Work is grouped by distinct name, so the cost is a few array
    passes however many rows there are.
    """
    lon_a, lat_a = _as_lonlat(lon, lat)
    if crs is None or isinstance(crs, str):
        return _convert_all(lon_a, lat_a, _normalise_or_blank(crs))

    names = np.asarray(crs, dtype=object)
    if names.ndim == 0:
        return _convert_all(lon_a, lat_a, _normalise_or_blank(names.item()))
    try:
        names = np.broadcast_to(names, lon_a.shape)
    except ValueError as exc:
        raise GeoError(
            f"crs column has shape {names.shape} but coordinates have shape {lon_a.shape}"
        ) from exc

    # NaN is what an empty spreadsheet cell becomes; it is the only value unequal to itself.
    blank = np.equal(names, np.array(None, dtype=object)) | (names != names)
    text = np.char.strip(np.where(blank, "", names).astype(str))
    distinct, inverse = np.unique(text.ravel(), return_inverse=True)
    inverse = inverse.reshape(lon_a.shape)
    canonical = np.array([_normalise_or_blank(str(n)) for n in distinct], dtype=object)
    row_crs = canonical[inverse]

    out_lon = np.array(lon_a, dtype=np.float64)
    out_lat = np.array(lat_a, dtype=np.float64)
    for system, convert in _TO_WGS84.items():
        mask = row_crs == system
        if mask.any():
            out_lon[mask], out_lat[mask] = convert(lon_a[mask], lat_a[mask])
    return out_lon, out_lat


def _normalise_or_blank(name: object) -> str:
    if name is None or (isinstance(name, str) and not name.strip()):
        return "wgs84"
    if isinstance(name, float) and math.isnan(name):
        return "wgs84"
    return normalise_crs(str(name))


def in_china_bbox(lon: ArrayLike, lat: ArrayLike) -> BoolArray:
    """Cheap plausibility gate for ledger rows; it is a rectangle, so it admits some neighbours."""
    lon_a, lat_a = _as_lonlat(lon, lat)
    lon_min, lat_min, lon_max, lat_max = CHINA_BBOX
    return np.asarray(
        (lon_a >= lon_min) & (lon_a <= lon_max) & (lat_a >= lat_min) & (lat_a <= lat_max),
        dtype=np.bool_,
    )


def looks_swapped(lon: ArrayLike, lat: ArrayLike) -> BoolArray:
    """Catch 纬度,经度 pasted the wrong way round.

    Inside China latitudes (18-54) and longitudes (73-135) barely overlap, so a
    point that only lands in China once swapped is almost certainly swapped.
    """
    lon_a, lat_a = _as_lonlat(lon, lat)
    return in_china_bbox(lat_a, lon_a) & ~in_china_bbox(lon_a, lat_a)


def haversine_m(lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike) -> FloatArray:
    """Great-circle distance; sphere error (<0.5 %) is irrelevant at camera spacing."""
    lon1_a, lat1_a, lon2_a, lat2_a = np.broadcast_arrays(
        np.asarray(lon1, dtype=np.float64),
        np.asarray(lat1, dtype=np.float64),
        np.asarray(lon2, dtype=np.float64),
        np.asarray(lat2, dtype=np.float64),
    )
    phi1 = np.radians(lat1_a)
    phi2 = np.radians(lat2_a)
    d_phi = phi2 - phi1
    d_lambda = np.radians(lon2_a - lon1_a)
    h = np.sin(d_phi / 2.0) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(d_lambda / 2.0) ** 2
    # Rounding can push h a hair past 1 for antipodal points; arcsin would return NaN.
    return np.asarray(
        2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))), dtype=np.float64
    )
