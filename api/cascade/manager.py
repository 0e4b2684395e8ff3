"""The cascade's runtime: one `UpstreamClient` per enabled upper platform, and its metrics.

Owned by one aiohttp `cleanup_ctx` (`cascade_ctx`): at start the config file's upstreams are
synced into the table and every enabled one is started; the admin API restarts or stops a
client when its row changes; at shutdown each unregisters (Expires: 0) and stops.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.cascade.client import UpstreamClient
from api.cascade.media import MediaClient, MediaServer
from api.gbplayer import GbPlayer
from api.state import BOX, GB_PLAYER, METRICS, POOL, SETTINGS
from camera_registry.actor import Actor, Role
from camera_registry.config import UpstreamSettings
from camera_registry.crypto import CredentialBox
from camera_registry.store.upstreams import Upstreams

STATES = ("registering", "registered", "offline", "failed", "stopped")


class Cascade:
    def __init__(
        self,
        pool: asyncpg.Pool,
        box: CredentialBox,
        *,
        media: MediaClient | None = None,
        player: GbPlayer | None = None,
        host: str = "127.0.0.1",
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.store = Upstreams(pool, box)
        self.pool = pool
        self.box = box
        self.media = media
        self.player = player
        self.host = host
        self.client_options = client_options or {}
        self.clients: dict[str, UpstreamClient] = {}
        self._lock = asyncio.Lock()

    async def start(self, configured: Iterable[UpstreamSettings]) -> None:
        await self.store.sync_config(Actor("config", Role.ADMIN), list(configured))
        for upstream_id, settings in await self.store.all_with_secrets():
            await self._start(str(upstream_id), settings)

    async def _start(self, upstream_id: str, settings: UpstreamSettings) -> None:
        if not settings.enabled:
            return
        client = UpstreamClient(
            upstream_id,
            settings,
            self.pool,
            self.box,
            media=self.media,
            player=self.player,
            local_host=self.host,
            **self.client_options,
        )
        await client.start()
        self.clients[upstream_id] = client

    async def restart(self, upstream_id: str) -> None:
        """Apply a changed row: stop the old client, start one with the stored settings."""
        async with self._lock:
            old = self.clients.pop(upstream_id, None)
            if old is not None:
                await old.stop()
            await self._start(upstream_id, await self.store.get_with_secret(upstream_id))

    async def remove(self, upstream_id: str) -> None:
        async with self._lock:
            old = self.clients.pop(upstream_id, None)
            if old is not None:
                await old.stop()

    async def stop(self) -> None:
        clients, self.clients = list(self.clients.values()), {}
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)

    def status(self, upstream_id: str) -> dict[str, Any]:
        client = self.clients.get(upstream_id)
        if client is None:
            return {"state": "stopped", "last_error": None, "timings": {}, "counters": {}}
        return client.status()


class CascadeCollector:
    """/metrics view of every upstream: state, and its counters, read at scrape time."""

    def __init__(self, cascade: Cascade) -> None:
        self.cascade = cascade

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "camreg_gb28181_upstream_state",
            "1 for the state each upper platform is in",
            labels=["upstream", "state"],
        )
        events = CounterMetricFamily(
            "camreg_gb28181_upstream_events",
            "what happened with each upper platform (registrations, keepalives, catalog items…)",
            labels=["upstream", "event"],
        )
        last = GaugeMetricFamily(
            "camreg_gb28181_upstream_last_error_status",
            "SIP status of the last error an upper platform answered (0: none, 408: no answer)",
            labels=["upstream"],
        )
        for client in list(self.cascade.clients.values()):
            name = client.settings.name
            for s in STATES:
                state.add_metric([name, s], 1.0 if client.state == s else 0.0)
            for event, n in client.counters.items():
                events.add_metric([name, event], float(n))
            err = client.last_error
            last.add_metric([name], float(0 if err is None else err.status or 408))
        yield state
        yield events
        yield last


CASCADE = web.AppKey("gb28181_cascade", Cascade)


async def cascade_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    gb = settings.gb28181
    async with aiohttp.ClientSession() as session:
        media = None
        if gb.media is not None:
            media = MediaClient(
                MediaServer(
                    gb.media.api_url,
                    gb.media.secret.get_secret_value(),
                    rtp_ip=gb.media.rtp_ip,
                    timeout_s=gb.media.invite_timeout_s,
                ),
                session,
            )
        cascade = Cascade(
            app[POOL],
            app[BOX],
            media=media,
            player=app.get(GB_PLAYER),  # set by the device-access side when it runs
            host=gb.cascade_host or settings.http_host,
        )
        app[CASCADE] = cascade
        collector = CascadeCollector(cascade)
        app[METRICS].registry.register(collector)
        await cascade.start(gb.upstreams)
        try:
            yield
        finally:
            await cascade.stop()
            app[METRICS].registry.unregister(collector)


def parse_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text
