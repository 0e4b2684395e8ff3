"""Stream health over HTTP: one camera's status and history, probe-now, and KPIs."""

from __future__ import annotations

import uuid

from aiohttp import web

from camera_registry.actor import Role
from camera_registry.errors import BadRequest, FieldError, NotFound
from camera_registry.registry import effective_prefix, region_range
from health import store
from health.kpi import meets_target

from . import params
from .auth import READERS, require
from .cameras import ID, json_response
from .routes import Param, route
from .state import POOL, REGISTRY, WORKER

PROBERS = (Role.TECHNICIAN, Role.COMMANDER, Role.ADMIN)


@route(
    "GET",
    "/api/v1/cameras/{id}/health",
    "Status, since, last probe (timings, failure), transition history",
    READERS,
    params=(ID,),
    responses={200: "health"},
    tag="health",
)
async def camera_health(request: web.Request) -> web.Response:
    actor = require(request, READERS)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])  # scope check
    health = await store.camera_health(request.app[POOL], uuid.UUID(cam["id"]))
    if health is None:
        raise NotFound("this camera has not been scheduled for probing yet")
    return json_response({"camera_id": cam["id"], **health})


@route(
    "GET",
    "/api/v1/cameras/{id}/snapshot",
    "The last thumbnail from frame diagnosis (JPEG)",
    READERS,
    params=(ID,),
    responses={200: "image/jpeg", 404: "no snapshot yet"},
    tag="health",
)
async def snapshot(request: web.Request) -> web.Response:
    actor = require(request, READERS)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])
    jpeg = await store.thumbnail(request.app[POOL], uuid.UUID(cam["id"]))
    if jpeg is None:
        raise NotFound("no snapshot yet: one is kept at the camera's next frame diagnosis")
    return web.Response(
        body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"}
    )


@route(
    "POST",
    "/api/v1/cameras/{id}/probe",
    "Probe a camera now and return the result",
    PROBERS,
    params=(ID,),
    responses={200: "the probe and the new status"},
    tag="health",
)
async def probe_now(request: web.Request) -> web.Response:
    actor = require(request, PROBERS)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])
    result = await request.app[WORKER].probe_now(uuid.UUID(cam["id"]))
    return json_response(result)


@route(
    "GET",
    "/api/v1/kpis",
    "在线率 / 完好率 / 联网率 by region prefix (and level)",
    READERS,
    params=(
        Param("region", "query", "region-code prefix, e.g. 14 or 1401 (default: scope)"),
        Param(
            "group",
            "query",
            "digits of the region code to group by (2, 4 or 6)",
            {"type": "integer"},
        ),
        Param("by_level", "query", "1 to split each region by level"),
    ),
    responses={200: "KPI rows"},
    tag="health",
)
async def kpis(request: web.Request) -> web.Response:
    actor = require(request, READERS)
    q = request.query
    region = q.get("region") or None
    if region is not None and (not region.isdigit() or not 2 <= len(region) <= 6):
        raise BadRequest("bad region", [FieldError("region", "use 2-6 digits, e.g. 1401")])
    prefix = effective_prefix(actor, region)
    if prefix == "":
        return json_response({"items": []})
    group = params.integer(q, "group", len(prefix) if prefix else 2, 2, 6)
    by_level = q.get("by_level", "0") in ("1", "true", "yes")
    low, high = region_range(prefix) if prefix else ("0", ":")
    rows = await store.kpi_rows(request.app[POOL], low, high, prefix_len=group, by_level=by_level)
    items = [
        {
            "region": r.region,
            "level": r.level,
            "registered": r.registered,
            "online": r.online,
            "degraded": r.degraded,
            "offline": r.offline,
            "unknown": r.unknown,
            "flapping": r.flapping,
            "networked": r.networked,
            "online_rate": r.online_rate,
            "intact_rate": r.intact_rate,
            "networked_rate": r.networked_rate,
            "meets_target": meets_target(r),
        }
        for r in rows
    ]
    return json_response({"items": items})
