"""One upper platform (上级平台): we register to it as its lower platform and serve what it asks.

Each upstream has its own SIP socket (UDP and TCP on one local port), so requests from above
reach the client they belong to without a lookup, and one misbehaving platform cannot starve
another's transactions. The client never fails silently: every refusal or timeout from the
upper platform is kept as `last_error` with the SIP status and the reason it answered, counted,
and shown in the API and on /metrics (WVP's users see only "注册失败: 消息超时未回复").

Bounds: one catalog push at a time per upstream (a second query waits, a third is 486),
at most `MAX_TASKS` request handlers, `MAX_SESSIONS` live views, transactions and the
response cache bounded by the SIP stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import random
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from api.cascade import catalog
from api.cascade.media import MediaClient, MediaError
from api.gbplayer import GbPlayer
from camera_registry.actor import Actor, Role
from camera_registry.config import UpstreamSettings
from camera_registry.crypto import CredentialBox
from camera_registry.errors import RegistryError
from camera_registry.store import audit
from camera_registry.store import upstreams as store
from camera_registry.store.streams import with_credentials
from ingest.gb28181 import manscdp, sdp
from ingest.gb28181.digest import authorization_for
from ingest.gb28181.errors import (
    Gb28181Error,
    ManscdpError,
    RequestRefused,
    SipParseError,
    TransactionTimeout,
)
from ingest.gb28181.message import (
    Headers,
    SipRequest,
    SipResponse,
    build_response,
    new_branch,
    new_call_id,
    new_tag,
)
from ingest.gb28181.registrar import gb_date
from ingest.gb28181.transactions import ClientTransactions
from ingest.gb28181.transport import Peer, ResponseCache, SipTransport
from ingest.gb28181.zlm import RTP_APP

log = logging.getLogger(__name__)

MAX_TASKS = 256
MAX_SESSIONS = 256
MAX_QUEUED_CATALOGS = 1
USER_AGENT = "camera-registry cascade"


@dataclass(slots=True)
class LastError:
    what: str  # REGISTER | keepalive | catalog | INVITE | ...
    status: int | None  # the SIP status the upper platform answered; None: no answer
    reason: str
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "status": self.status, "reason": self.reason, "at": self.at}


@dataclass(slots=True)
class Subscription:
    """The upper platform's catalog subscription (we are the notifier, RFC 6665)."""

    call_id: str
    local_tag: str
    remote: str  # their From, with their tag: our NOTIFYs' To
    event: str
    expires_at: float
    cseq: int = 0


@dataclass(slots=True)
class UpSession:
    """A live view the upper platform asked for: media leg + dialog, audited when it ends."""

    call_id: str
    channel_id: str
    camera_id: Any
    region_code: str
    ssrc: str
    stream: str
    dst: str
    to_tag: str
    gb_key: str | None = None  # a GB channel's downward leg we hold (app `rtp`); None: a proxy
    stream_gone: bool = False  # the device hung up: nothing left to release
    remote: str = ""  # the INVITE's From (with the upper platform's tag): our BYE's To
    remote_target: str = ""  # the INVITE's Contact URI: our BYE's Request-URI
    cseq: int = 0
    started: float = field(default_factory=time.monotonic)
    acked: asyncio.Event = field(default_factory=asyncio.Event)


def _reason_text(text: str) -> str:
    """A SIP reason phrase from any message: one line, bounded."""
    return " ".join(text.split())[:120]


class UpstreamClient:
    def __init__(
        self,
        upstream_id: str,
        settings: UpstreamSettings,
        pool: asyncpg.Pool,
        box: CredentialBox,
        *,
        media: MediaClient | None = None,
        player: GbPlayer | None = None,
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        t1: float = 0.5,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 300.0,
        catalog_window: int = 16,
    ) -> None:
        self.id = upstream_id
        self.settings = settings
        self.pool = pool
        self.box = box
        self.media = media
        self.player = player
        self.local_host = local_host
        self.local_port = local_port
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.catalog_window = catalog_window
        self.peer = Peer(settings.transport.upper(), settings.host, settings.port)
        self.transport = SipTransport(
            self._on_message,
            self._on_parse_error,
            max_body=256 * 1024,
            # the upper platform answers every catalog MESSAGE: thousands a second are normal
            rate_per_source=1_000_000.0,
            burst_per_source=1_000_000.0,
            max_sources=1_000,
            max_tcp_connections=64,
        )
        self.transactions = ClientTransactions(self.transport, t1=t1)
        self.responses = ResponseCache(max_entries=10_000)
        self.pacer = catalog.Pacer(
            settings.items_per_s, burst=max(settings.catalog_group_size, settings.items_per_s / 20)
        )
        self.actor = Actor(f"gb28181-upstream:{settings.name}", Role.COMMANDER)
        self.state = "stopped"
        self.last_error: LastError | None = None
        self.timings: dict[str, Any] = {
            "registered_at": None,
            "register_seconds": None,
            "expires_s": None,
            "last_keepalive_ok_at": None,
            "keepalive_rtt_s": None,
            "next_attempt_at": None,
            "last_catalog": None,
        }
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "register_attempts",
                "registered",
                "register_failures",
                "auth_refused",
                "keepalives_sent",
                "keepalives_ok",
                "keepalive_misses",
                "went_offline",
                "requests_received",
                "requests_refused",
                "wrong_source",
                "malformed",
                "catalog_queries",
                "catalog_pushes",
                "catalog_items_sent",
                "catalog_messages_sent",
                "catalog_failures",
                "catalog_busy",
                "device_info",
                "device_status",
                "subscriptions",
                "notify_items_sent",
                "notify_failures",
                "invites",
                "invites_refused",
                "views_started",
                "views_ended",
                "unhandled_cmd",
            ),
            0,
        )
        self.sessions: dict[str, UpSession] = {}
        self.subscription: Subscription | None = None
        self._notifier: asyncio.Task[None] | None = None
        self.notify_interval_s = settings.notify_interval_s
        self._granted = settings.register_expires
        self._call_id = new_call_id(local_host)
        self._from_tag = new_tag()
        self._cseq = itertools.count(1)
        self._sn = itertools.count(1)
        self._catalog_lock = asyncio.Lock()
        self._catalog_waiting = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._streams: dict[str, int] = {}  # media stream → live views on it (proxy refcount)
        self._proxy_keys: dict[str, str] = {}

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def local_id(self) -> str:
        return self.settings.local_id

    @property
    def port(self) -> int:
        return self.transport.port

    async def start(self) -> None:
        """Bind the SIP socket and start registering; a bind failure is recorded, not raised.

        With port 0 the UDP port is picked by the kernel and TCP must bind the same number,
        which another socket may hold: pick again a few times before giving up.
        """
        for attempt in range(5):
            try:
                await self.transport.start(self.local_host, self.local_port)
                break
            except OSError as exc:
                if self.local_port != 0 or attempt == 4:
                    self.state = "failed"
                    self._error("bind", None, f"cannot bind our SIP socket: {exc}")
                    return
        self.state = "registering"
        if self.player is not None:
            self.player.on_ended.append(self._device_hung_up)
        self._runner = asyncio.create_task(self._run(), name=f"upstream-{self.settings.name}")

    async def stop(self) -> None:
        if self.player is not None and self._device_hung_up in self.player.on_ended:
            self.player.on_ended.remove(self._device_hung_up)
        if self._runner is None:
            self.state = "stopped"
            return
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self.state == "registered":
            with contextlib.suppress(Gb28181Error, TimeoutError):
                async with asyncio.timeout(2):
                    await self._register_once(0)
        self._end_subscription()
        for session in list(self.sessions.values()):
            await self._end_session(session, "upstream stopped")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.stop()
        self.state = "stopped"

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_error": self.last_error.as_dict() if self.last_error else None,
            "timings": dict(self.timings),
            "counters": dict(self.counters),
            "local_port": self.port,
            "live_views": len(self.sessions),
            "subscribed": self.subscription is not None,
        }

    def _error(self, what: str, status: int | None, reason: str) -> None:
        self.last_error = LastError(what, status, _reason_text(reason))
        log.warning(
            "upstream %s: %s failed: %s %s", self.settings.name, what, status or "-", reason
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> bool:
        if len(self._tasks) >= MAX_TASKS:
            coro.close()
            return False
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return True

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("upstream %s: task failed: %r", self.settings.name, task.exception())

    # --- requests we send -------------------------------------------------------------------
    def _headers(
        self, method: str, *, call_id: str | None = None, cseq: int | None = None
    ) -> Headers:
        s = self.settings
        headers = Headers()
        via = f"{self.local_host}:{self.port};rport;branch={new_branch()}"
        headers.add("Via", f"SIP/2.0/{self.peer.transport} {via}")
        headers.add("From", f"<sip:{self.local_id}@{self.local_id[:10]}>;tag={self._from_tag}")
        headers.add("To", f"<sip:{s.server_id}@{s.sip_domain}>")
        headers.add("Call-ID", call_id or new_call_id(self.local_host))
        headers.add("CSeq", f"{cseq if cseq is not None else next(self._cseq)} {method}")
        headers.add("Max-Forwards", "70")
        headers.add("User-Agent", USER_AGENT)
        return headers

    def _contact(self) -> str:
        return f"<sip:{self.local_id}@{self.local_host}:{self.port}>"

    async def _register_once(self, expires: int) -> SipResponse:
        s = self.settings
        uri = f"sip:{s.server_id}@{s.sip_domain}"
        authorization: str | None = None
        challenges = 0
        while True:
            headers = self._headers("REGISTER", call_id=self._call_id)
            headers.set("To", f"<sip:{self.local_id}@{self.local_id[:10]}>")
            headers.add("Contact", self._contact())
            headers.add("Expires", str(expires))
            if authorization is not None:
                headers.add("Authorization", authorization)
            response = await self.transactions.request(
                SipRequest(headers, b"", "REGISTER", uri), self.peer
            )
            if response.status not in (401, 407):
                return response
            challenge = response.headers.get("WWW-Authenticate") or response.headers.get(
                "Proxy-Authenticate"
            )
            stale = challenge is not None and "stale=true" in challenge.lower().replace(" ", "")
            if challenge is None or (challenges >= 1 and not stale) or challenges >= 3:
                return response  # a 401 after our answer: the password is refused
            challenges += 1
            authorization = authorization_for(
                challenge,
                method="REGISTER",
                uri=uri,
                username=self.local_id,
                password=s.password.get_secret_value(),
            )

    async def _register(self) -> bool:
        """REGISTER (with digest when challenged); True when the upper platform said 200."""
        s = self.settings
        self.counters["register_attempts"] += 1
        started = time.monotonic()
        try:
            response = await self._register_once(s.register_expires)
        except TransactionTimeout as exc:
            self.counters["register_failures"] += 1
            self._error("REGISTER", None, f"timeout: {exc}")
            return False
        except Gb28181Error as exc:
            self.counters["register_failures"] += 1
            self._error("REGISTER", None, str(exc))
            return False
        if response.status == 200:
            granted = s.register_expires
            text = response.headers.get("Expires")
            if text and text.isdigit() and int(text) > 0:
                granted = int(text)
            self.counters["registered"] += 1
            self.timings["registered_at"] = dt.datetime.now(dt.UTC).isoformat()
            self.timings["register_seconds"] = round(time.monotonic() - started, 4)
            self.timings["expires_s"] = granted
            self._granted = granted
            self.state = "registered"
            return True
        self.counters["register_failures"] += 1
        reason = response.reason
        if response.status in (401, 407):
            self.counters["auth_refused"] += 1
            reason = (
                f"{reason} (our digest answer was challenged again: check password and local_id)"
            )
        self._error("REGISTER", response.status, reason)
        return False

    async def _keepalive(self) -> bool:
        s = self.settings
        self.counters["keepalives_sent"] += 1
        headers = self._headers("MESSAGE")
        headers.add("Content-Type", manscdp.CONTENT_TYPE)
        body = manscdp.build_keepalive(next(self._sn), self.local_id, charset=s.charset)
        request = SipRequest(headers, body, "MESSAGE", f"sip:{s.server_id}@{s.sip_domain}")
        started = time.monotonic()
        try:
            async with asyncio.timeout(max(0.2, min(s.keepalive_s, 64 * self.transactions.t1))):
                response = await self.transactions.request(request, self.peer)
        except (TimeoutError, TransactionTimeout):
            self.counters["keepalive_misses"] += 1
            self._error("keepalive", None, "timeout: the upper platform did not answer")
            return False
        except Gb28181Error as exc:
            self.counters["keepalive_misses"] += 1
            self._error("keepalive", None, str(exc))
            return False
        if response.status >= 300:
            self.counters["keepalive_misses"] += 1
            self._error("keepalive", response.status, response.reason)
            return False
        self.counters["keepalives_ok"] += 1
        self.timings["last_keepalive_ok_at"] = dt.datetime.now(dt.UTC).isoformat()
        self.timings["keepalive_rtt_s"] = round(time.monotonic() - started, 4)
        return True

    async def _run(self) -> None:
        failures = 0
        while True:
            if await self._register():
                failures = 0
                self.timings["next_attempt_at"] = None
                await self._online()
                failures = 1  # fell offline or a refresh failed: re-register after a pause
            else:
                failures += 1
                if self.state != "offline":
                    self.counters["went_offline"] += 1 if self.state == "registered" else 0
                self.state = "offline" if self.counters["registered"] else "failed"
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures - 1, 12))
            delay *= random.uniform(0.8, 1.2)
            self.timings["next_attempt_at"] = (
                dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
            ).isoformat()
            await asyncio.sleep(delay)
            self.state = "registering"

    async def _online(self) -> None:
        """Keepalives and refresh while registered; returns when we must register anew."""
        s = self.settings
        granted = self._granted
        now = time.monotonic()
        refresh_at = now + max(1.0, min(granted * 0.8, granted - 30))
        next_keepalive = now + s.keepalive_s
        misses = 0
        while True:
            wake = min(refresh_at, next_keepalive)
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            now = time.monotonic()
            if now >= refresh_at:
                if not await self._register():
                    self.state = "offline"
                    self.counters["went_offline"] += 1
                    return
                granted = self._granted
                refresh_at = time.monotonic() + max(1.0, min(granted * 0.8, granted - 30))
            if now >= next_keepalive:
                next_keepalive = now + s.keepalive_s
                if await self._keepalive():
                    misses = 0
                else:
                    misses += 1
                    if misses >= s.keepalive_misses:
                        self.state = "offline"
                        self.counters["went_offline"] += 1
                        self._error(
                            "keepalive",
                            self.last_error.status if self.last_error else None,
                            f"{misses} keepalives in a row unanswered or refused; re-registering"
                            + (f" (last: {self.last_error.reason})" if self.last_error else ""),
                        )
                        return

    async def send_manscdp(self, body: bytes) -> SipResponse:
        s = self.settings
        headers = self._headers("MESSAGE")
        headers.add("Content-Type", manscdp.CONTENT_TYPE)
        request = SipRequest(headers, body, "MESSAGE", f"sip:{s.server_id}@{s.sip_domain}")
        response = await self.transactions.request(request, self.peer)
        if response.status >= 300:
            raise RequestRefused(response.status, response.reason)
        return response

    # --- requests we receive ----------------------------------------------------------------
    def _on_parse_error(self, data: bytes, peer: Peer, exc: SipParseError) -> None:
        self.counters["malformed"] += 1

    def _send(self, response: SipResponse, peer: Peer, key: Any = None) -> None:
        data = response.serialise()
        if key is not None:
            self.responses.put(key, data)
        self.transport.send(data, peer)

    def _on_message(self, message: SipRequest | SipResponse, peer: Peer) -> None:
        if isinstance(message, SipResponse):
            self.transactions.on_response(message)
            return
        self.counters["requests_received"] += 1
        if message.method == "ACK":
            session = self.sessions.get(message.call_id)
            if session is not None:
                session.acked.set()
            return
        if peer.host != self.peer.host:
            self.counters["wrong_source"] += 1
            self._send(build_response(message, 403, "Forbidden: not our upper platform"), peer)
            return
        key = ResponseCache.key(message, peer) if peer.transport == "UDP" else None
        if key is not None:
            seen, cached = self.responses.lookup(key)
            if seen:
                if cached is not None:
                    self.transport.send(cached, peer)
                return
            self.responses.put(key, None)
        if not self._spawn(self._handle(message, peer, key)):
            self.counters["requests_refused"] += 1
            resp = build_response(message, 503, to_tag=new_tag())
            resp.headers.add("Retry-After", "5")
            self._send(resp, peer, key)

    async def _handle(self, request: SipRequest, peer: Peer, key: Any) -> None:
        after: list[Coroutine[Any, Any, Any]] = []
        try:
            response = await self._dispatch(request, peer, key, after)
        except Exception:
            log.exception("upstream %s: failed handling %s", self.settings.name, request.method)
            response = build_response(request, 500, to_tag=new_tag())
        if response is not None:
            self._send(response, peer, key)
        for coro in after:
            await coro

    async def _dispatch(
        self,
        request: SipRequest,
        peer: Peer,
        key: Any,
        after: list[Coroutine[Any, Any, Any]],
    ) -> SipResponse | None:
        method = request.method
        if method == "MESSAGE":
            return await self._message(request, peer, after)
        if method == "INVITE":
            return await self._invite(request, peer, key)
        if method == "BYE":
            session = self.sessions.get(request.call_id)
            if session is None:
                return build_response(request, 481, source=peer.addr)
            after.append(self._end_session(session, "upper platform sent BYE"))
            return build_response(request, 200, source=peer.addr)
        if method == "SUBSCRIBE":
            return self._subscribe(request, peer)
        if method == "OPTIONS":
            resp = build_response(request, 200, to_tag=new_tag(), source=peer.addr)
            resp.headers.add("Allow", "MESSAGE, INVITE, ACK, BYE, SUBSCRIBE, OPTIONS")
            return resp
        if method == "CANCEL":
            return build_response(request, 481, to_tag=new_tag(), source=peer.addr)
        self.counters["requests_refused"] += 1
        resp = build_response(request, 405, to_tag=new_tag(), source=peer.addr)
        resp.headers.add("Allow", "MESSAGE, INVITE, ACK, BYE, SUBSCRIBE, OPTIONS")
        return resp

    async def _message(
        self, request: SipRequest, peer: Peer, after: list[Coroutine[Any, Any, Any]]
    ) -> SipResponse:
        if request.content_type != "application/manscdp+xml":
            self.counters["malformed"] += 1
            return build_response(request, 415, to_tag=new_tag(), source=peer.addr)
        try:
            msg = manscdp.parse_manscdp(request.body, request.charset)
        except ManscdpError as exc:
            self.counters["malformed"] += 1
            return build_response(
                request, 400, f"Bad Request: {_reason_text(str(exc))}", to_tag=new_tag(),
                source=peer.addr,
            )  # fmt: skip
        ok = build_response(request, 200, to_tag=new_tag(), source=peer.addr)
        if msg.root != "Query":
            return ok  # Keepalive/Notify from above: acknowledged
        if msg.cmd_type == "Catalog":
            self.counters["catalog_queries"] += 1
            if self._catalog_waiting > MAX_QUEUED_CATALOGS:
                self.counters["catalog_busy"] += 1
                return build_response(
                    request, 486, "Busy Here: a catalog is being sent", to_tag=new_tag(),
                    source=peer.addr,
                )  # fmt: skip
            self._catalog_waiting += 1
            after.append(self._answer_catalog(msg.sn))
        elif msg.cmd_type == "DeviceInfo":
            self.counters["device_info"] += 1
            after.append(self._answer_device_info(msg.sn, msg.device_id))
        elif msg.cmd_type == "DeviceStatus":
            self.counters["device_status"] += 1
            after.append(self._answer_device_status(msg.sn, msg.device_id))
        else:
            self.counters["unhandled_cmd"] += 1
        return ok

    async def _answer_catalog(self, sn: int) -> None:
        s = self.settings
        try:
            async with self._catalog_lock:

                async def send(items: str, count: int, total: int) -> None:
                    extra = (
                        f'<SumNum>{total}</SumNum>\r\n<DeviceList Num="{count}">\r\n'
                        f"{items}</DeviceList>\r\n"
                    )
                    body = manscdp.build(
                        "Response", "Catalog", sn, self.local_id, extra, charset=s.charset
                    )
                    await self.send_manscdp(body)
                    self.counters["catalog_items_sent"] += count
                    self.counters["catalog_messages_sent"] += 1

                result = await catalog.push_catalog(
                    self.pool,
                    s.regions,
                    self.local_id,
                    s.catalog_group_size,
                    self.pacer,
                    send,
                    window=self.catalog_window,
                )
        finally:
            self._catalog_waiting -= 1
        self.counters["catalog_pushes"] += 1
        self.timings["last_catalog"] = {
            "sn": sn,
            "sum_num": result.sum_num,
            "items_sent": result.items_sent,
            "messages": result.messages,
            "seconds": round(result.seconds, 3),
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "error": result.error,
        }
        if result.error is not None:
            self.counters["catalog_failures"] += 1
            status = None
            if result.error.startswith("peer answered "):
                bits = result.error.split()
                status = int(bits[2]) if len(bits) > 2 and bits[2].isdigit() else None
            self._error("catalog", status, result.error)

    async def _answer_device_info(self, sn: int, device_id: str) -> None:
        s = self.settings
        count = await store.count_visible(self.pool, s.regions)
        extra = "".join(
            manscdp.element(k, v)
            for k, v in (
                ("DeviceName", f"camera-registry {s.name}"),
                ("Result", "OK"),
                ("Manufacturer", "camera-registry"),
                ("Model", "camera-registry"),
                ("Firmware", "1"),
                ("Channel", count),
            )
        )
        body = manscdp.build("Response", "DeviceInfo", sn, device_id, extra, charset=s.charset)
        await self._quietly("DeviceInfo", self.send_manscdp(body))

    async def _answer_device_status(self, sn: int, device_id: str) -> None:
        s = self.settings
        online, status = "ONLINE", "OK"
        if device_id != self.local_id:
            rec = await store.channel(self.pool, device_id)
            if rec is None or not self._in_regions(rec["region_code"]):
                online, status = "OFFLINE", "ERROR"
            elif rec["status"] not in catalog.ON_STATUSES:
                online = "OFFLINE"
        extra = (
            "".join(
                manscdp.element(k, v)
                for k, v in (
                    ("Result", "OK"),
                    ("Online", online),
                    ("Status", status),
                    ("Encode", "ON"),
                    ("Record", "OFF"),
                    ("DeviceTime", gb_date()),
                )
            )
            + '<Alarmstatus Num="0">\r\n</Alarmstatus>\r\n'
        )
        body = manscdp.build("Response", "DeviceStatus", sn, device_id, extra, charset=s.charset)
        await self._quietly("DeviceStatus", self.send_manscdp(body))

    async def _quietly(self, what: str, aw: Coroutine[Any, Any, Any]) -> None:
        try:
            await aw
        except Gb28181Error as exc:
            status = getattr(exc, "status", None)
            self._error(what, status, str(exc))

    def _in_regions(self, region_code: str) -> bool:
        regions = self.settings.regions
        return not regions or any(region_code.startswith(r) for r in regions)

    def _subscribe(self, request: SipRequest, peer: Peer) -> SipResponse:
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "catalog":
            return build_response(request, 489, to_tag=new_tag(), source=peer.addr)
        text = request.headers.get("Expires") or "3600"
        expires = min(int(text), 86_400) if text.isdigit() else 3600
        current = self.subscription
        same = current is not None and current.call_id == request.call_id
        tag = current.local_tag if same and current is not None else new_tag()
        resp = build_response(request, 200, to_tag=tag, source=peer.addr)
        resp.headers.add("Expires", str(expires))
        resp.headers.add("Contact", self._contact())
        if expires == 0:
            self._end_subscription()
            return resp
        self.counters["subscriptions"] += 1
        if same and current is not None:
            current.expires_at = time.monotonic() + expires  # a refresh
            return resp
        self._end_subscription()
        event_id = (request.headers.get("Event") or "").partition("id=")[2].strip()
        self.subscription = Subscription(
            call_id=request.call_id,
            local_tag=tag,
            remote=request.headers.get("From") or "",
            event=f"Catalog;id={event_id}" if event_id else "Catalog",
            expires_at=time.monotonic() + expires,
        )
        self._notifier = asyncio.get_running_loop().create_task(
            self._notify_changes(self.subscription)
        )
        self._tasks.add(self._notifier)
        self._notifier.add_done_callback(self._task_done)
        return resp

    def _end_subscription(self) -> None:
        self.subscription = None
        if self._notifier is not None:
            self._notifier.cancel()
            self._notifier = None

    async def _notify_changes(self, sub: Subscription) -> None:
        """Poll the registry and health for catalog changes; NOTIFY them, coalesced per camera.

        Each round sends each camera once with its latest event (a DEL wins; an edit carries
        the status, so it absorbs ON/OFF), in groups of `catalog_group_size`, paced like the
        catalog. A refused or unanswered NOTIFY is recorded; the changes stay lost to that
        subscription (the upper platform re-queries the catalog on re-subscribe).
        """
        s = self.settings
        marks = await store.change_marks(self.pool)
        while self.subscription is sub and time.monotonic() < sub.expires_at:
            await asyncio.sleep(self.notify_interval_s)
            events, marks = await store.changes(self.pool, s.regions, marks)
            latest: dict[str, tuple[str, Any]] = {}
            for gb_id, kind, rec in events:
                prev = latest.get(gb_id)
                if (
                    prev is not None
                    and prev[0] in ("ADD", "UPDATE", "DEL")
                    and kind in ("ON", "OFF")
                ):
                    continue
                latest[gb_id] = (kind, rec)
            items = []
            parents = await self._group_parents(
                [rec["id"] for _, rec in latest.values() if rec is not None]
            )
            for gb_id, (kind, rec) in latest.items():
                if rec is not None:
                    parent, business = parents.get(rec["id"], (self.local_id, None))
                    items.append(
                        catalog.camera_item(rec, parent, event=kind, business_group=business)
                    )
                else:
                    items.append(
                        f"<Item><DeviceID>{gb_id}</DeviceID><Event>{kind}</Event></Item>\r\n"
                    )
            group = max(1, s.catalog_group_size)
            for start in range(0, len(items), group):
                batch = items[start : start + group]
                await self.pacer.take(len(batch))
                extra = (
                    f'<SumNum>{len(items)}</SumNum>\r\n<DeviceList Num="{len(batch)}">\r\n'
                    + "".join(batch)
                    + "</DeviceList>\r\n"
                )
                body = manscdp.build(
                    "Notify", "Catalog", next(self._sn), self.local_id, extra, charset=s.charset
                )
                try:
                    await self._send_notify(sub, body)
                    self.counters["notify_items_sent"] += len(batch)
                except Gb28181Error as exc:
                    self.counters["notify_failures"] += 1
                    self._error("NOTIFY", getattr(exc, "status", None), str(exc))
                    break
        if self.subscription is sub:
            self.subscription = None

    async def _group_parents(self, camera_ids: list[Any]) -> dict[Any, tuple[str, str | None]]:
        """(ParentID, BusinessGroupID) of cameras filed under a 215/216 group, as the catalog
        sends them: a NOTIFY must not move a camera the catalog put in a group."""
        if not camera_ids:
            return {}
        async with self.pool.acquire() as conn:
            groups = catalog.resolve_groups(
                await store.catalog_groups(conn, self.settings.regions), self.local_id
            )
            if not groups:
                return {}
            business = {g.item_id: g.business_group_id for g in groups}
            filed = await store.camera_groups(conn, camera_ids, list(business))
        return {cid: (grp, business[grp]) for cid, grp in filed.items()}

    def _in_dialog(
        self, method: str, cseq: int, user: str, tag: str, remote: str, call_id: str
    ) -> Headers:
        """Headers of a request we send inside a dialog the upper platform opened (its
        SUBSCRIBE or INVITE): our side of it is `user` with `tag`, theirs is `remote`."""
        headers = Headers()
        via = f"{self.local_host}:{self.port};rport;branch={new_branch()}"
        headers.add("Via", f"SIP/2.0/{self.peer.transport} {via}")
        headers.add("From", f"<sip:{user}@{self.local_id[:10]}>;tag={tag}")
        headers.add("To", remote)
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{cseq} {method}")
        headers.add("Max-Forwards", "70")
        headers.add("User-Agent", USER_AGENT)
        return headers

    async def _send_notify(self, sub: Subscription, body: bytes) -> None:
        s = self.settings
        sub.cseq += 1
        headers = self._in_dialog(
            "NOTIFY", sub.cseq, self.local_id, sub.local_tag, sub.remote, sub.call_id
        )
        headers.add("Event", sub.event)
        left = max(0, int(sub.expires_at - time.monotonic()))
        headers.add("Subscription-State", f"active;expires={left}")
        headers.add("Content-Type", manscdp.CONTENT_TYPE)
        request = SipRequest(headers, body, "NOTIFY", f"sip:{s.server_id}@{s.host}:{s.port}")
        response = await self.transactions.request(request, self.peer)
        if response.status >= 300:
            raise RequestRefused(response.status, response.reason)

    # --- live video upward ------------------------------------------------------------------
    def _refuse(
        self, request: SipRequest, peer: Peer, status: int, reason: str, tag: str
    ) -> SipResponse:
        self.counters["invites_refused"] += 1
        self._error("INVITE", status, reason)
        return build_response(request, status, _reason_text(reason), to_tag=tag, source=peer.addr)

    async def _invite(self, request: SipRequest, peer: Peer, key: Any) -> SipResponse | None:
        self.counters["invites"] += 1
        tag = new_tag()
        self._send(build_response(request, 100, source=peer.addr), peer)
        try:
            channel_id = (request.headers.get("Subject") or "").split(":")[0].strip() or (
                request.uri.split(":", 1)[1].split("@")[0]
            )
        except IndexError:
            return self._refuse(request, peer, 400, "Bad Request: no channel in the INVITE", tag)
        if len(self.sessions) >= MAX_SESSIONS:
            return self._refuse(request, peer, 486, "Busy Here: too many live views", tag)
        rec = await store.channel(self.pool, channel_id)
        if rec is None:
            return self._refuse(request, peer, 404, f"Not Found: no channel {channel_id}", tag)
        if not self._in_regions(rec["region_code"]):
            return self._refuse(
                request, peer, 403, "Forbidden: channel outside this upstream's regions", tag
            )
        try:
            offer = sdp.parse_answer(request.body)
        except Gb28181Error:
            return self._refuse(request, peer, 400, "Bad Request: SDP has no address or port", tag)
        setup = ""
        for line in request.body.decode("utf-8", "replace").splitlines():
            if line.strip().startswith("a=setup:"):
                setup = line.strip()[8:].strip().lower()
        tcp = offer.proto.upper().startswith("TCP")
        ssrc = offer.ssrc or f"0{self.local_id[3:8]}{secrets.randbelow(10_000):04d}"
        if self.media is None:
            return self._refuse(
                request, peer, 503, "Service Unavailable: no media server configured", tag
            )
        gb_key: str | None = None
        if self.player is not None:  # a GB channel of one of our devices: INVITE it downward
            try:
                gb_key = await self.player.hold(str(rec["id"]))
            except (Gb28181Error, RegistryError) as exc:
                return self._refuse(
                    request, peer, 503, f"Service Unavailable: the device did not stream: {exc}",
                    tag,
                )  # fmt: skip
        if gb_key is not None:
            stream, app = gb_key, RTP_APP
        else:
            main = (rec["streams"] or {}).get("main")
            if not main:
                return self._refuse(
                    request, peer, 503,
                    "Service Unavailable: channel has no RTSP stream or GB/T 28181 device to relay",
                    tag,
                )  # fmt: skip
            url = str(main)
            if rec["credentials"] is not None:
                url = with_credentials(url, *self.box.open(rec["credentials"]))
            stream, app = channel_id, None
        try:
            if gb_key is None and stream not in self._streams:
                self._proxy_keys[stream] = await self.media.add_stream_proxy(stream, url)
                self._streams[stream] = 0
            if gb_key is None:
                self._streams[stream] += 1
            try:
                if tcp and setup == "active":
                    local_port = await self.media.start_send_rtp_passive(stream, ssrc, app=app)
                else:
                    local_port = await self.media.start_send_rtp(
                        stream, ssrc, offer.media_ip, offer.media_port, udp=not tcp, app=app
                    )
            except MediaError:
                await self._release(stream, gb_key)
                raise
        except MediaError as exc:
            return self._refuse(request, peer, 503, f"Service Unavailable: {exc}", tag)
        session = UpSession(
            call_id=request.call_id,
            channel_id=channel_id,
            camera_id=rec["id"],
            region_code=rec["region_code"],
            ssrc=ssrc,
            stream=stream,
            dst=f"{offer.media_ip}:{offer.media_port}",
            to_tag=tag,
            gb_key=gb_key,
            remote=request.headers.get("From") or "",
            remote_target=str(request.contact.uri) if request.contact else request.uri,
        )
        self.sessions[request.call_id] = session
        self.counters["views_started"] += 1
        ip = self.media.server.rtp_ip
        lines = [
            "v=0",
            f"o={channel_id} 0 0 IN IP4 {ip}",
            "s=Play",
            f"c=IN IP4 {ip}",
            "t=0 0",
            f"m=video {local_port} {'TCP/RTP/AVP' if tcp else 'RTP/AVP'} 96",
            "a=sendonly",
            "a=rtpmap:96 PS/90000",
        ]
        if tcp:
            lines += [f"a=setup:{'passive' if setup == 'active' else 'active'}", "a=connection:new"]
        lines.append(f"y={ssrc}")
        answer = ("\r\n".join(lines) + "\r\n").encode("ascii")
        ok = build_response(
            request, 200, to_tag=tag, source=peer.addr, body=answer, content_type="APPLICATION/SDP"
        )
        ok.headers.add("Contact", self._contact())
        async with self.pool.acquire() as conn:
            await audit.record(
                conn,
                self.actor,
                "gb28181.upstream_view.start",
                camera_id=rec["id"],
                region_code=rec["region_code"],
                detail={
                    "upstream": self.settings.name,
                    "upstream_id": self.id,
                    "channel": channel_id,
                    "call_id": request.call_id,
                    "dst": session.dst,
                    "transport": "tcp" if tcp else "udp",
                    "source": "gb28181" if gb_key is not None else "rtsp",
                },
            )
        self._send(ok, peer, key)
        if peer.transport == "UDP":
            self._spawn(self._retransmit_ok(ok.serialise(), peer, session))
        else:
            session.acked.set()
        return None

    async def _retransmit_ok(self, data: bytes, peer: Peer, session: UpSession) -> None:
        """RFC 3261 §13.3.1.4: repeat the 2xx until the ACK comes; no ACK ends the view."""
        t1 = self.transactions.t1
        interval, waited = t1, 0.0
        while waited < 64 * t1:
            try:
                async with asyncio.timeout(interval):
                    await session.acked.wait()
                return
            except TimeoutError:
                waited += interval
                interval = min(interval * 2, self.transactions.t2)
                self.transport.send(data, peer)
        if self.sessions.get(session.call_id) is session:
            await self._end_session(session, "no ACK for the 200")

    async def _send_bye(self, session: UpSession) -> None:
        """End the dialog from our side (we stop, or no ACK came); best effort, bounded."""
        session.cseq += 1
        headers = self._in_dialog(
            "BYE", session.cseq, session.channel_id, session.to_tag, session.remote,
            session.call_id,
        )  # fmt: skip
        request = SipRequest(headers, b"", "BYE", session.remote_target)
        try:
            async with asyncio.timeout(2):
                await self.transactions.request(request, self.peer)
        except (TimeoutError, Gb28181Error) as exc:
            log.info("upstream %s: BYE for %s: %s", self.settings.name, session.channel_id, exc)

    async def _release(self, stream: str, gb_key: str | None) -> None:
        """Let go of what a view relayed: the device's leg (GB channel) or the RTSP proxy."""
        if gb_key is not None:
            if self.player is not None:
                await self.player.release(gb_key)
            return
        await self._release_stream(stream)

    async def _device_hung_up(self, key: str) -> None:
        """A device ended the leg views relay: end those views (BYE upward), leg already gone."""
        for session in list(self.sessions.values()):
            if session.gb_key == key:
                session.gb_key = None
                session.stream_gone = True
                await self._end_session(session, "device hung up")

    async def _release_stream(self, stream: str) -> None:
        assert self.media is not None
        self._streams[stream] -= 1
        if self._streams[stream] <= 0:
            del self._streams[stream]
            key = self._proxy_keys.pop(stream, "")
            if key:
                with contextlib.suppress(MediaError):
                    await self.media.del_stream_proxy(key)

    async def _end_session(self, session: UpSession, reason: str) -> None:
        if self.sessions.pop(session.call_id, None) is None:
            return
        self.counters["views_ended"] += 1
        if reason != "upper platform sent BYE":
            await self._send_bye(session)
        if self.media is not None:
            app = RTP_APP if session.gb_key is not None or session.stream_gone else None
            with contextlib.suppress(MediaError):
                await self.media.stop_send_rtp(session.stream, session.ssrc, app=app)
            if not session.stream_gone:
                await self._release(session.stream, session.gb_key)
        seconds = round(time.monotonic() - session.started, 3)
        async with self.pool.acquire() as conn:
            await audit.record(
                conn,
                self.actor,
                "gb28181.upstream_view.end",
                camera_id=session.camera_id,
                region_code=session.region_code,
                detail={
                    "upstream": self.settings.name,
                    "upstream_id": self.id,
                    "channel": session.channel_id,
                    "call_id": session.call_id,
                    "seconds": seconds,
                    "reason": reason,
                },
            )
