"""Admin API for upper platforms: `/api/v1/gb28181/upstreams` (+ `/{id}` with live state).

The password is write-only: accepted on POST/PATCH, sealed, never returned. Upstreams are
deployment-wide (they see whole regions), so a region-scoped admin may not manage them.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.auth import ADMINS
from api.cascade.manager import CASCADE
from api.models import parse_body
from api.responses import json_response
from api.routes import UUID, Param, RouteTable, caller
from camera_registry.actor import Actor
from camera_registry.config import UpstreamSettings
from camera_registry.errors import BadRequest, FieldError, Forbidden, ValidationFailed

ROUTES = RouteTable()
_ID = (Param("id", "path", "upstream id", UUID, required=True),)


def _unscoped(actor: Actor) -> None:
    if actor.scope is not None:
        raise Forbidden(
            "upper platforms see whole regions; only an admin without a region scope manages them"
        )


def _view(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    return {**row, **request.app[CASCADE].status(row["id"])}


@ROUTES.route(
    "GET",
    "/api/v1/gb28181/upstreams",
    "List upper platforms we cascade to, with state, last error, timings and counters",
    ADMINS,
    responses={200: "upstreams"},
    tag="gb28181",
)
async def list_upstreams(request: web.Request) -> web.Response:
    _unscoped(caller(request))
    rows = await request.app[CASCADE].store.all()
    return json_response({"items": [_view(request, r) for r in rows]})


@ROUTES.route(
    "POST",
    "/api/v1/gb28181/upstreams",
    "Add an upper platform (registration starts at once; the password is sealed)",
    ADMINS,
    body=UpstreamSettings,
    responses={
        201: "the upstream",
        400: "the body is not a JSON object",
        422: "invalid fields (the problem names each)",
    },
    tag="gb28181",
)
async def create_upstream(request: web.Request) -> web.Response:
    actor = caller(request)
    _unscoped(actor)
    settings = await parse_body(request, UpstreamSettings)
    cascade = request.app[CASCADE]
    row = await cascade.store.create(actor, settings)
    await cascade.restart(row["id"])
    return json_response(_view(request, row), 201)


@ROUTES.route(
    "GET",
    "/api/v1/gb28181/upstreams/{id}",
    "One upper platform: settings (no password), state, last error (SIP status and reason), "
    "timings and counters",
    ADMINS,
    params=_ID,
    responses={200: "the upstream"},
    tag="gb28181",
)
async def get_upstream(request: web.Request) -> web.Response:
    _unscoped(caller(request))
    row = await request.app[CASCADE].store.get(request.match_info["id"])
    return json_response(_view(request, row))


@ROUTES.route(
    "PATCH",
    "/api/v1/gb28181/upstreams/{id}",
    "Change an upper platform (validated whole; the client re-registers)",
    ADMINS,
    params=_ID,
    responses={
        200: "the upstream",
        400: "the body is not a JSON object",
        422: "invalid fields (the problem names each)",
    },
    tag="gb28181",
)
async def patch_upstream(request: web.Request) -> web.Response:
    actor = caller(request)
    _unscoped(actor)
    try:
        patch = json.loads(await request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the body is not valid JSON ({exc}); send a JSON object",
            [FieldError("body", "malformed JSON")],
        ) from None
    if not isinstance(patch, dict):
        raise BadRequest(
            "the body must be a JSON object", [FieldError("body", "expected an object")]
        )
    unknown = sorted(set(patch) - set(UpstreamSettings.model_fields))
    if unknown:
        raise ValidationFailed(
            "the body has unknown fields; remove them",
            [FieldError(k, "unknown field") for k in unknown],
        )
    cascade = request.app[CASCADE]
    upstream_id = request.match_info["id"]
    row = await cascade.store.update(actor, upstream_id, patch)
    await cascade.restart(row["id"])
    return json_response(_view(request, row))


@ROUTES.route(
    "DELETE",
    "/api/v1/gb28181/upstreams/{id}",
    "Remove an upper platform (it is unregistered first)",
    ADMINS,
    params=_ID,
    responses={204: "removed"},
    tag="gb28181",
)
async def delete_upstream(request: web.Request) -> web.Response:
    actor = caller(request)
    _unscoped(actor)
    cascade = request.app[CASCADE]
    row = await cascade.store.get(request.match_info["id"])
    await cascade.remove(row["id"])
    await cascade.store.delete(actor, row["id"])
    return web.Response(status=204)
