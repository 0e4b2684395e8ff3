"""The web map's data endpoints: the cameras layer (clusters or points) and the page's own
settings (who is signed in, which tiles). HTTP in, `camera_registry.mapgrid` out; no SQL here."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from api import params
from api.auth import READERS, STREAMERS, WRITERS
from api.coverage import STARTERS
from api.health import PROBERS
from api.responses import json_response
from api.routes import BBOX, LEVELS, REGION_PREFIX, Param, RouteTable, caller, integer, listed
from api.state import MAPGRID, SETTINGS
from camera_registry.errors import BadRequest, FieldError
from camera_registry.store.cameras import level_filter
from camera_registry.store.mapgrid import MAP_STATUSES, MAX_ZOOM, MapQuery

ROUTES = RouteTable()

MAP_PARAMS = (
    Param("bbox", "query", "minlon,minlat,maxlon,maxlat (WGS-84)", BBOX, required=True),
    Param("zoom", "query", f"web-map zoom 0-{MAX_ZOOM}", integer(0, MAX_ZOOM), required=True),
    Param("level", "query", "comma-separated levels: 1,2,3,9", LEVELS),
    Param("status", "query", f"comma-separated: {','.join(MAP_STATUSES)}", listed(*MAP_STATUSES)),
    Param("region", "query", "region-code prefix (2-6 digits), e.g. 1401", REGION_PREFIX),
)


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"bad query parameter {field}: {message}", [FieldError(field, message)])


def map_query(q: Mapping[str, str]) -> MapQuery:
    if "bbox" not in q:
        raise _bad("bbox", "required: minlon,minlat,maxlon,maxlat")
    if "zoom" not in q:
        raise _bad("zoom", f"required: a whole number 0-{MAX_ZOOM}")
    bbox = params.floats(q, "bbox", 4)
    assert bbox is not None
    x0, y0, x1, y1 = bbox
    if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
        raise _bad("bbox", "use minlon,minlat,maxlon,maxlat with min < max (WGS-84 degrees)")
    zoom = params.integer(q, "zoom", 0, 0, MAX_ZOOM)
    region = q.get("region") or None
    if region is not None and (not region.isdigit() or not 2 <= len(region) <= 6):
        raise _bad("region", "use 2-6 leading digits of a region code, e.g. 14 or 140105")
    levels = tuple(level_filter(q["level"].split(","))) if q.get("level") else ()
    statuses: tuple[str, ...] = ()
    if q.get("status"):
        statuses = tuple(q["status"].split(","))
        unknown = [s for s in statuses if s not in MAP_STATUSES]
        if unknown:
            raise _bad("status", f"unknown {unknown}; use {', '.join(MAP_STATUSES)}")
    return MapQuery((x0, y0, x1, y1), zoom, region, levels, statuses)


@ROUTES.route(
    "GET",
    "/api/v1/map/cameras",
    "Cameras layer: grid clusters (counts by status and level) or points at street zoom",
    READERS,
    params=MAP_PARAMS,
    responses={200: "mode clusters|points, total, items", 400: "bad parameter"},
    tag="map",
)
async def map_cameras(request: web.Request) -> web.Response:
    actor = caller(request)
    result = await request.app[MAPGRID].cameras(actor, map_query(request.query))
    return json_response(result, headers={"Cache-Control": "private, max-age=10"})


@ROUTES.route(
    "GET",
    "/api/v1/map/config",
    "What the web map needs: the caller's role and scope, what it may do, the base layer",
    READERS,
    responses={200: "role, scope, can, tiles"},
    tag="map",
)
async def map_config(request: web.Request) -> web.Response:
    actor = caller(request)
    s = request.app[SETTINGS]
    return json_response(
        {
            "name": actor.name,
            "role": actor.role.value,
            "scope": actor.scope,
            "can": {
                "edit": actor.role in WRITERS,
                "stream": actor.role in STREAMERS,
                "plan": True,  # everyone reads KPIs and coverage results
                "run_coverage": actor.role in STARTERS,
                "discovery": actor.role in WRITERS,
                # 视频质量诊断 on demand (POST /cameras/{id}/diagnose)
                "diagnose": actor.role in PROBERS,
            },
            "record_days_level1": s.record_days_level1,
            "tiles": {
                "url": s.map_tiles_url,
                "crs": s.map_tiles_crs,
                "attribution": s.map_tiles_attribution,
                "subdomains": s.map_tiles_subdomains,
            },
            "relay_protocols": sorted({p for r in s.relays for p in r.urls}),
        },
        headers={"Cache-Control": "no-store"},
    )
