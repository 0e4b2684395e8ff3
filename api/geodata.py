"""Planning geodata over HTTP: boundaries, villages and junctions as GeoJSON for the web map.

Handlers only parse parameters and shape GeoJSON; the SQL is in `camera_registry.geodata`. A
token's region scope narrows every query to its adcode / region_code prefix, so a 太原 planner
sees 太原's counties and villages only. Point lists are capped (`limit`) and say so with
`truncated`, because a province has tens of thousands of villages and a web map wants a
viewport's worth. Building GeoJSON for many features is CPU work, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import shapely
from aiohttp import web

from api import params
from api.auth import READERS
from api.problems import dumps
from api.routes import BBOX as BBOX_SCHEMA
from api.routes import REGION_PREFIX, Param, RouteTable, caller, enum, integer, number
from api.state import POOL
from camera_registry.actor import Actor
from camera_registry.errors import BadRequest, FieldError
from camera_registry.planning import geodata as gd

ROUTES = RouteTable()

GEOJSON = "application/geo+json"
DEFAULT_POINTS, MAX_POINTS = 5_000, 50_000
MAX_SIMPLIFY_M = 10_000.0
_M_PER_DEG = 111_320.0  # metres per degree of latitude (and of longitude at the equator)

ADCODE = {"type": "string", "pattern": "^[0-9]{6}$"}
BBOX = Param("bbox", "query", "minlon,minlat,maxlon,maxlat (WGS-84)", BBOX_SCHEMA)
REGION = Param("region", "query", "region-code prefix (2-6 digits), e.g. 1401", REGION_PREFIX)
LIMIT = Param(
    "limit",
    "query",
    f"most features (1-{MAX_POINTS}, default {DEFAULT_POINTS})",
    integer(1, MAX_POINTS),
)


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest(f"bad query parameter {name}: {message}", [FieldError(name, message)])


def _code(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name) or None
    if value is not None and (not value.isdigit() or not 2 <= len(value) <= 6):
        raise _bad(name, "use 2-6 leading digits of a region code, e.g. 14 or 140105")
    return value


def _bbox(query: Mapping[str, str]) -> gd.BBox | None:
    bbox = params.floats(query, "bbox", 4)
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
        raise _bad("bbox", "use minlon,minlat,maxlon,maxlat with min < max (WGS-84 degrees)")
    return (x0, y0, x1, y1)


def _prefix(actor: Actor, region: str | None) -> str | None:
    """The narrower of the token's scope and the asked region; None when they are disjoint."""
    scope = actor.scope or ""
    asked = region or ""
    if asked.startswith(scope):
        return asked
    if scope.startswith(asked):
        return scope
    return None


def _collection(features: list[str], **extra: Any) -> web.Response:
    head = dumps({"type": "FeatureCollection", **extra})[:-1]
    body = f'{head}, "features": [{",".join(features)}]}}'
    return web.Response(text=body, content_type=GEOJSON)


def _region_features(rows: list[gd.RegionRow], simplify_m: float) -> list[str]:
    geoms = np.asarray([r.boundary for r in rows], dtype=object)
    if simplify_m > 0 and len(geoms):
        geoms = shapely.simplify(geoms, simplify_m / _M_PER_DEG, preserve_topology=True)
    shapes = shapely.to_geojson(shapely.set_precision(geoms, 1e-6)).tolist() if len(geoms) else []
    return [
        f'{{"type": "Feature", "id": "{r.adcode}", "geometry": {g}, "properties": '
        + dumps(
            {
                "adcode": r.adcode,
                "name": r.name,
                "rank": r.rank,
                "parent": r.parent,
                "area_km2": round(r.area_km2, 3),
            }
        )
        + "}"
        for r, g in zip(rows, shapes, strict=True)
    ]


def _point_features(
    lon: np.ndarray, lat: np.ndarray, ids: np.ndarray, props: list[dict[str, Any]]
) -> list[str]:
    return [
        f'{{"type": "Feature", "id": {i}, "geometry": {{"type": "Point", "coordinates": '
        f'[{x:.7f}, {y:.7f}]}}, "properties": {json.dumps(p, ensure_ascii=False)}}}'
        for i, x, y, p in zip(ids.tolist(), lon.tolist(), lat.tolist(), props, strict=True)
    ]


def _num(value: float) -> float | None:
    return None if value != value else value


@ROUTES.route(
    "GET",
    "/api/v1/geodata/regions",
    "Region boundaries as GeoJSON (adcode, name, rank, parent, area_km2)",
    READERS,
    params=(
        Param("rank", "query", "province, city or county", enum(*gd.RANKS)),
        Param("parent", "query", "adcode of the enclosing region, e.g. 140100", ADCODE),
        BBOX,
        REGION,
        Param(
            "simplify",
            "query",
            f"simplification tolerance in metres (0-{MAX_SIMPLIFY_M:.0f}; default 0)",
            number(0, MAX_SIMPLIFY_M),
        ),
    ),
    responses={200: "a GeoJSON FeatureCollection"},
    tag="geodata",
)
async def list_regions(request: web.Request) -> web.Response:
    actor = caller(request)
    q = request.query
    rank = q.get("rank") or None
    if rank is not None and rank not in gd.RANKS:
        raise _bad("rank", f"use one of {', '.join(gd.RANKS)}")
    parent = q.get("parent") or None
    if parent is not None and not (len(parent) == 6 and parent.isdigit()):
        raise _bad("parent", "use a 6-digit adcode, e.g. 140100")
    simplify = params.floats(q, "simplify", 1)
    simplify_m = simplify[0] if simplify else 0.0
    if not 0 <= simplify_m <= MAX_SIMPLIFY_M:
        raise _bad("simplify", f"use 0-{MAX_SIMPLIFY_M:.0f} metres")
    bbox = _bbox(q)
    prefix = _prefix(actor, _code(q, "region"))
    if prefix is None:
        return _collection([])
    rows = await gd.regions(request.app[POOL], prefix, rank=rank, parent=parent, bbox=bbox)
    return _collection(await asyncio.to_thread(_region_features, rows, simplify_m))


@ROUTES.route(
    "GET",
    "/api/v1/geodata/regions/at",
    "The region containing a point, finest first (the county under a map click)",
    READERS,
    params=(
        Param("lon", "query", "WGS-84 longitude", {"type": "number"}, required=True),
        Param("lat", "query", "WGS-84 latitude", {"type": "number"}, required=True),
    ),
    responses={
        200: "region: {adcode, name, rank, parent}, or null when no loaded boundary in the "
        "caller's scope holds the point"
    },
    tag="geodata",
)
async def region_at(request: web.Request) -> web.Response:
    actor = caller(request)
    q = request.query
    for name in ("lon", "lat"):
        if name not in q:
            raise _bad(name, "required: WGS-84 degrees")
    [lon] = params.floats(q, "lon", 1) or [0.0]
    [lat] = params.floats(q, "lat", 1) or [0.0]
    if not -180 <= lon <= 180:
        raise _bad("lon", "use WGS-84 degrees -180..180")
    if not -90 <= lat <= 90:
        raise _bad("lat", "use WGS-84 degrees -90..90")
    row = await gd.region_at(request.app[POOL], lon, lat, actor.scope or "")
    # No region is an answer, not an error: the page asks at every registering click.
    region = (
        None
        if row is None
        else {"adcode": row.adcode, "name": row.name, "rank": row.rank, "parent": row.parent}
    )
    body = {"lon": lon, "lat": lat, "region": region}
    return web.Response(text=dumps(body), content_type="application/json")


def _points_query(request: web.Request) -> tuple[str | None, gd.BBox | None, int]:
    actor = caller(request)
    q = request.query
    limit = params.integer(q, "limit", DEFAULT_POINTS, 1, MAX_POINTS)
    return _prefix(actor, _code(q, "region")), _bbox(q), limit


@ROUTES.route(
    "GET",
    "/api/v1/geodata/villages",
    "Villages as GeoJSON points (capped; `truncated` says when more matched)",
    READERS,
    params=(BBOX, REGION, LIMIT),
    responses={200: "a GeoJSON FeatureCollection with `truncated`"},
    tag="geodata",
)
async def list_villages(request: web.Request) -> web.Response:
    prefix, bbox, limit = _points_query(request)
    if prefix is None:
        return _collection([], truncated=False, limit=limit)
    v = await gd.villages_in(request.app[POOL], prefix, bbox=bbox, limit=limit + 1)
    n = min(len(v), limit)

    def build() -> list[str]:
        props = [
            {"name": name, "region_code": code, "population": _num(pop)}
            for name, code, pop in zip(
                v.name[:n].tolist(), v.region_code[:n].tolist(), v.population[:n].tolist(),
                strict=True,
            )
        ]  # fmt: skip
        return _point_features(v.lon[:n], v.lat[:n], v.id[:n], props)

    return _collection(await asyncio.to_thread(build), truncated=len(v) > limit, limit=limit)


@ROUTES.route(
    "GET",
    "/api/v1/geodata/junctions",
    "Road junctions as GeoJSON points (capped; `truncated` says when more matched)",
    READERS,
    params=(BBOX, REGION, LIMIT),
    responses={200: "a GeoJSON FeatureCollection with `truncated`"},
    tag="geodata",
)
async def list_junctions(request: web.Request) -> web.Response:
    prefix, bbox, limit = _points_query(request)
    if prefix is None:
        return _collection([], truncated=False, limit=limit)
    j = await gd.junctions_in(request.app[POOL], prefix, bbox=bbox, limit=limit + 1)
    n = min(len(j), limit)

    def build() -> list[str]:
        props = [
            {"name": name, "region_code": code, "kind": kind, "weight": _num(w)}
            for name, code, kind, w in zip(
                j.name[:n].tolist(), j.region_code[:n].tolist(), j.kind[:n].tolist(),
                j.weight[:n].tolist(), strict=True,
            )
        ]  # fmt: skip
        return _point_features(j.lon[:n], j.lat[:n], j.id[:n], props)

    return _collection(await asyncio.to_thread(build), truncated=len(j) > limit, limit=limit)


@ROUTES.route(
    "GET",
    "/api/v1/geodata/datasets",
    "Loaded geodata sets (kind, source, features, checksum, loaded_at)",
    READERS,
    responses={200: "the data sets"},
    tag="geodata",
)
async def list_datasets(request: web.Request) -> web.Response:
    rows = await gd.datasets(request.app[POOL])
    body = {
        "items": [
            {
                "kind": d.kind,
                "source": d.source,
                "features": d.features,
                "checksum": d.checksum,
                "loaded_at": d.loaded_at.isoformat(),
            }
            for d in rows
        ]
    }
    return web.Response(text=dumps(body), content_type="application/json")
