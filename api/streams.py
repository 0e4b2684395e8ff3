"""Stream links and the media-relay endpoints (play-auth hooks, source lookup)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.auth import STREAMERS
from api.cameras import ID
from api.models import load_json, parse_body
from api.problems import status_of
from api.responses import json_response
from api.routes import Param, RouteTable, caller, enum, text
from api.state import GB_PLAYER, STREAMS
from camera_registry.config import PROTOCOLS
from camera_registry.errors import BadRequest, FieldError, RegistryError
from camera_registry.store.streams import MAX_BATCH, PROFILES, check_batch
from ingest.errors import IngestError

ROUTES = RouteTable()

STREAM_KEY = {"type": "string", "pattern": "^[0-9]{20}_(main|sub)$"}
STREAM_PARAMS = (
    Param("profile", "query", "main (default) or sub", enum(*PROFILES)),
    Param("protocol", "query", "rtsp (default), hls, flv, webrtc or rtmp", enum(*PROTOCOLS)),
)
RELAY_SECRET = Param("secret", "query", "the relay's secret (or header X-Relay-Secret)", text(200))


class StreamBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    camera_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH)
    profile: str = "main"
    protocol: str = "rtsp"


@ROUTES.route(
    "GET",
    "/api/v1/cameras/{id}/stream",
    "A short-lived signed stream link (audited)",
    STREAMERS,
    params=(ID, *STREAM_PARAMS),
    responses={200: "url, protocol, expires_at"},
    tag="streams",
)
async def stream_link(request: web.Request) -> web.Response:
    actor = caller(request)
    q = request.query
    link = await request.app[STREAMS].issue(
        actor,
        request.match_info["id"],
        profile=q.get("profile", "main"),
        protocol=q.get("protocol", "rtsp"),
    )
    player = request.app.get(GB_PLAYER)
    if player is not None:  # a GB/T 28181 channel: have it stream to the media server first
        await player.ensure(request.match_info["id"], q.get("profile", "main"))
    return json_response(link, headers={"Cache-Control": "no-store"})


@ROUTES.route(
    "POST",
    "/api/v1/streams",
    "Links for a video wall (up to 64 cameras)",
    STREAMERS,
    body=StreamBatch,
    responses={200: "one item per camera"},
    tag="streams",
)
async def stream_batch(request: web.Request) -> web.Response:
    actor = caller(request)
    body = await parse_body(request, StreamBatch)
    check_batch(body.camera_ids)
    items: list[dict[str, Any]] = []
    gb: list[tuple[int, str]] = []  # (index in items, camera id) of the links issued
    for cid in body.camera_ids:
        try:
            link = await request.app[STREAMS].issue(
                actor, cid, profile=body.profile, protocol=body.protocol
            )
            gb.append((len(items), cid))
            items.append({"camera_id": cid, **link})
        except RegistryError as exc:
            items.append({"camera_id": cid, "error": _item_error(exc)})
    player = request.app.get(GB_PLAYER)
    if player is not None and gb:
        # GB/T 28181 channels stream to the media server only when INVITEd, as for one link;
        # a wall's channels are INVITEd a few at a time (each waits up to invite_timeout_s).
        room = asyncio.Semaphore(WALL_INVITES)

        async def ensure(index: int, cid: str) -> None:
            async with room:
                try:
                    await player.ensure(cid, body.profile)
                except (RegistryError, IngestError) as exc:
                    items[index] = {"camera_id": cid, "error": _item_error(exc)}

        await asyncio.gather(*(ensure(i, cid) for i, cid in gb))
    return json_response({"items": items}, headers={"Cache-Control": "no-store"})


WALL_INVITES = 8  # GB/T 28181 channels of one video wall INVITEd at once


def _item_error(exc: RegistryError | IngestError) -> dict[str, Any]:
    status, _ = status_of(exc)
    detail = exc.detail if isinstance(exc, RegistryError) else str(exc)
    return {"status": status, "detail": detail}


def _relay(request: web.Request) -> Any:
    secret = request.headers.get("X-Relay-Secret") or request.query.get("secret")
    return request.app[STREAMS].relay_by_secret(secret)


async def _json(request: web.Request) -> dict[str, Any]:
    data = load_json(await request.read())
    if not isinstance(data, dict):
        raise BadRequest("hook body must be a JSON object", [FieldError("body", "not an object")])
    return data


def _sign_from(query: str | None) -> str | None:
    values = parse_qs((query or "").lstrip("?")).get("sign")
    return values[0] if values else None


@ROUTES.route(
    "POST",
    "/api/v1/hooks/zlm/on_play",
    "ZLMediaKit on_play hook: may this player play?",
    None,
    params=(RELAY_SECRET,),
    responses={200: '{"code": 0} allows, non-zero denies'},
    tag="relay",
)
async def zlm_on_play(request: web.Request) -> web.Response:
    relay = _relay(request)
    body = await _json(request)
    verdict = await request.app[STREAMS].judge(
        relay,
        sign=_sign_from(str(body.get("params") or "")),
        key=str(body.get("stream") or ""),
        ip=str(body.get("ip") or request.remote or ""),
        hook="zlm.on_play",
    )
    if verdict.allowed:
        return json_response({"code": 0, "msg": "success"})
    return json_response({"code": 401, "msg": verdict.reason})


@ROUTES.route(
    "POST",
    "/api/v1/hooks/zlm/on_stream_none_reader",
    "ZLMediaKit on_stream_none_reader hook: close a GB/T 28181 channel's media leg",
    None,
    params=(RELAY_SECRET,),
    responses={200: '{"code": 0, "close": true|false}'},
    tag="relay",
)
async def zlm_on_stream_none_reader(request: web.Request) -> web.Response:
    _relay(request)
    body = await _json(request)
    player = request.app.get(GB_PLAYER)
    key = str(body.get("stream") or "")
    closed = player is not None and await player.stop(key, "no reader")
    return json_response({"code": 0, "close": closed})


@ROUTES.route(
    "POST",
    "/api/v1/hooks/mediamtx/auth",
    "MediaMTX external HTTP authentication",
    None,
    params=(RELAY_SECRET,),
    responses={200: "allowed", 401: "denied"},
    tag="relay",
)
async def mediamtx_auth(request: web.Request) -> web.Response:
    relay = _relay(request)
    body = await _json(request)
    action = str(body.get("action") or "")
    path = str(body.get("path") or "")
    key = path.rsplit("/", 1)[-1]
    if action not in ("read", "playback"):
        verdict_ok, reason = False, f"action {action!r} is not allowed through stream links"
        await request.app[STREAMS].judge(
            relay,
            sign=None,
            key=key,
            ip=str(body.get("ip") or ""),
            hook=f"mediamtx.{action or 'unknown'}",
        )
    else:
        verdict = await request.app[STREAMS].judge(
            relay,
            sign=_sign_from(str(body.get("query") or "")),
            key=key,
            ip=str(body.get("ip") or request.remote or ""),
            hook="mediamtx.auth",
        )
        verdict_ok, reason = verdict.allowed, verdict.reason
    if verdict_ok:
        return json_response({"status": "allowed"})
    return json_response({"status": "denied", "reason": reason}, 401)


@ROUTES.route(
    "GET",
    "/api/v1/relay/{stream_key}/source",
    "The camera URI a relay pulls (relays only)",
    None,
    params=(
        Param("stream_key", "path", "<国标编码>_main|sub", STREAM_KEY, required=True),
        RELAY_SECRET,
    ),
    responses={200: "source URI with credentials", 401: "not a relay"},
    tag="relay",
)
async def relay_source(request: web.Request) -> web.Response:
    relay = _relay(request)
    src = await request.app[STREAMS].source(relay, request.match_info["stream_key"])
    return json_response(src, headers={"Cache-Control": "no-store"})
