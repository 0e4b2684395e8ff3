"""Camera endpoints: translate HTTP to registry calls and back; no SQL here."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import params
from api.auth import READERS, WRITERS
from api.models import CameraCreate, CameraPatch, parse_body
from api.responses import json_response, json_text_response
from api.routes import (
    BBOX,
    LEVELS,
    LONLAT,
    REGION_PREFIX,
    UUID,
    Param,
    RouteTable,
    caller,
    integer,
    listed,
    text,
)
from api.schemas import CameraOut, CameraPage
from api.state import POOL, REGISTRY, SETTINGS
from camera_registry.errors import BadRequest, FieldError, PreconditionRequired
from camera_registry.store.cameras import STATUSES
from camera_registry.store.placement import CountyCheck

ROUTES = RouteTable()

FILTERS = (
    Param("region", "query", "region-code prefix (2-6 digits), e.g. 1401", REGION_PREFIX),
    Param("level", "query", "comma-separated levels: 1,2,3,9", LEVELS),
    Param("status", "query", "comma-separated: unknown,online,offline,degraded", listed(*STATUSES)),
    Param("bbox", "query", "minlon,minlat,maxlon,maxlat (WGS-84)", BBOX),
    Param("q", "query", "search in name, address, GB ID prefix", text(100)),
)
ETAG = {"type": "string", "pattern": '^(W/)?"?[0-9]{1,18}"?$'}
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
ID = Param("id", "path", "camera UUID", UUID, required=True)


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(request: web.Request, *, required: bool) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        if required:
            raise PreconditionRequired(
                "send If-Match with the camera's ETag (from GET) so concurrent edits are not lost",
                [FieldError("If-Match", "required")],
            )
        return None
    value = raw.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise BadRequest(
            'If-Match must be the ETag a GET returned, e.g. "3"',
            [FieldError("If-Match", "not a camera version")],
        )
    return int(value)


async def _with_warnings(request: web.Request, cam: dict[str, Any]) -> dict[str, Any]:
    """The written camera, plus `warnings` when it lies far outside its county (stored anyway:
    boundaries may be rough, a camera may stand on the line; the technician decides)."""
    found = await CountyCheck(request.app[POOL]).outside(
        [cam["region_code"]], [cam["lon"]], [cam["lat"]]
    )
    return {**cam, "warnings": [w.as_dict() for w in found]} if found else cam


@ROUTES.route(
    "GET",
    "/api/v1/cameras",
    "List cameras (filters, bbox, nearest, cursor pagination)",
    READERS,
    params=(
        *FILTERS,
        Param("near", "query", "lon,lat: return the k nearest cameras (metres)", LONLAT),
        Param("k", "query", "how many nearest (1-1000, default 10)", integer(1, 1000)),
        Param("limit", "query", "page size (1-10000)", integer(1, 10_000)),
        Param("cursor", "query", "next_cursor of the previous page", CURSOR),
    ),
    responses={200: "a page of cameras"},
    returns=CameraPage,
)
async def list_cameras(request: web.Request) -> web.Response:
    actor = caller(request)
    settings = request.app[SETTINGS]
    q = request.query
    f = params.camera_filter(q)
    near = params.floats(q, "near", 2)
    if near is not None:
        k = params.integer(q, "k", 10, 1, 1000)
        text = await request.app[REGISTRY].nearest_json(actor, near[0], near[1], k, f)
        return json_text_response(text)
    limit = params.integer(q, "limit", settings.default_page_size, 1, settings.max_page_size)
    body = await request.app[REGISTRY].page_json(actor, f, limit=limit, cursor=q.get("cursor"))
    return json_text_response(body)


@ROUTES.route(
    "POST",
    "/api/v1/cameras",
    "Register a camera",
    WRITERS,
    body=CameraCreate,
    responses={201: "the camera", 409: "duplicate gb_id", 422: "invalid fields"},
    returns=CameraOut,
)
async def create_camera(request: web.Request) -> web.Response:
    actor = caller(request)
    body = await parse_body(request, CameraCreate)
    cam = await request.app[REGISTRY].create(actor, body.values(patch=False), body.crs)
    return json_response(
        await _with_warnings(request, cam),
        201,
        ETag=etag(cam["version"]),
        Location=f"/api/v1/cameras/{cam['id']}",
    )


@ROUTES.route(
    "GET",
    "/api/v1/cameras/{id}",
    "One camera",
    READERS,
    params=(ID,),
    responses={200: "the camera", 404: "not found or outside your scope"},
    returns=CameraOut,
)
async def get_camera(request: web.Request) -> web.Response:
    actor = caller(request)
    text, version = await request.app[REGISTRY].get_json(actor, request.match_info["id"])
    return json_text_response(text, ETag=etag(version))


@ROUTES.route(
    "PATCH",
    "/api/v1/cameras/{id}",
    "Change a camera (JSON merge patch; If-Match required)",
    WRITERS,
    params=(ID, Param("If-Match", "header", "the ETag from GET", ETAG, required=True)),
    body=CameraPatch,
    responses={200: "the camera", 412: "stale version", 428: "no If-Match"},
    returns=CameraOut,
)
async def patch_camera(request: web.Request) -> web.Response:
    actor = caller(request)
    version = if_match(request, required=True)
    assert version is not None
    body = await parse_body(request, CameraPatch)
    cam = await request.app[REGISTRY].update(
        actor, request.match_info["id"], version, body.values(patch=True), body.crs
    )
    return json_response(await _with_warnings(request, cam), ETag=etag(cam["version"]))


@ROUTES.route(
    "DELETE",
    "/api/v1/cameras/{id}",
    "Remove a camera",
    WRITERS,
    params=(ID, Param("If-Match", "header", "optional ETag guard", ETAG)),
    responses={204: "removed", 404: "not found"},
)
async def delete_camera(request: web.Request) -> web.Response:
    actor = caller(request)
    await request.app[REGISTRY].delete(
        actor, request.match_info["id"], if_match(request, required=False)
    )
    return web.Response(status=204)


@ROUTES.route(
    "GET",
    "/api/v1/regions/{code}/summary",
    "Camera counts for a region-code prefix",
    READERS,
    params=(Param("code", "path", "region-code prefix (2-6 digits)", REGION_PREFIX, True),),
    responses={200: "total, by_level, by_status"},
    tag="regions",
)
async def region_summary(request: web.Request) -> web.Response:
    actor = caller(request)
    code = request.match_info["code"]
    if not code.isdigit() or not 2 <= len(code) <= 6:
        raise BadRequest("bad region code", [FieldError("code", "use 2-6 digits, e.g. 1401")])
    return json_response(await request.app[REGISTRY].summary(actor, code))
