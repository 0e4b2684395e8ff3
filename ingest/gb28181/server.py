"""The GB/T 28181 device-access SIP server: REGISTER, MESSAGE, NOTIFY in; queries, SUBSCRIBE,
INVITE/BYE out.

The server owns no storage: it asks a `DeviceDirectory` who may register and tells a
`Gb28181Events` what happened, so the registry side (store, health) stays the only writer of
its tables and tests can watch the protocol alone. Anything a peer gets wrong is answered
with a 4xx and counted in `counters`; nothing a peer sends raises out of the server.

Bounds: requests being processed (`max_concurrent`; beyond it UDP requests are dropped and
the device retransmits), background work after registrations (`max_tasks`), transactions,
catalog sessions, pending queries, nonces (stateless), replay cache, rate-limiter buckets and
the response cache all have fixed ceilings. When the server falls behind (requests wait in the
socket buffer, or too many are in hand) it sheds load by answering new devices' REGISTERs 503 +
Retry-After, so registered devices' keepalives and catalogs under way keep their answers in
time; retransmissions are answered from the response cache before they are even parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ingest.gb28181 import manscdp, sdp
from ingest.gb28181.catalog import CatalogAssembler, CatalogResult
from ingest.gb28181.digest import DigestVerifier, NonceIssuer, ReplayCache
from ingest.gb28181.errors import (
    BodyCharsetError,
    DeviceNotRegistered,
    Gb28181Error,
    ManscdpError,
    MessageTooLarge,
    RequestRefused,
    SipParseError,
    TransactionTimeout,
)
from ingest.gb28181.manscdp import CatalogItem, DecodedBody, Manscdp
from ingest.gb28181.message import (
    Headers,
    SipRequest,
    SipResponse,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
)
from ingest.gb28181.registrar import DeviceDirectory, Registrar, Registration
from ingest.gb28181.transactions import ClientTransactions
from ingest.gb28181.transport import Peer, RateLimiter, ResponseCache, SipTransport, target_for

log = logging.getLogger(__name__)

RequestHandler = Callable[[SipRequest, Peer], Awaitable[SipResponse | None]]


@dataclass(slots=True)
class SipServerConfig:
    server_id: str
    domain: str
    host: str = "127.0.0.1"
    port: int = 5060
    charset: str = "GB2312"
    user_agent: str = "camera-registry"
    nonce_secret: bytes | None = None
    nonce_ttl_s: float = 300.0
    min_expires: int = 60
    max_expires: int = 86_400
    keepalive_interval_s: float = 60.0
    keepalive_timeout_s: float = 180.0
    catalog_idle_timeout_s: float = 40.0  # above Timer F (64·T1 = 32 s): see CatalogAssembler
    catalog_batch_items: int = 2_000  # items buffered per catalog before the store gets them
    catalog_max_tracked: int = 500_000  # item IDs remembered for SumNum, all catalogs together
    # Backpressure: items handed to the store and not yet written, beyond which catalog
    # MESSAGEs are not answered (UDP: the sender retransmits) or answered late (TCP, at most
    # `catalog_hold_s`, far under the sender's 32 s transaction timeout, which must also
    # absorb a busy event loop; `catalog_max_held` at once).
    catalog_backlog_items: int = 16_000
    catalog_hold_s: float = 8.0
    catalog_max_held: int = 256
    query_timeout_s: float = 10.0
    subscribe_expires: int = 3_600
    t1: float = 0.5
    max_body: int = 64 * 1024
    max_manscdp_bytes: int = 32 * 1024
    rate_per_source: float = 50.0
    burst_per_source: float = 100.0
    platform_rate_per_source: float = 5_000.0  # registered lower platforms (type 200)
    max_sources: int = 100_000
    response_cache_size: int = 50_000
    max_concurrent: int = 512
    # Load shedding (RFC 3261 §21.5.4): while requests have waited longer than `shed_wait_s` in
    # the socket buffer for `shed_after_s` on end, or `shed_in_flight` are being handled, a new
    # device's first REGISTER is answered 503 with a Retry-After drawn from
    # `shed_retry_after_s`; registered devices and registrations already under way are served.
    shed_wait_s: float = 0.25
    shed_after_s: float = 1.0
    shed_in_flight: int = 384
    shed_retry_after_s: tuple[int, int] = (2, 10)
    # While behind, still admit this many new devices a second: a server kept behind by its
    # registered devices alone (a starved process) would otherwise never register another.
    shed_admit_per_s: float = 20.0
    register_deadline_s: float = 8.0  # a REGISTER still in hand then is answered 503
    max_tasks: int = 2_000
    max_device_queries: int = 2_000  # devices queried at once after registering
    max_pending_queries: int = 20_000
    housekeeping_s: float = 1.0
    query_after_register: bool = True


class Gb28181Events:
    """What the server tells the registry side. Override what you need; all are no-ops here.

    Called after the device has been answered, so a slow database never delays a 200.
    """

    async def on_register(self, registration: Registration, is_new: bool) -> None:
        return None

    async def on_unregister(self, device_id: str, reason: str) -> None:
        return None

    async def on_keepalive(self, device_id: str) -> None:
        return None

    async def on_keepalive_timeout(self, device_id: str) -> None:
        return None

    async def on_keepalive_missed(self, device_id: str, missed: int) -> None:
        """Called once per keepalive interval that passed in silence (1, 2, 3, …).

        Health feeds each miss as one failure through its hysteresis, so one late keepalive
        never flips a device's channels, and `keepalive_timeout_s` of silence (3 misses by
        default) is what takes them offline.
        """
        return None

    async def on_keepalives_missed(self, missed: list[tuple[str, int]]) -> None:
        """All misses of one housekeeping pass, (device ID, miss number) in order.

        By default `on_keepalive_missed` for each; a registry can write them together (when
        thousands of devices are late at once, one write per device is what falls behind).
        """
        for device_id, m in missed:
            await self.on_keepalive_missed(device_id, m)

    async def on_catalog(self, result: CatalogResult) -> None:
        """Return once the result is written: until then its items count as the store's
        backlog, which pauses catalog intake when it grows (backpressure)."""
        return None

    async def on_device_info(self, device_id: str, message: Manscdp) -> None:
        return None

    async def on_device_status(self, device_id: str, message: Manscdp) -> None:
        return None

    async def on_notify(self, device_id: str, items: list[CatalogItem]) -> None:
        return None

    async def on_play_ended(self, session: PlaySession, reason: str) -> None:
        return None

    async def on_charset(self, device_id: str, charset: DeviceCharset) -> None:
        """The charset a device's bodies are really in changed (first body, or it changed)."""
        return None


@dataclass(frozen=True, slots=True)
class DeviceCharset:
    """What a device's MANSCDP bodies were decoded as, and what they said they were.

    `charset` is "utf-8" or "gb18030" (the GB2312/GBK family); `sniffed` is True when
    non-ASCII bytes decided it (an ASCII body only repeats its declaration). What we send
    the device is encoded in `charset`, whatever it declares.
    """

    charset: str
    declared: str | None
    sniffed: bool

    @property
    def to_send(self) -> str | None:
        """The charset to declare in what we send it (None: not one we write)."""
        return {"gb18030": "GB2312", "utf-8": "UTF-8"}.get(self.charset)


# The SIP status of each refusal reason (a counter name), for the 4xx we send.
REFUSAL_STATUS: dict[str, int] = {
    "challenged": 401,
    "stale_nonce": 401,
    "wrong_password": 403,
    "wrong_user": 403,
    "unknown_device": 403,
    "out_of_scope": 403,
    "not_registered": 403,
    "source_mismatch": 403,
    "malformed_register": 400,
    "interval_too_brief": 423,
    "malformed_message": 400,
    "malformed_body": 400,
    "oversized_body": 400,
    "charset_refused": 400,
    "unsupported_content_type": 415,
    "method_not_allowed": 405,
    "bad_event": 489,
    "no_dialog": 481,
}


@dataclass(slots=True)
class Dialog:
    """The state of a dialog we started (§12): enough to send in-dialog requests."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    target: Peer
    request_uri: str
    cseq: int


@dataclass(slots=True)
class PlaySession:
    device_id: str
    channel_id: str
    ssrc: str
    dialog: Dialog
    answer: sdp.SdpAnswer
    started: float = field(default_factory=time.time)


@dataclass(slots=True)
class Subscription:
    device_id: str
    dialog: Dialog
    expires_s: int
    renew_task: asyncio.Task[None] | None = None


@dataclass(slots=True)
class _Liveness:
    last_seen: float
    timed_out: bool = False
    missed: int = 0


class SipServer:
    def __init__(
        self,
        config: SipServerConfig,
        directory: DeviceDirectory,
        events: Gb28181Events | None = None,
    ) -> None:
        self.config = config
        self.events = events or Gb28181Events()
        self.transport = SipTransport(
            self._on_message,
            self._on_parse_error,
            max_body=config.max_body,
            rate_per_source=config.rate_per_source,
            burst_per_source=config.burst_per_source,
            platform_rate_per_source=config.platform_rate_per_source,
            max_sources=config.max_sources,
        )
        self.transport.early = self._early
        self._key: Any = None  # the raw cache key of the UDP request being delivered
        self._late_since: float | None = None  # since when every request read was late
        admit = config.shed_admit_per_s
        self._admit = RateLimiter(admit, max(1.0, admit), max_keys=1) if admit > 0 else None
        self.transactions = ClientTransactions(self.transport, t1=config.t1)
        self.verifier = DigestVerifier(
            config.domain,
            NonceIssuer(config.nonce_secret, ttl_s=config.nonce_ttl_s),
            ReplayCache(),
        )
        self.registrar = Registrar(
            directory,
            self.verifier,
            min_expires=config.min_expires,
            max_expires=config.max_expires,
            server_header=config.user_agent,
        )
        self.catalogs = CatalogAssembler(
            self._catalog_done,
            idle_timeout_s=config.catalog_idle_timeout_s,
            batch_items=config.catalog_batch_items,
            max_tracked=config.catalog_max_tracked,
        )
        self.responses = ResponseCache(config.response_cache_size)
        self.handlers: dict[str, RequestHandler] = {}
        """Extra request methods (INVITE/SUBSCRIBE from an upper platform, for the cascade)."""
        self.sessions: dict[str, PlaySession] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._liveness: dict[str, _Liveness] = {}
        self._queries: dict[tuple[str, str, int], asyncio.Future[Manscdp]] = {}
        self._sn = itertools.count(1)
        self._cseq = itertools.count(1)
        self._ssrc = itertools.count(1)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        # Items of assembled catalogs handed to the store and not yet written (backpressure).
        self.catalog_backlog = 0
        # their tasks, kept apart from the background-work budget (`max_tasks`): each lives
        # until its catalog is written, and backpressure, not that budget, bounds them
        self._catalog_tasks: set[asyncio.Task[Any]] = set()
        self._catalog_room = asyncio.Event()
        self._catalog_room.set()
        self._catalog_held = 0
        self._housekeeper: asyncio.Task[None] | None = None
        # What each device's bodies really are (bounded like the rate limiter's sources):
        # kept across re-registrations, so queries after one go out in the device's charset.
        self.charsets: dict[str, DeviceCharset] = {}
        # Every 4xx we sent, by (status, reason); NOTIFY events by type; INVITEs by outcome.
        self.refusals: Counter[tuple[int, str]] = Counter()
        self.notify_by_event: Counter[str] = Counter()
        self.invites: Counter[str] = Counter()
        self._to_query: dict[str, None] = {}  # devices to query after registering, in order
        self._query_slots = asyncio.Semaphore(config.max_device_queries)
        self._query_pump: asyncio.Task[None] | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "overloaded",
                "shed",
                "register_late",
                "retransmissions_absorbed",
                "registered",
                "unregistered",
                "expired",
                "keepalives",
                "keepalive_timeouts",
                "challenged",
                "stale_nonce",
                "wrong_password",
                "wrong_user",
                "unknown_device",
                "out_of_scope",
                "not_registered",
                "source_mismatch",
                "malformed_register",
                "interval_too_brief",
                "malformed_message",
                "malformed_body",
                "oversized_body",
                "charset_refused",
                "mislabelled_charset",
                "unsupported_content_type",
                "unhandled_cmd",
                "catalog_messages",
                "catalogs_complete",
                "catalogs_partial",
                "catalogs_requeried",
                "catalog_batches",
                "catalogs_counted_by_store",
                "catalog_backpressure",
                "catalog_messages_deferred",
                "catalog_messages_held",
                "notify_events",
                "tasks_refused",
                "method_not_allowed",
                "bad_event",
                "no_dialog",
            ),
            0,
        )

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.transport.start(self.config.host, self.config.port)
        self.config.port = self.transport.port
        self._housekeeper = asyncio.create_task(self._housekeeping())

    async def stop(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        if self._query_pump is not None:
            self._query_pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._query_pump
        self._to_query.clear()
        for sub in self.subscriptions.values():
            if sub.renew_task is not None:
                sub.renew_task.cancel()
        for task in [*self._tasks, *self._catalog_tasks]:
            task.cancel()
        if self._tasks or self._catalog_tasks:
            await asyncio.gather(*self._tasks, *self._catalog_tasks, return_exceptions=True)
        self.catalogs.close()
        await self.transport.stop()

    @property
    def port(self) -> int:
        return self.transport.port

    def metrics(self) -> dict[str, int]:
        out = dict(self.counters)
        out.update({f"transport_{k}": v for k, v in self.transport.counters.items()})
        out.update({f"transaction_{k}": v for k, v in self.transactions.counters.items()})
        out["registrations"] = len(self.registrar.registrations)
        out["requests_in_flight"] = self._in_flight
        out["catalog_sessions"] = len(self.catalogs)
        out["catalog_backlog_items"] = self.catalog_backlog
        out["devices_to_query"] = len(self._to_query)
        out["transactions_in_flight"] = len(self.transactions)
        out["replay_cache_entries"] = len(self.verifier.replays)
        out["rate_limiter_sources"] = len(self.transport.limiter)
        out["response_cache_entries"] = len(self.responses)
        out["devices_online"] = self.devices_online()
        out["play_sessions"] = len(self.sessions)
        out["subscriptions"] = len(self.subscriptions)
        return out

    def devices_online(self) -> int:
        """Registered devices whose keepalives have not timed out."""
        return sum(
            1
            for device_id, live in self._liveness.items()
            if not live.timed_out and self.registrar.live(device_id) is not None
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if len(self._tasks) >= self.config.max_tasks:
            self.counters["tasks_refused"] += 1
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("GB/T 28181 background task failed: %r", task.exception())

    async def _housekeeping(self) -> None:
        """Expiries and missed keepalives, as events handed over in one task per pass.

        One task per pass, never refused: these events are not re-issued (the next pass only
        reports later intervals), so one spawned per device against the task budget lost the
        offline of whatever did not fit when a few thousand devices went silent together.
        """
        while True:
            await asyncio.sleep(self.config.housekeeping_s)
            events: list[Coroutine[Any, Any, Any]] = []
            for reg in self.registrar.expire():
                self.counters["expired"] += 1
                self.transport.platforms.discard(reg.source.addr)
                self._liveness.pop(reg.device_id, None)
                events.append(self.events.on_unregister(reg.device_id, "expired"))
            now = time.monotonic()
            cutoff = now - self.config.keepalive_timeout_s
            interval = self.config.keepalive_interval_s
            # A keepalive is missed only a quarter interval after it was due: a device that
            # keeps alive every 60 s, as ours asks, arrives a little after 60 s whenever the
            # network or this loop is busy, and one failure per device every minute made a
            # 50,000-device wave flap and fill the database pool with health writes.
            grace = interval / 4
            misses: list[tuple[str, int]] = []
            # `_liveness` is in the order devices were last seen (each is moved to the end
            # when seen): past the first device that has neither missed an interval nor timed
            # out, none has (reading all 50,000 each second was ~35 ms of the loop in one piece)
            timeout = self.config.keepalive_timeout_s
            for device_id, live in self._liveness.items():
                age = now - live.last_seen
                if age - grace < interval and age <= timeout:
                    break
                missed = max(0, int((now - live.last_seen - grace) // interval))
                for m in range(live.missed + 1, missed + 1):  # one event per interval
                    misses.append((device_id, m))
                live.missed = max(live.missed, missed)
                if not live.timed_out and live.last_seen < cutoff:
                    live.timed_out = True
                    self.counters["keepalive_timeouts"] += 1
                    events.append(self.events.on_keepalive_timeout(device_id))
            if misses:  # before the timeouts of the same pass, as they happened
                events.insert(0, self.events.on_keepalives_missed(misses))
            if events:
                task = asyncio.get_running_loop().create_task(self._in_turn(events))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    @staticmethod
    async def _in_turn(events: list[Coroutine[Any, Any, Any]], at_once: int = 8) -> None:
        """Await the events `at_once` at a time, in order: each may hold a database connection,
        and the pool must keep room for registrations (their password lookups)."""
        for i in range(0, len(events), at_once):
            try:
                results = await asyncio.gather(*events[i : i + at_once], return_exceptions=True)
            except BaseException:  # cancelled at stop: the rest will not run
                for coro in events[i + at_once :]:
                    coro.close()
                raise
            for r in results:
                if isinstance(r, Exception):
                    log.warning("GB/T 28181 housekeeping event failed: %r", r)

    # --- incoming ---------------------------------------------------------------------------
    def _send(self, response: SipResponse, peer: Peer, cache_key: Any = None) -> None:
        if 400 <= response.status < 500:
            self.refusals[(response.status, response.why or "unspecified")] += 1
        data = response.serialise()
        if cache_key is not None:
            self.responses.put(cache_key, data)
        self.transport.send(data, peer)

    def _on_parse_error(self, data: bytes, peer: Peer, exc: SipParseError) -> None:
        """Answer 400 when the request is readable enough to answer, else just count."""
        self.counters["malformed_message"] += 1
        if not data:
            return
        if isinstance(exc, MessageTooLarge) and peer.transport == "UDP":
            try:
                message = parse_message(data, max_body=len(data))
            except SipParseError:
                return
            if isinstance(message, SipRequest) and message.method != "ACK":
                self.counters["oversized_body"] += 1
                self._send(
                    build_response(
                        message, 400, "Bad Request: body too large", why="oversized_body"
                    ),
                    peer,
                )

    def _early(self, data: bytes, peer: Peer) -> bool:
        """Answer a retransmitted UDP request from the response cache before parsing it.

        A retransmission of a request still being handled is absorbed (its answer goes out
        once, when ready); of one answered, gets the same bytes again. Either way it is never
        turned into work again. The key is kept for `_on_message`, which runs next, at once.
        """
        if self.transport.age >= self.config.shed_wait_s:
            if self._late_since is None:
                self._late_since = time.monotonic()
        else:
            self._late_since = None
        key = self._key = ResponseCache.raw_key(data, peer)
        if key is None:
            return False
        seen, cached = self.responses.lookup(key)
        if not seen:
            return False
        self.counters["retransmissions_absorbed"] += 1
        if cached is not None:
            self.transport.send(cached, peer)
        return True

    def _on_message(self, message: SipRequest | SipResponse, peer: Peer) -> None:
        key, self._key = self._key, None
        if isinstance(message, SipResponse):
            self.transactions.on_response(message)
            return
        self.counters["requests"] += 1
        if message.method == "ACK":
            return  # ACK ends a server INVITE transaction; this server answers none itself
        if peer.transport != "UDP":
            key = None
        if (
            message.method == "REGISTER"
            and self._behind()
            and self._new_device(message)
            and (self._admit is None or not self._admit.allow(None))
        ):
            self._shed(message, peer, key)
            return
        if self._in_flight >= self.config.max_concurrent:
            self.counters["overloaded"] += 1
            if peer.transport == "TCP":
                resp = build_response(message, 503)
                resp.headers.add("Retry-After", "5")
                self._send(resp, peer)
            return
        if key is not None:
            self.responses.put(key, None)
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._handle(message, peer, key))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _behind(self) -> bool:
        """Is this server behind: every request read for a while had waited too long, or too
        much is being handled? Either way answers are heading past the device's T1 (0.5 s), and
        each late answer brings retransmissions (up to 10 per request) that add to the load."""
        cfg = self.config
        if self._in_flight >= cfg.shed_in_flight:
            return True
        # late on end, not once: one stall of the process (a busy machine) delays the datagrams
        # read after it, and those must not cost a device a Retry-After
        since = self._late_since
        return since is not None and time.monotonic() - since >= cfg.shed_after_s

    def _new_device(self, request: SipRequest) -> bool:
        """A REGISTER that starts new work: no credentials yet (a device mid-handshake, having
        been challenged, is let through) from a device not registered now."""
        if request.headers.get("Authorization") is not None:
            return False
        try:
            device_id = request.from_.uri.user or ""
        except SipParseError:
            return False  # answered 400 by the registrar
        return self.registrar.live(device_id) is None

    def _shed(self, request: SipRequest, peer: Peer, key: Any) -> None:
        """503 Service Unavailable + Retry-After (RFC 3261 §21.5.4), cached for the request's
        retransmissions. The delay is jittered so shed devices do not return together."""
        self.counters["shed"] += 1
        self._send(self._unavailable(request, peer), peer, key)

    def _unavailable(self, request: SipRequest, peer: Peer) -> SipResponse:
        low, high = self.config.shed_retry_after_s
        resp = build_response(request, 503, to_tag=new_tag(), source=peer.addr)
        resp.headers.add("Retry-After", str(low + secrets.randbelow(max(0, high - low) + 1)))
        return resp

    async def _handle(self, request: SipRequest, peer: Peer, key: Any) -> None:
        after: list[Coroutine[Any, Any, Any]] = []
        try:
            response: SipResponse | None
            if request.method == "REGISTER":
                response = await self._register_in_time(request, peer, after)
            else:
                response = await self._dispatch(request, peer, after)
            if response is not None:
                self._send(response, peer, key)
            elif key is not None:
                # left unanswered on purpose (catalog backpressure over UDP): the sender's
                # retransmission must be processed anew, not absorbed as one in hand
                self.responses.forget(key)
        except Exception:  # a bug must not kill the server, but must be seen
            log.exception("GB/T 28181: failed handling %s", request.method)
            self._send(build_response(request, 500), peer, key)
        finally:
            self._in_flight -= 1
        for coro in after:
            await coro

    async def _register_in_time(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse:
        """A REGISTER answered within `register_deadline_s`, else 503 + Retry-After.

        Its only wait is the registry's password lookup (before any state changes, so it can
        be abandoned). When the database is that slow the device would otherwise hear nothing
        for its 32 s of retransmissions and give up; told to come back, it retries.
        """
        try:
            async with asyncio.timeout(self.config.register_deadline_s):
                return await self._register(request, peer, after)
        except TimeoutError:
            self.counters["register_late"] += 1
            return self._unavailable(request, peer)

    async def _dispatch(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse | None:
        method = request.method
        if method == "REGISTER":
            return await self._register(request, peer, after)
        if method == "MESSAGE":
            return await self._message(request, peer, after)
        if method == "NOTIFY":
            return self._notify(request, peer, after)
        if method == "BYE":
            return self._bye(request, peer, after)
        if method == "OPTIONS":
            resp = build_response(request, 200, to_tag=new_tag(), source=peer.addr)
            resp.headers.add("Allow", "REGISTER, MESSAGE, NOTIFY, BYE, ACK, OPTIONS")
            return resp
        handler = self.handlers.get(method)
        if handler is not None:
            return await handler(request, peer)
        if method == "CANCEL":
            self.counters["no_dialog"] += 1
            return build_response(request, 481, to_tag=new_tag(), source=peer.addr, why="no_dialog")
        self.counters["method_not_allowed"] += 1
        resp = build_response(
            request, 405, to_tag=new_tag(), source=peer.addr, why="method_not_allowed"
        )
        resp.headers.add("Allow", "REGISTER, MESSAGE, NOTIFY, BYE, ACK, OPTIONS")
        return resp

    async def _register(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse:
        outcome = await self.registrar.handle(request, peer)
        if outcome.refusal is not None:
            self.counters[outcome.refusal] = self.counters.get(outcome.refusal, 0) + 1
        if outcome.unregistered is not None:
            self.counters["unregistered"] += 1
            self.transport.platforms.discard(outcome.unregistered.source.addr)
            self._liveness.pop(outcome.unregistered.device_id, None)
            self._drop_subscription(outcome.unregistered.device_id)
            after.append(self.events.on_unregister(outcome.unregistered.device_id, "unregistered"))
        reg = outcome.registration
        if reg is not None:
            self.counters["registered"] += 1
            if reg.device_id[10:13] == "200":  # a lower platform: it pushes whole catalogs
                self.transport.platforms.add(reg.source.addr)
            self._liveness.pop(reg.device_id, None)  # to the end: the order is last seen
            self._liveness[reg.device_id] = _Liveness(time.monotonic())
            after.append(self.events.on_register(reg, outcome.is_new))
            if outcome.is_new and self.config.query_after_register:
                after.append(self._after_register(reg.device_id))
        return outcome.response

    async def _after_register(self, device_id: str) -> None:
        """Re-read what the device is after every (re-)registration, in the background.

        Queued, not spawned against the task budget: at a registration wave the budget is
        full of SIP work and a refused query was a device whose catalog was never read (18
        of 10,000 devices' catalogs lost). The queue holds each device once, so it is bounded
        by the registrations; `max_device_queries` devices are queried at a time, below the
        catalog assembler's session limit.
        """
        self._to_query[device_id] = None
        if self._query_pump is None or self._query_pump.done():
            self._query_pump = asyncio.get_running_loop().create_task(self._pump_queries())

    async def _pump_queries(self) -> None:
        while self._to_query:
            await self._query_slots.acquire()
            if not self._to_query:
                self._query_slots.release()
                return
            device_id = next(iter(self._to_query))
            del self._to_query[device_id]
            task = asyncio.get_running_loop().create_task(self._query_device(device_id))
            self._tasks.add(task)
            task.add_done_callback(self._query_done)

    def _query_done(self, task: asyncio.Task[Any]) -> None:
        self._query_slots.release()
        self._task_done(task)

    async def _query_device(self, device_id: str) -> None:
        await asyncio.gather(
            self._quietly(self._whole_catalog(device_id)),
            self._quietly(self.query(device_id, "DeviceInfo")),
        )

    async def _whole_catalog(self, device_id: str) -> None:
        """Query the catalog; if it ended partial (idle timeout before SumNum items), once more.

        Under load a device whose MESSAGE went unanswered for its 32 s of retransmissions gives
        up the rest of its catalog: those channels would be lost until it next registers. A
        second query gets them; a device that really sends fewer than SumNum items is asked
        once again only (both answers are kept, the second is the one recorded last).
        """
        result = await self.query_catalog(device_id)
        if result.complete or not result.tracked or self.registrar.live(device_id) is None:
            return
        self.counters["catalogs_requeried"] += 1
        await self.query_catalog(device_id)

    async def _quietly(self, aw: Awaitable[Any]) -> None:
        try:
            await aw
        except Gb28181Error as exc:
            log.info("GB/T 28181 query failed: %s", exc)

    def _registered_sender(self, request: SipRequest, peer: Peer) -> tuple[str, SipResponse | None]:
        try:
            device_id = request.from_.uri.user or ""
        except SipParseError:
            self.counters["malformed_message"] += 1
            return "", build_response(request, 400, source=peer.addr, why="malformed_message")
        reg = self.registrar.live(device_id)
        if reg is None:
            self.counters["not_registered"] += 1
            return device_id, build_response(
                request,
                403,
                "Forbidden: not registered",
                to_tag=new_tag(),
                source=peer.addr,
                why="not_registered",
            )
        if reg.source.host != peer.host:
            self.counters["source_mismatch"] += 1
            return device_id, build_response(
                request,
                403,
                "Forbidden: not from the registered address",
                source=peer.addr,
                why="source_mismatch",
            )
        live = self._liveness.pop(device_id, None)
        if live is not None:
            self._liveness[device_id] = live  # to the end: the order is last seen
            live.last_seen = time.monotonic()
            live.timed_out = False
            live.missed = 0
        return device_id, None

    def _body(self, request: SipRequest, peer: Peer) -> tuple[Manscdp | None, SipResponse | None]:
        if request.content_type != "application/manscdp+xml":
            self.counters["unsupported_content_type"] += 1
            resp = build_response(
                request, 415, to_tag=new_tag(), source=peer.addr, why="unsupported_content_type"
            )
            resp.headers.add("Accept", manscdp.CONTENT_TYPE)
            return None, resp
        if len(request.body) > self.config.max_manscdp_bytes:
            self.counters["oversized_body"] += 1
            return None, build_response(
                request,
                400,
                "Bad Request: body too large",
                to_tag=new_tag(),
                source=peer.addr,
                why="oversized_body",
            )
        try:
            msg = manscdp.parse_manscdp(
                request.body, request.charset, max_bytes=self.config.max_manscdp_bytes
            )
        except BodyCharsetError:
            self.counters["charset_refused"] += 1
            return None, build_response(
                request,
                400,
                "Bad Request: body is neither UTF-8 nor GB2312/GBK/GB18030",
                to_tag=new_tag(),
                source=peer.addr,
                why="charset_refused",
            )
        except ManscdpError:
            self.counters["malformed_body"] += 1
            return None, build_response(
                request,
                400,
                "Bad Request: malformed MANSCDP body",
                to_tag=new_tag(),
                source=peer.addr,
                why="malformed_body",
            )
        if msg.decoded.mislabelled:
            self.counters["mislabelled_charset"] += 1
        return msg, None

    async def _message(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse | None:
        device_id, refusal = self._registered_sender(request, peer)
        if refusal is not None:
            return refusal
        msg, refusal = self._body(request, peer)
        if refusal is not None or msg is None:
            assert refusal is not None
            return refusal
        is_catalog = msg.root == "Response" and msg.cmd_type == "Catalog"
        if is_catalog and not await self._catalog_admit(request, peer):
            return None  # the sender retransmits it (UDP): taken when the store has caught up
        self._note_charset(device_id, msg.decoded, after)
        ok = build_response(request, 200, to_tag=new_tag(), source=peer.addr)
        cmd = msg.cmd_type
        if msg.root == "Notify" and cmd == "Keepalive":
            self.counters["keepalives"] += 1
            after.append(self.events.on_keepalive(device_id))
        elif msg.root == "Response" and cmd == "Catalog":
            self.counters["catalog_messages"] += 1
            self.catalogs.add(device_id, msg)
        elif msg.root == "Notify" and cmd == "Catalog":
            self._catalog_events(device_id, msg, after)
        elif msg.root == "Response" and (device_id, cmd, msg.sn) in self._queries:
            future = self._queries.pop((device_id, cmd, msg.sn))
            if not future.done():
                future.set_result(msg)
        else:
            self.counters["unhandled_cmd"] += 1
        if msg.root == "Response" and cmd == "DeviceInfo":
            after.append(self.events.on_device_info(device_id, msg))
        elif msg.root == "Response" and cmd == "DeviceStatus":
            after.append(self.events.on_device_status(device_id, msg))
        return ok

    def _note_charset(
        self, device_id: str, decoded: DecodedBody, after: list[Coroutine[Any, Any, Any]]
    ) -> None:
        """Remember what the device's bodies really are; tell the registry when it changes.

        An ASCII body (a keepalive) says nothing about the charset beyond its declaration,
        so it never replaces what non-ASCII bytes showed.
        """
        old = self.charsets.get(device_id)
        if old is not None and (
            (old.sniffed and not decoded.sniffed)
            or (old.charset, old.declared, old.sniffed)
            == (decoded.charset, decoded.declared, decoded.sniffed)
        ):
            return  # the common case (a keepalive): nothing new, nothing built
        seen = DeviceCharset(decoded.charset, decoded.declared, decoded.sniffed)
        self.charsets.pop(device_id, None)
        self.charsets[device_id] = seen
        if len(self.charsets) > self.config.max_sources:
            del self.charsets[next(iter(self.charsets))]
        after.append(self.events.on_charset(device_id, seen))

    def charset_for(self, device_id: str) -> str:
        """The charset to write a device's MANSCDP bodies in: what it really sends us."""
        known = self.charsets.get(device_id)
        return (known.to_send if known is not None else None) or self.config.charset

    def _catalog_events(
        self, device_id: str, msg: Manscdp, after: list[Coroutine[Any, Any, Any]]
    ) -> None:
        items = [item for item in msg.items if item.device_id]
        self.counters["notify_events"] += len(items)
        for item in items:
            self.notify_by_event[_event_label(item.event)] += 1
        after.append(self.events.on_notify(device_id, items))

    def _notify(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse:
        device_id, refusal = self._registered_sender(request, peer)
        if refusal is not None:
            return refusal
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event and event != "catalog":
            self.counters["bad_event"] += 1
            return build_response(request, 489, source=peer.addr, why="bad_event")
        msg, refusal = self._body(request, peer)
        if refusal is not None or msg is None:
            assert refusal is not None
            return refusal
        self._note_charset(device_id, msg.decoded, after)
        state = (request.headers.get("Subscription-State") or "").lower()
        if state.startswith("terminated"):
            self._drop_subscription(device_id)
        self._catalog_events(device_id, msg, after)
        return build_response(request, 200, source=peer.addr)

    def _bye(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse:
        session = self.sessions.pop(request.call_id, None)
        if session is None:
            self.counters["no_dialog"] += 1
            return build_response(request, 481, source=peer.addr, why="no_dialog")
        after.append(self.events.on_play_ended(session, "device sent BYE"))
        return build_response(request, 200, source=peer.addr)

    # --- outgoing ---------------------------------------------------------------------------
    def _registration(self, device_id: str) -> Registration:
        reg = self.registrar.live(device_id)
        if reg is None:
            raise DeviceNotRegistered(f"device {device_id} is not registered")
        return reg

    def _request(
        self,
        method: str,
        target: Peer,
        to_user: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        dialog: Dialog | None = None,
        extra: dict[str, str] | None = None,
    ) -> SipRequest:
        cfg = self.config
        headers = Headers()
        headers.add(
            "Via",
            f"SIP/2.0/{target.transport} {cfg.host}:{self.port};rport;branch={new_branch()}",
        )
        if dialog is None:
            uri = f"sip:{to_user}@{target.host}:{target.port}"
            headers.add("From", f"<sip:{cfg.server_id}@{cfg.domain}>;tag={new_tag()}")
            headers.add("To", f"<sip:{to_user}@{to_user[:10]}>")
            headers.add("Call-ID", new_call_id(cfg.host))
            headers.add("CSeq", f"{next(self._cseq)} {method}")
        else:
            dialog.cseq += 1
            uri = dialog.request_uri
            headers.add("From", f"<{dialog.local_uri}>;tag={dialog.local_tag}")
            headers.add("To", f"<{dialog.remote_uri}>;tag={dialog.remote_tag}")
            headers.add("Call-ID", dialog.call_id)
            headers.add("CSeq", f"{dialog.cseq} {method}")
        headers.add("Max-Forwards", "70")
        headers.add("User-Agent", cfg.user_agent)
        for name, value in (extra or {}).items():
            headers.add(name, value)
        if content_type:
            headers.add("Content-Type", content_type)
        return SipRequest(headers, body, method, uri)

    async def _send_manscdp(self, device_id: str, body: bytes) -> SipResponse:
        reg = self._registration(device_id)
        request = self._request(
            "MESSAGE", reg.target, device_id, body=body, content_type=manscdp.CONTENT_TYPE
        )
        response = await self.transactions.request(request, reg.target)
        if response.status >= 300:
            raise RequestRefused(response.status, response.reason)
        return response

    async def query_catalog(self, device_id: str) -> CatalogResult:
        """Query Catalog and wait for the assembled answer (complete, or partial at idle)."""
        self._registration(device_id)
        sn = next(self._sn)
        future = self.catalogs.expect(device_id, sn)
        if future is None:
            raise Gb28181Error("too many catalog queries in progress; try again later")
        try:
            await self._send_manscdp(
                device_id,
                manscdp.build_query("Catalog", sn, device_id, charset=self.charset_for(device_id)),
            )
        except Gb28181Error:
            future.cancel()
            self.catalogs.abandon(device_id, sn)
            raise
        return await future

    async def query(self, device_id: str, cmd_type: str) -> Manscdp:
        """Query DeviceInfo / DeviceStatus (or any one-message query) and await the Response."""
        if len(self._queries) >= self.config.max_pending_queries:
            raise Gb28181Error("too many queries in progress; try again later")
        sn = next(self._sn)
        key = (device_id, cmd_type, sn)
        future: asyncio.Future[Manscdp] = asyncio.get_running_loop().create_future()
        self._queries[key] = future
        try:
            await self._send_manscdp(
                device_id,
                manscdp.build_query(cmd_type, sn, device_id, charset=self.charset_for(device_id)),
            )
            async with asyncio.timeout(self.config.query_timeout_s):
                return await future
        except TimeoutError:
            raise TransactionTimeout(
                f"{device_id} did not answer {cmd_type} within {self.config.query_timeout_s} s"
            ) from None
        finally:
            self._queries.pop(key, None)

    def _dialog_from(self, request: SipRequest, response: SipResponse, fallback: Peer) -> Dialog:
        contact = response.contact
        if contact is not None:
            target = target_for(contact.uri.host, contact.uri.port, fallback)
            request_uri = str(contact.uri)
            if target == fallback:
                request_uri = f"sip:{contact.uri.user or ''}@{fallback.host}:{fallback.port}"
        else:
            target, request_uri = fallback, request.uri
        return Dialog(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag or "",
            local_uri=str(request.from_.uri),
            remote_uri=str(request.to.uri),
            target=target,
            request_uri=request_uri,
            cseq=request.cseq[0],
        )

    async def subscribe_catalog(self, device_id: str, expires_s: int | None = None) -> Subscription:
        """SUBSCRIBE to the device's catalog changes; renewed at 80 % of the granted expiry."""
        reg = self._registration(device_id)
        expires = expires_s or self.config.subscribe_expires
        sn = next(self._sn)
        request = self._request(
            "SUBSCRIBE",
            reg.target,
            device_id,
            body=manscdp.build_query("Catalog", sn, device_id, charset=self.charset_for(device_id)),
            content_type=manscdp.CONTENT_TYPE,
            extra={
                "Event": f"Catalog;id={sn}",
                "Expires": str(expires),
                "Contact": self._contact(reg.target),
            },
        )
        response = await self.transactions.request(request, reg.target)
        if response.status >= 300:
            raise RequestRefused(response.status, response.reason)
        granted = expires
        text = response.headers.get("Expires")
        if text and text.isdigit():
            granted = int(text)
        self._drop_subscription(device_id)
        sub = Subscription(device_id, self._dialog_from(request, response, reg.target), granted)
        self.subscriptions[device_id] = sub
        if granted > 0:
            sub.renew_task = asyncio.create_task(self._renew(sub))
        return sub

    async def _renew(self, sub: Subscription) -> None:
        while True:
            await asyncio.sleep(max(1.0, sub.expires_s * 0.8))
            request = self._request(
                "SUBSCRIBE",
                sub.dialog.target,
                sub.device_id,
                dialog=sub.dialog,
                extra={"Event": "Catalog", "Expires": str(sub.expires_s)},
            )
            try:
                response = await self.transactions.request(request, sub.dialog.target)
            except Gb28181Error as exc:
                log.info("catalog subscription renewal for %s failed: %s", sub.device_id, exc)
                continue
            if response.status >= 300:
                self.subscriptions.pop(sub.device_id, None)
                return

    def _drop_subscription(self, device_id: str) -> None:
        sub = self.subscriptions.pop(device_id, None)
        if sub is not None and sub.renew_task is not None:
            sub.renew_task.cancel()

    def _contact(self, target: Peer) -> str:
        cfg = self.config
        return f"<sip:{cfg.server_id}@{cfg.host}:{self.port};transport={target.transport.lower()}>"

    async def invite(
        self,
        device_id: str,
        channel_id: str,
        *,
        media_ip: str,
        media_port: int,
        tcp: str | None = None,
        ssrc: str | None = None,
    ) -> PlaySession:
        """INVITE a channel to stream to the media server; ACK the 200; return the session."""
        try:
            session = await self._invite(device_id, channel_id, media_ip, media_port, tcp, ssrc)
        except DeviceNotRegistered:
            self.invites["not_registered"] += 1
            raise
        except RequestRefused:
            self.invites["refused"] += 1
            raise
        except TransactionTimeout:
            self.invites["timeout"] += 1
            raise
        except Gb28181Error:
            self.invites["bad_answer"] += 1
            raise
        except asyncio.CancelledError:  # the caller's own deadline (invite_timeout_s)
            self.invites["timeout"] += 1
            raise
        self.invites["ok"] += 1
        return session

    async def _invite(
        self,
        device_id: str,
        channel_id: str,
        media_ip: str,
        media_port: int,
        tcp: str | None,
        ssrc: str | None,
    ) -> PlaySession:
        reg = self._registration(device_id)
        ssrc = ssrc or sdp.play_ssrc(self.config.domain, next(self._ssrc))
        body = sdp.play_offer(
            channel_id=channel_id, media_ip=media_ip, media_port=media_port, ssrc=ssrc, tcp=tcp
        )
        request = self._request(
            "INVITE",
            reg.target,
            channel_id,
            body=body,
            content_type="APPLICATION/SDP",
            extra={
                "Subject": f"{channel_id}:{ssrc},{self.config.server_id}:0",
                "Contact": self._contact(reg.target),
            },
        )
        response = await self.transactions.request(request, reg.target)
        if response.status >= 300:
            raise RequestRefused(response.status, response.reason)
        dialog = self._dialog_from(request, response, reg.target)
        ack = self._request("ACK", dialog.target, channel_id, dialog=dialog)
        ack.headers.set("CSeq", f"{request.cseq[0]} ACK")
        dialog.cseq = request.cseq[0]
        self.transport.send(ack.serialise(), dialog.target)
        try:
            answer = sdp.parse_answer(response.body)
        except Gb28181Error:
            await self._send_bye(dialog, channel_id)
            raise
        session = PlaySession(device_id, channel_id, answer.ssrc or ssrc, dialog, answer)
        self.sessions[dialog.call_id] = session
        return session

    async def bye(self, session: PlaySession, reason: str = "stopped") -> None:
        if self.sessions.pop(session.dialog.call_id, None) is None:
            return
        try:
            await self._send_bye(session.dialog, session.channel_id)
        finally:
            await self.events.on_play_ended(session, reason)

    async def _send_bye(self, dialog: Dialog, channel_id: str) -> None:
        request = self._request("BYE", dialog.target, channel_id, dialog=dialog)
        await self.transactions.request(request, dialog.target)

    async def _catalog_admit(self, request: SipRequest, peer: Peer) -> bool:
        """Backpressure on catalog MESSAGEs while the store is behind; False: not answered.

        A lower platform pushes its catalog faster than the store writes it, and what waits
        for the store is memory. RFC 3261 paces the sender for us if we do not answer: over
        UDP it retransmits the MESSAGE (T1 doubling to T2), so a MESSAGE left unanswered is
        sent again and taken when there is room (nothing lost; its items are keyed, so
        nothing is counted twice). Over TCP nothing is retransmitted and the sender gives up
        after 64·T1 (32 s) without a final response, so there the answer is delayed instead
        (at most `catalog_hold_s`, then taken anyway) while its next MESSAGEs wait behind
        its in-flight window. A 503 would be a final answer: senders drop the items.
        """
        if self._catalog_room.is_set():
            return True
        if peer.transport == "UDP":
            self.counters["catalog_messages_deferred"] += 1
            self.catalogs.deferred()
            return False  # `_handle` forgets its cache entry: the retransmission is taken anew
        if self._catalog_held >= self.config.catalog_max_held:
            return True
        self.counters["catalog_messages_held"] += 1
        self._catalog_held += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.catalog_hold_s):
                    await self._catalog_room.wait()
        finally:
            self._catalog_held -= 1
        return True

    def _catalog_written(self, items: int) -> None:
        self.catalog_backlog -= items
        if not self._catalog_room.is_set() and (
            self.catalog_backlog <= self.config.catalog_backlog_items // 2
        ):
            self._catalog_room.set()
            self.catalogs.resume()

    def _catalog_done(self, result: CatalogResult) -> None:
        """Hand an assembled catalog over, never refused: it is data the device already sent
        (bounded by the assembler's sessions, each of which completes once, and its buffer:
        a big catalog comes as batches of `catalog_batch_items`, the last one `final`)."""
        if result.final and not result.tracked:
            self.counters["catalogs_counted_by_store"] += 1
        elif result.final:
            self.counters["catalogs_complete" if result.complete else "catalogs_partial"] += 1
        else:
            self.counters["catalog_batches"] += 1
        items = max(1, len(result.items))
        self.catalog_backlog += items
        limit = self.config.catalog_backlog_items
        if self._catalog_room.is_set() and self.catalog_backlog >= limit:
            self.counters["catalog_backpressure"] += 1
            self._catalog_room.clear()
            self.catalogs.hold()
        task = asyncio.get_running_loop().create_task(self.events.on_catalog(result))
        self._catalog_tasks.add(task)
        task.add_done_callback(self._catalog_tasks.discard)
        task.add_done_callback(self._task_done)
        task.add_done_callback(lambda _: self._catalog_written(items))


NOTIFY_EVENTS = ("ADD", "DEL", "UPDATE", "ON", "OFF", "VLOST", "DEFECT")


def _event_label(event: str | None) -> str:
    """A NOTIFY item's event as a metric label: the standard's words, else "other"."""
    word = (event or "").upper()
    return word if word in NOTIFY_EVENTS else "other"
