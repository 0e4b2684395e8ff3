"""Metric projections for coverage work.

Footprints, grid cells and areas are all computed in metres: doing geometry in
degrees stretches east-west distances by 1/cos(latitude) (about 25 % in Beijing),
which would make every sector the wrong shape. A Lambert azimuthal equal-area
projection centred on the region keeps areas exact everywhere and distances
within a fraction of a percent across a county, which is all coverage needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from pyproj import CRS, Transformer

from geo.errors import GeoError

__all__ = [
    "GK3_FIRST_EPSG",
    "GK3_FIRST_ZONE",
    "GK3_LAST_ZONE",
    "LocalProjection",
    "equal_area_km2",
    "gauss_kruger_3deg_epsg",
]

FloatArray = NDArray[np.float64]

# EPSG:4513 is "CGCS2000 / 3-degree Gauss-Kruger zone 25" (central meridian 75°E) and the
# series runs without gaps to EPSG:4533, zone 45 (135°E); these codes carry the zone number
# in the false easting, which is what Chinese survey drawings use.
GK3_FIRST_EPSG: Final = 4513
GK3_FIRST_ZONE: Final = 25
GK3_LAST_ZONE: Final = 45


def _check_centre(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GeoError(f"projection centre must be finite, got lon={lon!r}, lat={lat!r}")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise GeoError(
            f"projection centre lon={lon}, lat={lat} is not a WGS-84 point; "
            "check that longitude comes first"
        )


class LocalProjection:
    """An equal-area plane tangent at a region's centre.

    Build one per region (usually at its centroid) and reuse it: the pyproj
    transformers are created once here because constructing them costs far more
    than transforming a million points.
    """

    def __init__(self, lon0: float, lat0: float) -> None:
        lon0 = float(lon0)
        lat0 = float(lat0)
        _check_centre(lon0, lat0)
        self.lon0: Final = lon0
        self.lat0: Final = lat0
        # GRS80 is the CGCS2000 ellipsoid (identical to WGS-84's to 0.1 mm).
        self.crs: Final = CRS.from_proj4(
            f"+proj=laea +lat_0={lat0!r} +lon_0={lon0!r} +x_0=0 +y_0=0 +ellps=GRS80 +units=m"
        )
        geographic = CRS.from_epsg(4326)
        self._fwd: Final = Transformer.from_crs(geographic, self.crs, always_xy=True)
        self._inv: Final = Transformer.from_crs(self.crs, geographic, always_xy=True)

    def __repr__(self) -> str:
        return f"LocalProjection(lon0={self.lon0!r}, lat0={self.lat0!r})"

    def forward(self, lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """WGS-84 degrees to metres east/north of the centre."""
        lon_a, lat_a = np.broadcast_arrays(
            np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        )
        x, y = self._fwd.transform(lon_a, lat_a)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def inverse(self, x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Metres back to WGS-84, for drawing gaps and proposals on a map."""
        x_a, y_a = np.broadcast_arrays(
            np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        )
        lon, lat = self._inv.transform(x_a, y_a)
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def forward_geometry(self, geom: shapely.Geometry) -> shapely.Geometry:
        """Project zone polygons (or arrays of them) without a loop over vertices."""
        return shapely.transform(geom, self._transform_xy(self._fwd))

    def inverse_geometry(self, geom: shapely.Geometry) -> shapely.Geometry:
        """Unproject gap polygons and sectors for GeoJSON output."""
        return shapely.transform(geom, self._transform_xy(self._inv))

    @staticmethod
    def _transform_xy(transformer: Transformer) -> Callable[[FloatArray], FloatArray]:
        def apply(coords: FloatArray) -> FloatArray:
            a, b = transformer.transform(coords[:, 0], coords[:, 1])
            return np.column_stack([a, b])

        return apply

    @classmethod
    def for_geometry(cls, geom_lonlat: shapely.Geometry) -> LocalProjection:
        """Centre on the geometry so distortion is smallest where the cameras are."""
        if shapely.is_empty(geom_lonlat):
            raise GeoError("cannot centre a projection on an empty geometry")
        min_lon, min_lat, max_lon, max_lat = shapely.total_bounds(geom_lonlat)
        return cls((min_lon + max_lon) / 2.0, (min_lat + max_lat) / 2.0)


def gauss_kruger_3deg_epsg(lon: float) -> int:
    """EPSG code of the CGCS2000 3-degree Gauss-Krüger zone that contains ``lon``.

    Survey-grade drawings from design institutes arrive in these zones, so this
    picks the CRS to read them with. Zone n is centred on 3n degrees; ties at a zone
    boundary go east (half-up), which is the surveyors' convention, rather than
    Python's round-half-even.
    """
    lon = float(lon)
    if not math.isfinite(lon):
        raise GeoError(f"longitude must be finite, got {lon!r}")
    zone = math.floor(lon / 3.0 + 0.5)
    if not GK3_FIRST_ZONE <= zone <= GK3_LAST_ZONE:
        raise GeoError(
            f"longitude {lon} is outside China's 3-degree Gauss-Krüger zones "
            f"({GK3_FIRST_ZONE}..{GK3_LAST_ZONE}, about 73.5°E..136.5°E); "
            "is it a latitude or a projected coordinate?"
        )
    return GK3_FIRST_EPSG + zone - GK3_FIRST_ZONE


def equal_area_km2(polygon_lonlat: shapely.Geometry) -> float:
    """True area of a WGS-84 polygon (or multipolygon, or array of them, summed).

    Shapely's ``area`` on degrees is meaningless; LAEA preserves area at any
    distance from its centre, so one projection serves the whole input.
    """
    geoms = np.asarray(polygon_lonlat, dtype=object)
    if geoms.size == 0 or bool(np.all(shapely.is_empty(geoms))):
        return 0.0
    projection = LocalProjection.for_geometry(geoms)
    projected = projection.forward_geometry(geoms)
    return float(np.sum(shapely.area(projected))) / 1e6
