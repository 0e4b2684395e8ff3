"""GB/T 28181 device access in the app: the SIP server's lifecycle, its bridge to the
registry (who may register, what their catalogs become) and the HTTP routes that show it.

The bridge is the only place the SIP core meets the database: `ingest.gb28181` speaks SIP
and hands over parsed facts; `camera_registry.store.gb28181` writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.auth import ADMINS, READERS, WRITERS
from api.gbplayer import GbPlayer
from api.models import parse_body
from api.responses import json_response
from api.routes import Param, RouteTable, caller
from api.state import GB_DEVICES, GB_PLAYER, POOL, SETTINGS, SIP
from camera_registry.config import Gb28181Settings
from camera_registry.errors import NotFound
from camera_registry.store.gb28181 import GbDevices
from health.settings import health_runtime
from health.status import Outcome, StatusPolicy
from health.store import observe_many
from ingest.gb28181.catalog import CatalogResult
from ingest.gb28181.manscdp import CatalogItem, Manscdp
from ingest.gb28181.registrar import DeviceAccess, Registration, device_id_problem
from ingest.gb28181.server import Gb28181Events, PlaySession, SipServer, SipServerConfig
from ingest.gb28181.zlm import ZlmClient

log = logging.getLogger(__name__)
ROUTES = RouteTable()
# What a channel's Status word (catalog) or event (NOTIFY) says about it, as a probe would.
_STATUS_OUTCOME: dict[str, Outcome] = {
    "ON": "ok",
    "OK": "ok",
    "ONLINE": "ok",
    "OFF": "fail",
    "OFFLINE": "fail",
    "VLOST": "fail",
    "DEFECT": "fault",
}


class Bridge(Gb28181Events):
    """DeviceDirectory and Gb28181Events for the SIP server, backed by the GB store."""

    def __init__(
        self,
        store: GbDevices,
        settings: Gb28181Settings,
        pool: asyncpg.Pool | None = None,
        policy: StatusPolicy | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool  # for health observations; None: status is not fed (tests of the tree)
        self.policy = policy
        self.player: GbPlayer | None = None
        self._alive: set[str] = set()  # devices that kept alive since the last flush
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Catalogs applied at once: each holds a pool connection for its transaction, and the
        # registrations and keepalives of everyone else need the pool too.
        self._catalog_slots = asyncio.Semaphore(4)

    async def run(self, every_s: float = 1.0) -> None:
        """Write keepalives in batches: one statement and one health transaction per second
        for all devices, instead of two per keepalive (100,000 devices send 1,667/s)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.flush()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("GB/T 28181 keepalive flush failed: %s", exc)

    async def flush(self) -> None:
        alive, self._alive = self._alive, set()
        if not alive:
            return
        await self.store.keepalive_many(sorted(alive))
        if self.pool is None:
            return
        channels = await self.store.channels_of(sorted(alive))
        obs = [
            (cid, _STATUS_OUTCOME.get(status, "ok"), f"keepalive; channel {status or '?'}")
            for cid, status in channels
        ]
        await observe_many(self.pool, obs, policy=self.policy)

    @contextlib.asynccontextmanager
    async def _device(self, device_id: str) -> AsyncIterator[None]:
        """One catalog write at a time per device (answers to two queries can overlap).

        Locks are counted and dropped when nobody holds or waits for them, so the map is as
        large as the devices being written at this moment, not every device ever seen.
        """
        lock, users = self._locks.get(device_id, (asyncio.Lock(), 0))
        self._locks[device_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[device_id]
            if users == 1:
                del self._locks[device_id]
            else:
                self._locks[device_id] = (lock, users - 1)

    async def lookup(self, device_id: str) -> DeviceAccess | None:
        if device_id_problem(device_id) is not None:
            return None
        in_scope = device_id.startswith(self.settings.accepted_regions)
        password = await self.store.password(device_id)
        return DeviceAccess(
            device_id, password or self.settings.password.get_secret_value(), in_scope
        )

    async def on_register(self, registration: Registration, is_new: bool) -> None:
        src = registration.source
        await self.store.registered(
            registration.device_id,
            transport=src.transport,
            source_host=src.host,
            source_port=src.port,
            contact=registration.contact,
            user_agent=registration.user_agent,
            expires_s=registration.expires_s,
        )

        await self._observe_device(registration.device_id, None, "registered")

    async def on_unregister(self, device_id: str, reason: str) -> None:
        await self.store.offline(device_id)
        await self._observe_device(device_id, "fail", f"device {reason}")

    async def on_keepalive(self, device_id: str) -> None:
        self._alive.add(device_id)  # bounded by the registered devices; flushed by run()

    async def on_keepalive_missed(self, device_id: str, missed: int) -> None:
        await self._observe_device(device_id, "fail", f"{missed} keepalive interval(s) missed")

    async def on_keepalive_timeout(self, device_id: str) -> None:
        await self.store.offline(device_id)

    async def on_play_ended(self, session: PlaySession, reason: str) -> None:
        if self.player is not None and reason == "device sent BYE":
            await self.player.ended(session)

    async def _observe_device(self, device_id: str, outcome: Outcome | None, why: str) -> None:
        """One observation for each of the device's camera channels.

        `outcome` None: the device is alive, so each channel is what its last Status says
        (ON → ok, OFF/VLOST → fail, DEFECT → fault); a device-level failure fails them all.
        """
        if self.pool is None:
            return
        channels = await self.store.channel_cameras(device_id)
        obs = [
            (cid, outcome or _STATUS_OUTCOME.get(status, "ok"), f"{why}; channel {status or '?'}")
            for cid, status in channels
        ]
        await observe_many(self.pool, obs, policy=self.policy)

    async def _observe_items(self, device_id: str, items: list[CatalogItem], why: str) -> None:
        if self.pool is None:
            return
        words = {i.device_id: (i.event or i.status) for i in items}
        words = {k: v for k, v in words.items() if v in _STATUS_OUTCOME}
        if not words:
            return
        cams = await self.store.item_cameras(device_id, list(words))
        obs = [
            (cid, _STATUS_OUTCOME[words[item]], f"{why} {words[item]}")
            for item, cid in cams.items()
        ]
        await observe_many(self.pool, obs, policy=self.policy)

    async def on_catalog(self, result: CatalogResult) -> None:
        items = [dataclasses.asdict(i) for i in result.items.values()]
        async with self._catalog_slots, self._device(result.device_id):
            for attempt in range(3):  # a deadlock with a health writer of the same rows
                try:
                    outcome = await self.store.apply_catalog(
                        result.device_id, items, complete=result.complete
                    )
                    break
                except asyncpg.DeadlockDetectedError:
                    if attempt == 2:
                        raise
                    log.info("catalog of %s met a deadlock; applying again", result.device_id)
        log.info("catalog of %s: %s", result.device_id, outcome)
        await self._observe_items(result.device_id, list(result.items.values()), "catalog Status")

    async def on_device_info(self, device_id: str, message: Manscdp) -> None:
        await self.store.device_info(device_id, message.fields)

    async def on_notify(self, device_id: str, items: list[CatalogItem]) -> None:
        changed = [dataclasses.asdict(i) for i in items if i.event in ("ADD", "UPDATE")]
        async with self._device(device_id):
            if changed:
                await self.store.apply_catalog(device_id, changed, complete=False)
            gone = [i.device_id for i in items if i.event == "DEL"]
            if gone:
                await self.store.remove_items(device_id, gone)
            for item in items:
                if item.event in ("ON", "OFF", "VLOST", "DEFECT"):
                    await self.store.set_item_status(device_id, item.device_id, item.event)
        await self._observe_items(device_id, items, "NOTIFY")


def sip_config(settings: Gb28181Settings, http_host: str) -> SipServerConfig:
    return SipServerConfig(
        server_id=settings.server_id,
        domain=settings.sip_domain,
        host=settings.sip_host or http_host,
        port=settings.sip_port,
        charset=settings.charset,
        keepalive_timeout_s=settings.keepalive_timeout_s,
        keepalive_interval_s=settings.keepalive_timeout_s / 3,
        catalog_idle_timeout_s=settings.catalog_idle_timeout_s,
        min_expires=settings.min_expires,
        max_expires=settings.max_expires,
        rate_per_source=settings.rate_per_source,
        query_after_register=settings.query_on_register,
    )


async def gb28181_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SIP server of `camreg serve`: started after the database, stopped before it."""
    settings = app[SETTINGS]
    gb = settings.gb28181
    policy = health_runtime(settings.health).policy
    bridge = Bridge(app[GB_DEVICES], gb, app[POOL], policy)
    server = SipServer(sip_config(gb, settings.http_host), bridge, bridge)
    await server.start()
    app[SIP] = server
    flusher = asyncio.create_task(bridge.run(gb.keepalive_flush_s), name="gb28181-keepalives")
    log.info("GB/T 28181 SIP server on %s:%d (UDP+TCP)", server.config.host, server.port)
    http: aiohttp.ClientSession | None = None
    player: GbPlayer | None = None
    if gb.media is not None:
        http = aiohttp.ClientSession()
        zlm = ZlmClient(http, gb.media.api_url, gb.media.secret.get_secret_value())
        player = GbPlayer(server, app[GB_DEVICES], zlm, gb.media)
        bridge.player = player
        app[GB_PLAYER] = player
    try:
        yield
    finally:
        if player is not None:
            await player.close_all()
        if http is not None:
            await http.close()
        await server.stop()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        await bridge.flush()


def _sip(request: web.Request) -> SipServer:
    server = request.app.get(SIP)
    if server is None:
        raise NotFound("the GB/T 28181 SIP server is not enabled ([gb28181] enabled = false)")
    return server


@ROUTES.route(
    "GET",
    "/api/v1/gb28181/server",
    "Our SIP server: what it listens on, its identity and counters",
    READERS,
    responses={200: "server"},
    tag="gb28181",
)
async def get_server(request: web.Request) -> web.Response:
    gb = request.app[SETTINGS].gb28181
    server = request.app.get(SIP)
    body: dict[str, Any] = {
        "enabled": gb.enabled,
        "server_id": gb.server_id,
        "domain": gb.sip_domain,
        "accepted_regions": list(gb.accepted_regions),
    }
    if server is not None:
        body.update(
            host=server.config.host,
            port=server.port,
            transports=["udp", "tcp"],
            counters=server.metrics(),
        )
    return json_response(body)


@ROUTES.route(
    "GET",
    "/api/v1/gb28181/devices",
    "GB/T 28181 devices that registered (filters: region, online; scope by ID region)",
    READERS,
    params=(
        Param("region", "query", "region-code prefix"),
        Param("online", "query", "true/false", {"type": "boolean"}),
        Param("limit", "query", "page size", {"type": "integer"}),
        Param("cursor", "query", "next_cursor of the previous page"),
    ),
    responses={200: "devices"},
    tag="gb28181",
)
async def list_devices(request: web.Request) -> web.Response:
    actor = caller(request)
    q = request.query
    online = {"true": True, "false": False}.get(q.get("online", "").lower())
    limit = max(1, min(int(q["limit"]) if q.get("limit", "").isdigit() else 100, 1000))
    items, nxt = await request.app[GB_DEVICES].page(
        actor, region=q.get("region"), online=online, limit=limit, after=q.get("cursor")
    )
    return json_response({"items": items, "next_cursor": nxt})


@ROUTES.route(
    "GET",
    "/api/v1/gb28181/devices/{id}",
    "One GB/T 28181 device with its catalog channels (removed ones marked)",
    READERS,
    params=(Param("id", "path", "20-digit device ID", required=True),),
    responses={200: "device", 404: "not found"},
    tag="gb28181",
)
async def get_device(request: web.Request) -> web.Response:
    actor = caller(request)
    return json_response(await request.app[GB_DEVICES].get(actor, request.match_info["id"]))


@ROUTES.route(
    "POST",
    "/api/v1/gb28181/devices/{id}/catalog",
    "Query the device's catalog now and apply it (waits for the answer)",
    WRITERS,
    params=(Param("id", "path", "20-digit device ID", required=True),),
    responses={200: "catalog summary", 409: "device not registered"},
    tag="gb28181",
)
async def refresh_catalog(request: web.Request) -> web.Response:
    actor = caller(request)
    device_id = request.match_info["id"]
    await request.app[GB_DEVICES].get(actor, device_id)  # scope check
    result = await _sip(request).query_catalog(device_id)
    return json_response(
        {
            "device_id": device_id,
            "complete": result.complete,
            "sum_num": result.sum_num,
            "received": len(result.items),
            "repeated": result.repeated,
            "missing": result.missing,
        }
    )


class DevicePassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(default=None, min_length=1, max_length=64)


@ROUTES.route(
    "PUT",
    "/api/v1/gb28181/devices/{id}/password",
    "Set (or with null clear) a device's own SIP password; sealed, never returned",
    ADMINS,
    params=(Param("id", "path", "20-digit device ID", required=True),),
    body=DevicePassword,
    responses={204: "set"},
    tag="gb28181",
)
async def set_password(request: web.Request) -> web.Response:
    actor = caller(request)
    device_id = request.match_info["id"]
    problem = device_id_problem(device_id)
    if problem is not None or not actor.covers(device_id[:6]):
        raise NotFound(f"no GB/T 28181 device {device_id} in your region scope")
    body = await parse_body(request, DevicePassword)
    await request.app[GB_DEVICES].set_password(actor, device_id, body.password)
    return web.Response(status=204)
