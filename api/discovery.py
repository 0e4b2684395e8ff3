"""The discovery inbox over HTTP: what `camreg discover` found, and "register here"."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .auth import WRITERS, require
from .cameras import ID, etag, json_response
from .models import CameraCreate, parse_body
from .routes import Param, route
from .state import INBOX, REGISTRY


@route(
    "GET",
    "/api/v1/discovery/devices",
    "Devices found and not yet registered",
    WRITERS,
    params=(Param("all", "query", "1 to include registered ones"),),
    responses={200: "inbox"},
    tag="discovery",
)
async def list_devices(request: web.Request) -> web.Response:
    actor = require(request, WRITERS)
    pending = request.query.get("all", "0") not in ("1", "true", "yes")
    return json_response({"items": await request.app[INBOX].list(actor, pending_only=pending)})


class RegisterFound(CameraCreate):
    """The camera's place and identity; device facts, streams and credentials come from the
    interrogation (fields given here win)."""


@route(
    "POST",
    "/api/v1/discovery/devices/{id}/register",
    "Register a found device as a camera, here (device facts and streams filled in)",
    WRITERS,
    params=(ID,),
    body=RegisterFound,
    responses={201: "the camera"},
    tag="discovery",
)
async def register_device(request: web.Request) -> web.Response:
    actor = require(request, WRITERS)
    inbox = request.app[INBOX]
    device = await inbox.get(actor, request.match_info["id"])
    body = await parse_body(request, RegisterFound)
    values: dict[str, Any] = {
        "vendor": device["vendor"],
        "model": device["model"],
        "firmware": device["firmware"],
        "serial": device["serial"],
        "mac": device["mac"],
        "ip": device["address"],
        "onvif_port": device["port"],
        "username": device["username"],
        "password": device["password"],
    }
    profiles = device["profiles"] or []
    if profiles:
        values["stream_main"] = profiles[0].get("rtsp_uri")
        values["snapshot"] = profiles[0].get("snapshot_uri")
    if len(profiles) > 1:
        values["stream_sub"] = profiles[1].get("rtsp_uri")
    values = {k: v for k, v in values.items() if v is not None}
    values.update(body.values(patch=False))
    cam = await request.app[REGISTRY].create(actor, values, body.crs)
    await inbox.mark_registered(device["id"], cam["id"])
    return json_response(
        cam, 201, ETag=etag(cam["version"]), Location=f"/api/v1/cameras/{cam['id']}"
    )
