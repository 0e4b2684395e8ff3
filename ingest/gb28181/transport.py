"""SIP over UDP and TCP on one port (RFC 3261 §18), with the defences a province network needs.

- Per-source rate limiting (token bucket per source address and port) with a bounded LRU of
  buckets: a storm from 10,000 source ports evicts old buckets instead of growing memory.
- A bounded cache of the responses we sent over UDP, keyed by the request's branch: a
  retransmitted request is answered from the cache and never processed twice (§17.2.2).
- A bounded number of TCP connections, each with a bounded framer and an idle timeout.
- NAT: `target_for` picks where to send requests to a device — its Contact, unless the
  Contact is a private address the device's packets did not come from.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.gb28181.errors import SipParseError
from ingest.gb28181.message import (
    MAX_BODY_BYTES,
    SipRequest,
    SipResponse,
    StreamFramer,
    parse_message,
)

log = logging.getLogger(__name__)

MAX_DATAGRAM = 65_535


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from, or where to send one: transport and address."""

    transport: str  # "UDP" | "TCP"
    host: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


def is_private(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local


def target_for(contact_host: str, contact_port: int | None, source: Peer) -> Peer:
    """Where requests to a device go: its Contact, or its packets' source when NATed or on TCP.

    A Contact with a private address that is not where the device's packets come from can
    only be reached through the NAT binding the device opened: use the source. Public or
    matching Contacts are honoured (a device may listen elsewhere than it sends from).
    """
    if source.transport == "TCP":
        return source  # a device on TCP takes our requests on the connection it opened
    port = contact_port or 5060
    if is_private(contact_host) and contact_host != source.host:
        return source
    return Peer(source.transport, contact_host, port)


class RateLimiter:
    """Token buckets per key in a bounded LRU; an evicted key starts again with a full bucket."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()

    def allow(self, key: object) -> bool:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)


_RAW_HEAD = re.compile(rb"[\r\n]*([A-Za-z]{1,32}) ")
# Searched from a line start ("\n"): a header is never the start line. The first match is in the
# header section, which comes before any body.
_RAW_BRANCH = re.compile(rb"\n(?:via|v)[ \t]*:[^\n]*?;[ \t]*branch=([^;,\s]+)", re.I)
_RAW_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)
_RAW_CSEQ = re.compile(rb"\ncseq[ \t]*:[ \t]*([^\r\n]+)", re.I)


class ResponseCache:
    """Our last response per received request (branch, method, source), bounded and expiring.

    A value of None marks a request still being processed: its retransmissions are absorbed.
    """

    def __init__(self, max_entries: int = 50_000, ttl_s: float = 32.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, bytes | None]] = OrderedDict()

    @staticmethod
    def key(request: SipRequest, source: Peer) -> tuple[str, str, str, Peer] | None:
        try:
            branch = request.top_via.branch
        except SipParseError:
            return None
        if not branch:
            return None
        method = "INVITE" if request.method == "ACK" else request.method
        return (branch, method, request.call_id, source)

    @staticmethod
    def raw_key(data: bytes, source: Peer) -> tuple[bytes, bytes, bytes, Peer] | None:
        """The key of a UDP request read from its bytes, before (and without) parsing it.

        A device retransmits a request every 0.5–4 s while our answer is late, up to 10 times:
        under load most of what arrives is retransmissions, so finding them must cost a few
        regular-expression searches, not a parse. Top Via branch, Call-ID and CSeq (number
        and method) from one source identify the transaction (RFC 3261 §17.2.3, and the
        RFC 2543 fields for a branch without the magic cookie). Responses, ACKs (they end a
        transaction, never repeat one) and requests without a branch get None: parsed as usual.
        """
        head = _RAW_HEAD.match(data)
        if head is None or head.group(1) == b"ACK":
            return None
        branch = _RAW_BRANCH.search(data)
        call_id = _RAW_CALL_ID.search(data)
        cseq = _RAW_CSEQ.search(data)
        if branch is None or call_id is None or cseq is None:
            return None
        return (branch.group(1), call_id.group(1).rstrip(), cseq.group(1).rstrip(), source)

    def lookup(self, key: tuple[Any, ...]) -> tuple[bool, bytes | None]:
        """(seen, cached response bytes); expired entries are forgotten."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if time.monotonic() - entry[0] > self.ttl_s:
            del self._entries[key]
            return False, None
        return True, entry[1]

    def put(self, key: tuple[Any, ...], data: bytes | None) -> None:
        now = time.monotonic()
        self._entries[key] = (now, data)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        # entries are in time order: drop the expired ones from the front, so the cache holds
        # 32 s of requests (paced by backpressure during a big catalog), not max_entries
        while self._entries:
            first = next(iter(self._entries.values()))
            if now - first[0] <= self.ttl_s:
                break
            self._entries.popitem(last=False)

    def forget(self, key: tuple[Any, ...]) -> None:
        """A request left unanswered on purpose: its retransmission is processed anew."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


MessageHandler = Callable[["SipRequest | SipResponse", Peer], None]
ErrorHandler = Callable[[bytes, Peer, SipParseError], None]
EarlyHandler = Callable[[bytes, Peer], bool]


# Linux's SO_TIMESTAMPNS (SCM_TIMESTAMPNS in the ancillary data; not in Python's socket
# module): the kernel stamps each datagram with when it arrived, so we know how long a request
# waited in the socket buffer before we read it, which loop-lag sampling cannot see.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


class _Udp:
    """Reads every datagram waiting, not one per event-loop turn, with its arrival time.

    asyncio's datagram transport reads one datagram each time the loop polls the socket; with
    thousands of tasks per turn at a registration wave the socket was read a few hundred times
    a second, the kernel buffer overflowed (measured: 8,390 drops in 40 s at 3,000 devices) and
    each drop cost a device a 0.5–4 s retransmission timer. So the socket is drained here, up
    to `DRAIN` datagrams per readiness event, into a larger receive buffer, and each datagram's
    kernel arrival stamp tells the server how far behind it is (`SipTransport.age`).
    """

    DRAIN = 256

    def __init__(self, owner: SipTransport, sock: socket.socket) -> None:
        self.owner = owner
        self.sock = sock
        self.stamped = False
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.stamped = True
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)

    def on_readable(self) -> None:
        incoming = self.owner._incoming
        recv = self.sock.recvmsg_into
        buffers = [self._view]
        now = time.time
        for _ in range(self.DRAIN):
            try:
                n, ancillary, _flags, addr = recv(buffers, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable reported on the socket, and the like
                self.owner.counters["udp_errors"] += 1
                return
            age = 0.0
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    age = min(max(0.0, now() - sec - nsec * 1e-9), 60.0)
            incoming(bytes(self._view[:n]), Peer("UDP", addr[0], addr[1]), stream=False, age=age)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):  # send buffer full: UDP may lose it
            self.owner.counters["udp_send_dropped"] += 1
        except OSError:
            self.owner.counters["udp_errors"] += 1


class _TcpConn(asyncio.Protocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner
        self.framer = StreamFramer(max_body=owner.max_body)
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer("TCP", str(host), int(port))
        if len(self.owner._tcp) >= self.owner.max_tcp_connections:
            self.owner.counters["tcp_refused"] += 1
            transport.close()
            return
        self.owner._tcp[self.peer.addr] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.transport is not None
        self.last = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except SipParseError as exc:
            self.owner.counters["tcp_framing_errors"] += 1
            self.owner._on_error(data[:0], self.peer, exc)
            self.transport.close()
            return
        for frame in frames:
            self.owner._incoming(frame, self.peer, stream=True)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner._tcp.get(self.peer.addr) is self:
            del self.owner._tcp[self.peer.addr]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes asked; the kernel caps it at net.core.rmem_max


async def _udp_socket(host: str, port: int) -> socket.socket:
    """A bound, non-blocking UDP socket with a receive buffer for a registration wave's bursts."""
    loop = asyncio.get_running_loop()
    family, _, _, _, addr = (
        await loop.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    )[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.setblocking(False)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


class SipTransport:
    """UDP socket and TCP listener on one address; delivers parsed messages to `on_message`."""

    def __init__(
        self,
        on_message: MessageHandler,
        on_error: ErrorHandler,
        *,
        max_body: int = MAX_BODY_BYTES,
        rate_per_source: float = 50.0,
        burst_per_source: float = 100.0,
        platform_rate_per_source: float = 5_000.0,
        max_sources: int = 100_000,
        max_tcp_connections: int = 20_000,
        tcp_idle_s: float = 600.0,
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self.max_body = max_body
        self.limiter = RateLimiter(rate_per_source, burst_per_source, max_keys=max_sources)
        # Registered lower platforms (type 200) push catalogs of many thousand items as fast as
        # their pacing allows: at a device's budget the push would be dropped mid-way. Their
        # addresses (added and removed by the registrar's owner) get a budget of their own.
        self.platforms: set[object] = set()
        self.platform_limiter = RateLimiter(
            platform_rate_per_source, 2 * platform_rate_per_source, max_keys=max_sources
        )
        self.max_tcp_connections = max_tcp_connections
        self.tcp_idle_s = tcp_idle_s
        self._udp: _Udp | None = None
        self.early: EarlyHandler | None = None
        """Sees each UDP request's bytes before they are parsed; True: handled (a retransmission
        answered from a cache), nothing more to do."""
        self.age = 0.0
        """How long the message being delivered waited in the socket buffer, in seconds (0 over
        TCP, or where the kernel does not stamp datagrams)."""
        self._server: asyncio.Server | None = None
        self._tcp: dict[tuple[str, int], _TcpConn] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._connecting: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {
            "udp_errors": 0,
            "udp_send_dropped": 0,
            "tcp_refused": 0,
            "tcp_framing_errors": 0,
            "tcp_connect_errors": 0,
            "rate_limited": 0,  # all drops by a budget; of them, on a platform's budget:
            "rate_limited_platform": 0,
            "parse_errors": 0,
        }
        self.host = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP at one port. With port 0 the system picks the UDP port, and
        the same number may already be taken for TCP: pick again (a few times) rather than
        fail a start that asked for any port."""
        attempts = 8 if port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._bind(host, port)
            except OSError as exc:
                if port != 0 or attempt == attempts - 1 or exc.errno != errno.EADDRINUSE:
                    raise
                continue
            break
        self._reaper = asyncio.create_task(self._reap_idle())

    async def _bind(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = await _udp_socket(host, port)
        try:
            udp = _Udp(self, sock)
            bound_port = sock.getsockname()[1]
            self._server = await loop.create_server(
                lambda: _TcpConn(self), host=host, port=bound_port, reuse_address=True
            )
        except BaseException:
            sock.close()
            raise
        loop.add_reader(sock.fileno(), udp.on_readable)
        self._udp = udp
        self.host, self.port = host, int(bound_port)

    async def stop(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._server is not None:
            self._server.close()
        for conn in list(self._tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.sock.fileno())
            self._udp.sock.close()
            self._udp = None

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.tcp_idle_s / 4))
            cutoff = time.monotonic() - self.tcp_idle_s
            for conn in list(self._tcp.values()):
                if conn.last < cutoff and conn.transport is not None:
                    conn.transport.close()

    def _incoming(self, data: bytes, peer: Peer, *, stream: bool, age: float = 0.0) -> None:
        if data[:1] in (b"\r", b"\n") and not data.strip(b"\r\n"):
            return  # keepalive CRLFs
        platform = peer.addr in self.platforms
        limiter = self.platform_limiter if platform else self.limiter
        if not limiter.allow(peer.addr):
            self.counters["rate_limited"] += 1
            if platform:
                self.counters["rate_limited_platform"] += 1
            return
        if len(data) > MAX_DATAGRAM + self.max_body:
            self.counters["parse_errors"] += 1
            return
        self.age = age
        if not stream and self.early is not None and self.early(data, peer):
            return
        try:
            message = parse_message(data, max_body=self.max_body, stream=stream)
        except SipParseError as exc:
            self.counters["parse_errors"] += 1
            self._on_error(data, peer, exc)
            return
        self._on_message(message, peer)

    def send(self, data: bytes, peer: Peer) -> None:
        """Send bytes to `peer`; over TCP on the connection it opened, else a new one."""
        if peer.transport == "UDP":
            if self._udp is not None:
                self._udp.sendto(data, peer.addr)
            return
        conn = self._tcp.get(peer.addr)
        if conn is not None:
            conn.send(data)
            return
        task = asyncio.get_running_loop().create_task(self._connect_and_send(data, peer))
        self._connecting.add(task)  # kept referenced until done
        task.add_done_callback(self._connecting.discard)

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        if len(self._tcp) >= self.max_tcp_connections:
            self.counters["tcp_refused"] += 1
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(5):
                _, proto = await loop.create_connection(lambda: _TcpConn(self), *peer.addr)
        except (OSError, TimeoutError):
            self.counters["tcp_connect_errors"] += 1
            return
        proto.send(data)
