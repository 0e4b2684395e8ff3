"""The web map's cameras layer: clusters from the pre-aggregated grid, points when few.

`map_grid` (migration 0010) holds camera counts per cell × region × level × status at three
cell sizes, kept exact by triggers. A viewport request sums the rows of the coarsest tier
that still gives several cells per cluster, so the work is bounded by the number of grid
rows in view, not by the number of cameras. At street zoom, when the grid says the viewport
holds few enough cameras, the cameras themselves are returned from the GiST index.

The caller's region scope is applied in every statement (`region_code` range), exactly as the
registry does, so out-of-scope cameras are neither counted nor shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import asyncpg

from camera_registry.actor import Actor
from camera_registry.store.cameras import effective_prefix, region_range

MAP_STATUSES = ("online", "degraded", "offline", "unknown", "flapping")
LEVELS = (1, 2, 3, 9)
# Coarsest first: (tier, cell size in degrees), as in migration 0010's map_grid_tiers().
TIERS = ((3, 0.5), (2, 0.1), (1, 0.02), (0, 0.005))
MAX_ZOOM = 22
POINTS_FROM_ZOOM = 14  # below this zoom, always clusters
MAX_POINTS = 2000  # above this many cameras in view, clusters even at street zoom
CLUSTER_PX = 64  # target cluster spacing on screen, in pixels of 256-px web-mercator tiles


@dataclass(frozen=True, slots=True)
class MapQuery:
    bbox: tuple[float, float, float, float]  # minlon, minlat, maxlon, maxlat (WGS-84)
    zoom: int
    region: str | None = None
    levels: tuple[int, ...] = ()
    statuses: tuple[str, ...] = ()


def cluster_size_deg(zoom: int) -> float:
    """Degrees of longitude spanned by CLUSTER_PX pixels at this zoom."""
    return 360.0 * CLUSTER_PX / (256.0 * 2**zoom)


def choose_tier(zoom: int) -> tuple[int, float, int]:
    """(tier, tier cell size, k): a cluster is k×k cells of the coarsest tier that fits.

    The coarsest tier keeps the rows summed per request few (a province viewport reads about
    one row per 0.5° cell × region × level × status)."""
    want = cluster_size_deg(zoom)
    for tier, size in TIERS:
        if size <= want * 1.25:  # clusters up to 80 px apart rather than sum 5× the rows
            return tier, size, max(1, round(want / size))
    tier, size = TIERS[-1]
    return tier, size, 1


class _Args:
    def __init__(self) -> None:
        self.values: list[Any] = []
        self.where: list[str] = []

    def add(self, sql: str, *args: Any) -> None:
        start = len(self.values)
        self.values.extend(args)
        self.where.append(sql.format(*(f"${start + i + 1}" for i in range(len(args)))))

    def sql(self) -> str:
        return " AND ".join(self.where) if self.where else "TRUE"


def _filters(actor: Actor, q: MapQuery) -> _Args | None:
    a = _Args()
    prefix = effective_prefix(actor, q.region)
    if prefix == "":
        return None
    if prefix:
        a.add("region_code >= {0} AND region_code < {1}", *region_range(prefix))
    if q.levels:
        a.add("level = ANY({0}::smallint[])", list(q.levels))
    if q.statuses:
        a.add("status = ANY({0}::text[])", list(q.statuses))
    return a


def _empty(q: MapQuery, mode: str, cell: float | None) -> dict[str, Any]:
    return {"mode": mode, "zoom": q.zoom, "cell_deg": cell, "total": 0, "items": []}


class MapGrid:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def cameras(self, actor: Actor, q: MapQuery) -> dict[str, Any]:
        """Clusters (mode "clusters") or cameras (mode "points") in the viewport."""
        if q.zoom >= POINTS_FROM_ZOOM:
            total = await self._count(actor, q)
            if total <= MAX_POINTS:
                return await self._points(actor, q, total)
        return await self._clusters(actor, q)

    async def _count(self, actor: Actor, q: MapQuery) -> int:
        a = _filters(actor, q)
        if a is None:
            return 0
        size = TIERS[-1][1]
        _in_cells(a, q.bbox, size, 0)
        n = await self.pool.fetchval(
            f"SELECT coalesce(sum(n), 0) FROM map_grid WHERE {a.sql()}", *a.values
        )
        return int(n)

    async def _points(self, actor: Actor, q: MapQuery, total: int) -> dict[str, Any]:
        a = _filters(actor, q)
        if a is None:
            return _empty(q, "points", None)
        a.add("geom <@ box(point({0}, {1}), point({2}, {3}))", *q.bbox)
        a.values.append(MAX_POINTS)
        rows = await self.pool.fetch(
            f"""SELECT id, gb_id, name, level, status, lon, lat, azimuth, hfov,
                       max_view_distance
                  FROM cameras WHERE {a.sql()} ORDER BY gb_id LIMIT ${len(a.values)}""",
            *a.values,
        )
        items = [
            {
                "id": str(r["id"]),
                "gb_id": r["gb_id"],
                "name": r["name"],
                "level": r["level"],
                "status": r["status"],
                "lon": r["lon"],
                "lat": r["lat"],
                "azimuth": None if r["azimuth"] is None else round(r["azimuth"], 2),
                "hfov": None if r["hfov"] is None else round(r["hfov"], 2),
                "range_m": None
                if r["max_view_distance"] is None
                else round(r["max_view_distance"], 1),
            }
            for r in rows
        ]
        return {
            "mode": "points",
            "zoom": q.zoom,
            "cell_deg": None,
            "total": len(items),
            "items": items,
        }

    async def _clusters(self, actor: Actor, q: MapQuery) -> dict[str, Any]:
        tier, size, k = choose_tier(q.zoom)
        cell = size * k
        a = _filters(actor, q)
        if a is None:
            return _empty(q, "clusters", cell)
        _in_cells(a, q.bbox, size, tier)
        n = len(a.values)
        status_sums = ", ".join(
            f"sum(n) FILTER (WHERE status = '{s}') AS s_{s}" for s in MAP_STATUSES
        )
        level_sums = ", ".join(f"sum(n) FILTER (WHERE level = {lv}) AS l_{lv}" for lv in LEVELS)
        rows = await self.pool.fetch(
            f"""SELECT floor(cx::float8 / ${n + 1})::integer AS gx,
                       floor(cy::float8 / ${n + 1})::integer AS gy,
                       sum(n) AS n, sum(sum_lon) AS sx, sum(sum_lat) AS sy,
                       {status_sums}, {level_sums}
                  FROM map_grid WHERE {a.sql()}
                 GROUP BY 1, 2 HAVING sum(n) > 0 ORDER BY 1, 2""",
            *a.values,
            k,
        )
        items = []
        total = 0
        for r in rows:
            count = int(r["n"])
            total += count
            items.append(
                {
                    "lon": round(r["sx"] / count, 6),
                    "lat": round(r["sy"] / count, 6),
                    "count": count,
                    "status": {s: int(r[f"s_{s}"] or 0) for s in MAP_STATUSES},
                    "level": {str(lv): int(r[f"l_{lv}"] or 0) for lv in LEVELS},
                    "cell": [
                        round(r["gx"] * cell, 6),
                        round(r["gy"] * cell, 6),
                        round((r["gx"] + 1) * cell, 6),
                        round((r["gy"] + 1) * cell, 6),
                    ],
                }
            )
        return {
            "mode": "clusters",
            "zoom": q.zoom,
            "cell_deg": round(cell, 6),
            "total": total,
            "items": items,
        }


def _in_cells(a: _Args, bbox: tuple[float, float, float, float], size: float, tier: int) -> None:
    """Restrict to the grid rows of `tier` whose cells meet the bbox (an index range)."""
    x0, y0, x1, y1 = bbox
    a.add(
        "tier = {0} AND cx BETWEEN {1} AND {2} AND cy BETWEEN {3} AND {4}",
        tier,
        math.floor(x0 / size),
        math.floor(x1 / size),
        math.floor(y0 / size),
        math.floor(y1 / size),
    )
