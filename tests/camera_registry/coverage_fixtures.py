"""A hand-checkable coverage world, built in metres around a point of 太原 and stored in WGS-84.

County 140105 (小店区, urban) is a 2 km square centred on the projection centre, so the 100 m
grid has 20 x 20 = 400 cells (centres at ±50, ±150, … ±950 m) and every count below can be
worked out on paper:

* camera A at (0, 0), level 1, no azimuth: an assumed disc of the default policy's level-1
  radius (80 m) — covers the four cells at (±50, ±50) (70.7 m away), not (±150, ±50) (158 m);
* camera B at (-520, -500), level 2, facing north, HFOV 90°, 120 m: covers the cell at
  (-550, -450) only (58 m, bearing -31°);
* camera C at (1010, 0), in the neighbouring county 140106, disc of 80 m: reaches across the
  border to the cells at (950, ±50) (78 m).

So 7 of 400 cells are covered. Villages: (0, 149) is within the 150 m entrance radius of A,
(0, 151) and (900, 900) are not. Junctions: (0, 70) is in A's disc, (-520, -400) in B's
sector, (-520, -620) behind B.
"""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
import shapely

from geo.project import LocalProjection

LON0, LAT0 = 112.55, 37.80
PROJ = LocalProjection(LON0, LAT0)
HALF = 1000.0

_serial = itertools.count(1)


def lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = PROJ.inverse(x, y)
    return float(lon), float(lat)


def square(cx: float, cy: float, half: float) -> shapely.Geometry:
    ring = [
        (cx - half, cy - half),
        (cx + half, cy - half),
        (cx + half, cy + half),
        (cx - half, cy + half),
    ]
    return shapely.Polygon([lonlat(x, y) for x, y in ring])


async def add_region(
    conn: asyncpg.Connection, adcode: str, name: str, poly: shapely.Geometry
) -> None:
    x0, y0, x1, y1 = shapely.bounds(poly).tolist()
    await conn.execute(
        """INSERT INTO geo_regions (adcode, name, parent, rank, boundary, bbox, area_km2, source)
           VALUES ($1, $2, $3, 'county', $4, $5, $6, 'test')""",
        adcode,
        name,
        adcode[:4] + "00",
        shapely.to_wkb(poly),
        asyncpg.Box((x1, y1), (x0, y0)),
        4.0,
    )


async def add_camera(
    conn: asyncpg.Connection, region: str, x: float, y: float, level: int, **cols: Any
) -> None:
    lon, lat = lonlat(x, y)
    gb = f"{region}00001320{next(_serial):06d}"
    keys = ["gb_id", "name", "level", "lon", "lat", "region_code", *cols]
    values = [gb, f"cam {gb[-4:]}", level, lon, lat, region, *cols.values()]
    await conn.execute(
        f"INSERT INTO cameras ({', '.join(keys)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(keys)))})",
        *values,
    )


async def add_point(conn: asyncpg.Connection, table: str, name: str, x: float, y: float) -> None:
    lon, lat = lonlat(x, y)
    await conn.execute(
        f"INSERT INTO {table} (region_code, name, lon, lat, source) "
        "VALUES ('140105', $1, $2, $3, 'test')",
        name,
        lon,
        lat,
    )


async def build_world(conn: asyncpg.Connection) -> None:
    await add_region(conn, "140105", "小店区", square(0.0, 0.0, HALF))
    # A rural county 300 km north (阳高县, 大同市), for scope checks: no cameras, no villages.
    await add_region(conn, "140221", "阳高县", square(0.0, 300_000.0, HALF))
    await conn.execute(
        "INSERT INTO geo_datasets (source, kind, features, checksum) "
        "VALUES ('test', 'regions', 2, 'abc')"
    )
    await add_camera(conn, "140105", 0.0, 0.0, 1)
    await add_camera(
        conn, "140105", -520.0, -500.0, 2, azimuth=0.0, hfov=90.0, max_view_distance=120.0
    )
    await add_camera(conn, "140106", 1010.0, 0.0, 1)
    for name, (x, y) in {
        "inside 149 m": (0.0, 149.0),
        "outside 151 m": (0.0, 151.0),
        "far": (900.0, 900.0),
    }.items():
        await add_point(conn, "geo_villages", name, x, y)
    for name, (x, y) in {
        "J-disc": (0.0, 70.0),
        "J-sector": (-520.0, -400.0),
        "J-behind": (-520.0, -620.0),
    }.items():
        await add_point(conn, "geo_junctions", name, x, y)
