"""GB/T 28181 device access in the app: the SIP server's lifecycle, its bridge to the
registry (who may register, what their catalogs become) and the HTTP routes that show it.

The bridge is the only place the SIP core meets the database: `ingest.gb28181` speaks SIP
and hands over parsed facts; `camera_registry.store.gb28181` writes them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import aiohttp
import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.auth import ADMINS, READERS, WRITERS
from api.gbmetrics import summary
from api.gbplayer import GbPlayer
from api.models import parse_body
from api.responses import json_response
from api.routes import REGION_PREFIX, Param, RouteTable, caller, integer, text
from api.state import GB_DEVICES, GB_PLAYER, POOL, SETTINGS, SIP
from camera_registry.config import Gb28181Settings
from camera_registry.errors import NotFound, RegistryError
from camera_registry.store.gb28181 import CatalogInput, CatalogOutcome, GbDevices
from health.settings import health_runtime
from health.status import Outcome, StatusPolicy
from health.store import keepalive_channels, observe_many
from ingest.gb28181.catalog import CatalogResult
from ingest.gb28181.manscdp import CatalogItem, Manscdp
from ingest.gb28181.registrar import DeviceAccess, Registration, device_id_problem
from ingest.gb28181.server import (
    DeviceCharset,
    Gb28181Events,
    PlaySession,
    SipServer,
    SipServerConfig,
)
from ingest.gb28181.zlm import ZlmClient

log = logging.getLogger(__name__)
GB_ID = {"type": "string", "pattern": "^[0-9]{20}$"}
DEVICE_ID = (Param("id", "path", "20-digit device ID", GB_ID, required=True),)
ROUTES = RouteTable()
# What a channel's Status word (catalog) or event (NOTIFY) says about it, as a probe would.
_STATUS_OUTCOME: dict[str, Outcome] = {
    "ON": "ok",
    "OK": "ok",
    "ONLINE": "ok",
    "OFF": "fail",
    "OFFLINE": "fail",
    "VLOST": "fail",
    "DEFECT": "fail",  # 故障: the channel does not work (a picture verdict needs our own diagnosis)
}
# the catalog Status words that fail a channel (what `keepalive_channels` must not skip)
FAILING_WORDS = tuple(word for word, outcome in _STATUS_OUTCOME.items() if outcome != "ok")
KEEPALIVE_DETAIL = "keepalive; channel "  # + the channel's Status word


_T = TypeVar("_T")
# (device ID, its registration or None for "went away", why it went away)
_DeviceEvent = tuple[str, Registration | None, str]


class Batcher(Generic[_T]):
    """Many callers' writes applied together: whoever finds no batch being applied applies
    the waiting ones, batch after batch, until none wait; the others return at once.

    Why: at a province's registration wave thousands of devices per second each want a
    commit; applied together they share one. A caller that applies alone (nothing else
    waiting) sees its write done when it returns, as before. Waiting writes are bounded
    (`room`: beyond it, callers wait); failures are logged, as the SIP server's tasks would.
    """

    def __init__(self, apply: Callable[[list[_T]], Awaitable[None]], *, room: int) -> None:
        self._apply = apply
        self._room = asyncio.Semaphore(room)
        self._waiting: list[_T] = []
        self._applying = False

    async def submit(self, item: _T) -> None:
        await self._room.acquire()
        self._waiting.append(item)
        if self._applying:
            return
        self._applying = True
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._apply(batch)
                except Exception:
                    log.exception("a batch of %d GB/T 28181 writes failed", len(batch))
                finally:
                    for _ in batch:
                        self._room.release()
        except BaseException:  # cancelled: nobody is left to apply the rest
            for _ in self._waiting:
                self._room.release()
            self._waiting = []
            raise
        finally:
            self._applying = False


class Coalescer(Generic[_T]):
    """Many callers' reads of one key each answered by one query for all of them: while a
    query runs, new keys wait and go together in the next one.

    Why: at a registration wave every REGISTER asks for its device's password; one query per
    REGISTER queued them behind the pool's other work (catalog batches, health) and the
    devices retransmitted. Waiting keys are bounded by the SIP server's requests in flight.
    """

    def __init__(
        self, fetch: Callable[[list[str]], Awaitable[dict[str, _T]]], *, batch: int = 5000
    ) -> None:
        self._fetch = fetch
        self._batch = batch
        self._waiting: dict[str, asyncio.Future[_T]] = {}
        self._running: asyncio.Task[None] | None = None

    async def get(self, key: str) -> _T:
        future = self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await asyncio.shield(future)  # one caller giving up fails no other

    async def _run(self) -> None:
        futures: list[asyncio.Future[_T]] = []
        try:
            while self._waiting:
                keys = list(itertools.islice(self._waiting, self._batch))
                futures = [self._waiting.pop(k) for k in keys]
                try:
                    found = await self._fetch(keys)
                except Exception as exc:
                    for f in futures:
                        if not f.done():
                            f.set_exception(exc)
                    continue
                for key, f in zip(keys, futures, strict=True):
                    if not f.done():
                        f.set_result(found[key])
        except BaseException:  # cancelled: nobody is left to answer the waiting callers
            for f in [*futures, *self._waiting.values()]:
                f.cancel()
            self._waiting.clear()
            raise
        finally:
            self._running = None


class Bridge(Gb28181Events):
    """DeviceDirectory and Gb28181Events for the SIP server, backed by the GB store."""

    def __init__(
        self,
        store: GbDevices,
        settings: Gb28181Settings,
        pool: asyncpg.Pool | None = None,
        policy: StatusPolicy | None = None,
        *,
        catalog_waiting: int = 2000,
        catalog_batch_items: int = 20_000,
        catalog_appliers: int = 2,
    ) -> None:
        self.store = store
        self.settings = settings
        self.pool = pool  # for health observations; None: status is not fed (tests of the tree)
        self.policy = policy
        self.player: GbPlayer | None = None
        self._alive: set[str] = set()  # devices that kept alive since the last flush
        self._locks: dict[str, _DeviceLock] = {}
        # Catalogs waiting to be applied (bounded) and the batch size in items.
        self._catalog_room = asyncio.Semaphore(catalog_waiting)
        self._waiting: list[tuple[CatalogResult, asyncio.Future[None]]] = []
        self._appliers = 0  # tasks applying catalog batches now, at most catalog_appliers
        self.catalog_appliers = catalog_appliers
        self._observing: asyncio.Task[None] | None = None  # a catalog batch's observations
        self.catalog_batch_items = catalog_batch_items
        self.catalog_batches = 0  # transactions that applied catalogs (a batch each)
        self._device_events = Batcher(self._apply_device_events, room=catalog_waiting)
        self._device_infos = Batcher(self.store.device_info_many, room=catalog_waiting)
        self._charsets = Batcher(self.store.set_charsets, room=catalog_waiting)
        self._passwords = Coalescer(self.store.passwords)

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
        # A lower platform's keepalive says its link is up, not that each of its (up to
        # millions of) channels is: theirs come from its catalog Status and NOTIFYs.
        # A keepalive of a settled online channel changes nothing: not read, not written.
        channels = await keepalive_channels(
            self.pool,
            sorted(d for d in alive if not _platform(d)),
            failing=FAILING_WORDS,
            detail=KEEPALIVE_DETAIL,
            fresh_s=self.settings.keepalive_timeout_s,
        )
        await self._observe(
            [
                (cid, _STATUS_OUTCOME.get(word, "ok"), f"{KEEPALIVE_DETAIL}{word or '?'}")
                for cid, word in channels
            ]
        )

    def _device(self, device_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._devices([device_id])

    @contextlib.asynccontextmanager
    async def _devices(
        self, device_ids: Sequence[str], shared: frozenset[str] = frozenset()
    ) -> AsyncIterator[None]:
        """One catalog write at a time per device (answers to two queries can overlap), except
        `shared` devices: the middle batches of one streamed catalog may be written together
        (its end, which counts what they marked, takes the device alone, after them).

        Every device's turn is requested at once, before waiting for any: each lock serves
        requests in order, so the batches are served in one order on every device (no
        deadlock), and a catalog's end never overtakes a middle batch taken before it.
        Locks are counted and dropped when nobody holds or waits for them, so the map is as
        large as the devices being written at this moment, not every device ever seen.
        """
        turns: list[tuple[_DeviceLock, bool, asyncio.Future[None]]] = []
        for device_id in device_ids:
            lock = self._locks.get(device_id)
            if lock is None:
                lock = self._locks[device_id] = _DeviceLock()
            lock.users += 1
            alone = device_id not in shared
            turns.append((lock, alone, lock.request(alone)))
        try:
            for _, _, turn in turns:
                await turn
            yield
        finally:
            for (lock, alone, turn), device_id in zip(turns, device_ids, strict=True):
                lock.done(alone, turn)
                lock.users -= 1
                if lock.users == 0:
                    del self._locks[device_id]

    async def lookup(self, device_id: str) -> DeviceAccess | None:
        if device_id_problem(device_id) is not None:
            return None
        in_scope = device_id.startswith(self.settings.accepted_regions)
        password = await self._passwords.get(device_id)
        return DeviceAccess(
            device_id, password or self.settings.password.get_secret_value(), in_scope
        )

    async def on_register(self, registration: Registration, is_new: bool) -> None:
        await self._device_events.submit((registration.device_id, registration, ""))

    async def on_unregister(self, device_id: str, reason: str) -> None:
        await self._device_events.submit((device_id, None, f"device {reason}"))

    async def _apply_device_events(self, events: list[_DeviceEvent]) -> None:
        """Registrations and unregistrations of many devices: one statement each kind, one
        health transaction (a registration wave is thousands per second). A device's last
        event in the batch wins, as if they had been applied in order."""
        last = {device_id: (reg, why) for device_id, reg, why in events}
        regs = [reg for reg, _ in last.values() if reg is not None]
        await self.store.registered_many(
            [
                (
                    r.device_id, r.source.transport, r.source.host, r.source.port, r.contact,
                    r.user_agent, r.expires_s,
                )
                for r in regs
            ]
        )  # fmt: skip
        gone = {d: why for d, (reg, why) in last.items() if reg is None}
        await self.store.offline_many(sorted(gone))
        if self.pool is None:
            return
        # A platform's registration is not an observation of its channels (their Status comes
        # from the catalog queried after it); its loss is one of every channel.
        devices = sorted(d for d in last if d in gone or not _platform(d))
        async for page in self.store.channel_pages(devices):
            obs: list[tuple[uuid.UUID, Outcome, str]] = []
            for device_id, cid, status in page:
                why = gone.get(device_id)
                if why is None:
                    word = _STATUS_OUTCOME.get(status, "ok")
                    obs.append((cid, word, f"registered; channel {status or '?'}"))
                else:
                    obs.append((cid, "fail", f"{why}; channel {status or '?'}"))
            await self._observe(obs)

    async def on_keepalive(self, device_id: str) -> None:
        self._alive.add(device_id)  # bounded by the registered devices; flushed by run()

    async def on_keepalive_missed(self, device_id: str, missed: int) -> None:
        await self._observe_device(device_id, "fail", f"{missed} keepalive interval(s) missed")

    async def on_keepalives_missed(self, missed: list[tuple[str, int]]) -> None:
        """Each miss one failure per channel, for all late devices of a pass in one read and
        one health transaction (a busy minute can make thousands of devices late at once)."""
        if self.pool is None or not missed:
            return
        by_device: dict[str, list[int]] = {}
        for device_id, m in missed:
            by_device.setdefault(device_id, []).append(m)
        async for page in self.store.channel_pages(sorted(by_device)):
            obs: list[tuple[uuid.UUID, Outcome, str]] = [
                (cid, "fail", f"{m} keepalive interval(s) missed; channel {status or '?'}")
                for device_id, cid, status in page
                for m in by_device[device_id]
            ]
            await self._observe(obs)

    async def on_keepalive_timeout(self, device_id: str) -> None:
        await self.store.offline_many([device_id])

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
        async for page in self.store.channel_pages([device_id]):
            obs = [
                (cid, outcome or _STATUS_OUTCOME.get(word, "ok"), f"{why}; channel {word or '?'}")
                for _, cid, word in page
            ]
            await self._observe(obs)

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
        await self._observe(obs)

    async def on_catalog(self, result: CatalogResult) -> None:
        """Apply the catalog together with the others that arrive meanwhile.

        One transaction per batch of catalogs, not ~6 commits per catalog: at a province's
        registration wave hundreds of catalogs complete per second and each alone waits on
        PostgreSQL (measured 31 channels/s). Whoever finds no batch being applied applies the
        waiting ones, batch after batch, until none wait; the others return at once, so a
        waiting catalog holds no task of the SIP server (its task budget is for SIP work).
        Up to `catalog_appliers` callers apply batches at once, each in its own transaction:
        one applier kept PostgreSQL and this process each half idle, one waiting for the
        other (a lower platform's streamed catalog went at ~3,500 items/s with both cores
        under 60 %).
        Waiting catalogs are bounded (`catalog_waiting`: beyond it, callers wait for room); a
        device's second catalog waits for the next batch, so a device's catalogs are applied
        in the order they completed. Failures are logged with the device (the SIP server's
        tasks only log them too). Returns when this catalog is written (or failed): the SIP
        server counts it as the store's backlog until then and pauses catalog intake while
        that backlog is large (backpressure), so memory does not follow a catalog's size.
        """
        await self._catalog_room.acquire()
        written = asyncio.get_running_loop().create_future()
        self._waiting.append((result, written))
        if self._appliers < self.catalog_appliers:
            self._appliers += 1
            try:
                while self._waiting:
                    await self._apply_batch()
            finally:
                self._appliers -= 1
        await written

    async def _apply_batch(self) -> None:
        batch: list[tuple[CatalogResult, asyncio.Future[None]]] = []
        rest: list[tuple[CatalogResult, asyncio.Future[None]]] = []
        devices: set[str] = set()
        items = 0
        for result, written in self._waiting:
            if result.device_id in devices or (batch and items >= self.catalog_batch_items):
                rest.append((result, written))
                continue
            devices.add(result.device_id)
            items += len(result.items)
            batch.append((result, written))
        self._waiting = rest
        middle = frozenset(r.device_id for r, _ in batch if r.streamed and not r.final)
        try:
            async with self._devices(sorted(devices), middle):  # a NOTIFY of a device waits
                await self._apply_locked([r for r, _ in batch])
        except Exception:
            log.exception("a batch of %d catalogs was not applied", len(batch))
        except BaseException:  # cancelled: nobody is left to apply the rest
            for _, written in self._waiting:
                self._catalog_room.release()
                if not written.done():
                    written.set_result(None)
            self._waiting = []
            raise
        finally:
            for _, written in batch:
                self._catalog_room.release()
                if not written.done():
                    written.set_result(None)

    async def _apply_locked(self, batch: list[CatalogResult]) -> None:
        inputs = [
            CatalogInput(
                r.device_id,
                [_fields(i) for i in r.items.values()],
                r.complete,
                generation=r.generation if r.streamed else None,
                final=r.final,
                sum_num=r.sum_num,
            )
            for r in batch
        ]
        self.catalog_batches += 1
        try:
            outcomes = await self._apply_retrying(inputs)
        except (asyncpg.PostgresError, RegistryError) as exc:
            if len(inputs) == 1:
                raise
            # one bad catalog must not fail the others: apply each alone
            log.warning("a batch of %d catalogs failed (%s); applying one by one", len(batch), exc)
            outcomes = []
            for one in inputs:
                try:
                    outcomes += await self._apply_retrying([one])
                except (asyncpg.PostgresError, RegistryError):
                    log.exception("catalog of %s was not applied", one.device_id)
        for outcome, one in zip(outcomes, inputs, strict=False):
            log.info("catalog of %s: %s", one.device_id, outcome)
        # The batch's health observations are written while the next batch is applied (the
        # two kept PostgreSQL and this process each half idle, one waiting for the other), at
        # most one batch behind; every other observation waits for them (`_observe`).
        await self._catalog_observed()
        after = self._observing  # another applier's, started meanwhile: these follow it
        self._observing = asyncio.get_running_loop().create_task(self._observe_logged(batch, after))

    async def _observe_logged(
        self, batch: list[CatalogResult], after: asyncio.Task[None] | None
    ) -> None:
        if after is not None:
            await asyncio.shield(after)
        try:
            await self._observe_catalogs(batch)
        except (asyncpg.PostgresError, OSError) as exc:  # the catalogs are stored; status follows
            log.warning("health observations of a catalog batch failed: %s", exc)
        except Exception:  # never raised to its waiters: every later observation awaits this
            log.exception("health observations of a catalog batch failed")

    async def _catalog_observed(self) -> None:
        """Wait for the catalog batch's observations still being written, if any (shielded: a
        cancelled waiter must not cancel them)."""
        if self._observing is not None:
            await asyncio.shield(self._observing)

    async def _observe(self, obs: list[tuple[uuid.UUID, Outcome, str]]) -> None:
        """Observations in the order their events happened: after a catalog batch's; in
        transactions of `_OBSERVE_CHUNK` (a lower platform's loss fails millions of channels:
        one transaction would hold them all locked, and their states in memory)."""
        await self._catalog_observed()
        for at in range(0, len(obs), _OBSERVE_CHUNK):
            await observe_many(self.pool, obs[at : at + _OBSERVE_CHUNK], policy=self.policy)

    async def close(self) -> None:
        """At shutdown: the last catalog batch's observations are written, then keepalives."""
        await self._catalog_observed()
        await self.flush()

    async def _apply_retrying(self, inputs: list[CatalogInput]) -> list[CatalogOutcome]:
        for attempt in range(3):  # a deadlock with a health writer of the same rows
            try:
                return await self.store.apply_catalogs(inputs)
            except asyncpg.DeadlockDetectedError:
                if attempt == 2:
                    raise
                log.info("a batch of %d catalogs met a deadlock; applying again", len(inputs))
        raise AssertionError("unreachable")

    async def _observe_catalogs(self, results: list[CatalogResult]) -> None:
        """The channels' catalog Status words as health observations, one call per batch."""
        if self.pool is None:
            return
        words = {
            (r.device_id, i.device_id): w
            for r in results
            for i in r.items.values()
            if (w := i.event or i.status) in _STATUS_OUTCOME
        }
        if not words:
            return
        cams = await self.store.items_cameras(list(words))
        obs: list[tuple[uuid.UUID, Outcome, str]] = [
            (cid, _STATUS_OUTCOME[words[key]], f"catalog Status {words[key]}")
            for key, cid in cams.items()
        ]
        # one transaction: chunked like `_observe`'s it measured slower (a single run each:
        # 178 s against 148 s for 50,000 devices); it runs beside the next batch anyway
        await observe_many(self.pool, obs, policy=self.policy)  # it is the one others wait for

    async def on_charset(self, device_id: str, charset: DeviceCharset) -> None:
        await self._charsets.submit((device_id, charset.charset, charset.declared, charset.sniffed))

    async def on_device_info(self, device_id: str, message: Manscdp) -> None:
        await self._device_infos.submit((device_id, message.fields))

    async def on_notify(self, device_id: str, items: list[CatalogItem]) -> None:
        changed = [_fields(i) for i in items if i.event in ("ADD", "UPDATE")]
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


# Observations per transaction (keepalives, registrations, losses). Each transaction steps its
# cameras in Python in one go, and the SIP server answers nothing meanwhile: 10,000 held the
# event loop for hundreds of milliseconds and devices retransmitted (50,000 devices: 8,660
# retransmissions and 193 s; 2,727 and 148 s in transactions of 1,000: bench/RESULTS.md).
_OBSERVE_CHUNK = 1_000


def _platform(device_id: str) -> bool:
    """A lower platform (type 200) rather than a device: it relays others' channels."""
    return device_id[10:13] == "200"


def _fields(item: CatalogItem) -> dict[str, Any]:
    """An item's fields, shallow: `dataclasses.asdict` deep-copies every value, which was a
    tenth of the service's CPU at a registration wave."""
    return {name: getattr(item, name) for name in _ITEM_FIELDS}


_ITEM_FIELDS = tuple(f.name for f in dataclasses.fields(CatalogItem))


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
        catalog_backlog_items=settings.catalog_backlog_items,
        catalog_batch_items=settings.catalog_batch_items,
        min_expires=settings.min_expires,
        max_expires=settings.max_expires,
        rate_per_source=settings.rate_per_source,
        platform_rate_per_source=settings.platform_rate_per_source,
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
        await bridge.close()


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
            stats=summary(server),
        )
    return json_response(body)


@ROUTES.route(
    "GET",
    "/api/v1/gb28181/devices",
    "GB/T 28181 devices that registered (filters: region, online; scope by ID region)",
    READERS,
    params=(
        Param("region", "query", "region-code prefix", REGION_PREFIX),
        Param("online", "query", "true/false", {"type": "boolean"}),
        Param("limit", "query", "page size (1-1000, default 100)", integer(1, 1000)),
        Param("cursor", "query", "next_cursor of the previous page", text(200)),
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
    params=DEVICE_ID,
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
    params=DEVICE_ID,
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
            "received": max(result.received, len(result.items)),
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
    params=DEVICE_ID,
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


class _DeviceLock:
    """Shared or alone, in the order asked: a waiting exclusive holder (a catalog's end, a
    NOTIFY) stops later shared ones, so it is not starved and order is kept."""

    def __init__(self) -> None:
        self.users = 0  # holders and waiters (the map entry is dropped at 0)
        self._shared = 0
        self._alone = False
        self._queue: collections.deque[tuple[bool, asyncio.Future[None]]] = collections.deque()

    def request(self, alone: bool) -> asyncio.Future[None]:
        """A turn, granted (done) at once when free and nobody waits before it."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((alone, turn))
        self._wake()
        return turn

    def done(self, alone: bool, turn: asyncio.Future[None]) -> None:
        """Give the turn back, granted or not (a cancelled wait leaves the queue)."""
        if turn.done() and not turn.cancelled():
            if alone:
                self._alone = False
            else:
                self._shared -= 1
        else:
            if (alone, turn) in self._queue:
                self._queue.remove((alone, turn))
            turn.cancel()
        self._wake()

    def _wake(self) -> None:
        while self._queue:
            alone, turn = self._queue[0]
            if turn.cancelled():  # its waiter was cancelled and has not given it back yet
                self._queue.popleft()
                continue
            if self._alone or (alone and self._shared):
                return
            self._queue.popleft()
            if alone:
                self._alone = True
            else:
                self._shared += 1
            turn.set_result(None)
