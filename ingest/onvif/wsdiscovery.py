"""Finding ONVIF cameras with WS-Discovery (2005/04, as ONVIF uses it) over asyncio UDP.

Technicians need every camera on a 雪亮工程 network found, and real networks are unkind: UDP
loses packets (every probe is retransmitted with jitter), devices answer from other ports or
report addresses that are wrong behind NAT (the datagram's sender IP is kept as a fallback),
vendors pick their own namespace prefixes and drop wrappers (elements are matched by namespace
URI and local name only), and anything on the segment can send us datagrams (every reply goes
through `ingest.xml_safe`, is matched to our Probe by RelatesTo, and junk is counted, not
raised). Directed unicast sweeps over whole CIDR blocks are rate limited by a token bucket and
keep a bounded number of targets in flight, so a /16 neither floods the network nor holds the
whole address list in memory.
"""

from __future__ import annotations

import asyncio
import fcntl
import heapq
import ipaddress
import logging
import random
import re
import socket
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from xml.sax.saxutils import escape

from lxml import etree  # type: ignore[import-untyped]

from ingest.errors import MalformedXml
from ingest.xml_safe import parse_xml

__all__ = [
    "DISCOVERY_PORT",
    "MULTICAST_GROUP",
    "Bye",
    "Discovery",
    "Found",
    "Hello",
    "ProbeMatches",
    "TokenBucket",
    "build_probe",
    "interface_address",
    "ipv4_interfaces",
    "local_ipv4_interfaces",
    "parse_message",
    "parse_probe_matches",
]

log = logging.getLogger(__name__)

MULTICAST_GROUP = "239.255.255.250"
DISCOVERY_PORT = 3702

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSA10 = "http://www.w3.org/2005/08/addressing"
NS_WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_WSD11 = "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01"
NS_DN = "http://www.onvif.org/ver10/network/wsdl"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"

# Devices answer in SOAP 1.2 and WS-Discovery 2005/04 as ONVIF requires, but some firmwares
# mix in SOAP 1.1 or the OASIS 1.1 URIs; accepting both costs nothing and finds more cameras.
_SOAP = frozenset({NS_SOAP12, NS_SOAP11})
_WSA = frozenset({NS_WSA, NS_WSA10})
_WSD = frozenset({NS_WSD, NS_WSD11})

DISCOVERY_TO = "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
ACTION_PROBE = "http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe"
_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
DEFAULT_DEVICE_PATH = "/onvif/device_service"

# Prefixes `build_probe` declares, so a `types` string may only use these.
_PROBE_PREFIXES = {"dn": NS_DN, "tds": NS_TDS}

_MAC = re.compile(r"^([0-9a-f]{2})[:-]?" + r"([0-9a-f]{2})[:-]?" * 4 + r"([0-9a-f]{2})$", re.I)
_MAC_SCOPE_KEYS = frozenset({"mac", "macaddress", "mac_address", "hwaddr"})


# --------------------------------------------------------------------------- messages


@dataclass
class Found:
    """One device as discovered: what it says about itself plus where the datagram came from.

    `endpoint` is the stable identity (EndpointReference Address, usually `urn:uuid:…`) and the
    dedupe key. `xaddrs` are the device-service URLs exactly as announced (a path is added when
    missing); `address` is the IP the datagram actually came from, which is the one to use when
    the announced host is 0.0.0.0, link-local or a private address behind NAT (see
    `candidate_urls`). `types` are resolved to `{namespace}Local` when the prefix is declared.
    """

    endpoint: str
    xaddrs: list[str]
    address: str
    types: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    hardware: str | None = None
    name: str | None = None
    location: str | None = None
    mac: str | None = None
    relates_to: str | None = None
    metadata_version: int | None = None

    @property
    def is_video_transmitter(self) -> bool:
        """Whether the device calls itself an ONVIF NetworkVideoTransmitter (a camera/encoder)."""
        return f"{{{NS_DN}}}NetworkVideoTransmitter" in self.types

    def candidate_urls(self) -> list[str]:
        """URLs to try, best first: announced ones, with the sender IP substituted where needed.

        An announced host that cannot be right (0.0.0.0, link-local, loopback from a remote
        sender) is replaced by the sender IP first; a plausible host that differs from the
        sender (NAT) is tried as announced, then with the sender IP.
        """
        first: list[str] = []
        later: list[str] = []
        for url in self.xaddrs:
            parts = urlsplit(url)
            host = parts.hostname or ""
            if not host or host == self.address:
                first.append(url)
                continue
            swapped = _replace_host(parts, self.address)
            if _unusable_host(host, self.address):
                first.append(swapped)
            else:
                first.append(url)
                later.append(swapped)
        return list(dict.fromkeys(first + later))

    def merge(self, other: Found) -> None:
        """Fold a later sighting of the same endpoint in: first XAddrs win, new ones appended."""
        for attr in ("xaddrs", "types", "scopes"):
            mine: list[str] = getattr(self, attr)
            mine.extend(v for v in getattr(other, attr) if v not in mine)
        for attr in ("hardware", "name", "location", "mac", "metadata_version"):
            if getattr(self, attr) is None:
                setattr(self, attr, getattr(other, attr))


@dataclass
class ProbeMatches:
    """A reply to a Probe; `relates_to` must equal the Probe's MessageID for it to count."""

    relates_to: str | None
    matches: list[Found]


@dataclass
class Hello:
    """A device announcing itself (on joining the network); counts as found during a scan."""

    found: Found


@dataclass
class Bye:
    """A device announcing it leaves; only its endpoint is reliable."""

    endpoint: str
    address: str


Message = ProbeMatches | Hello | Bye


def build_probe(message_id: str, types: str | None = "dn:NetworkVideoTransmitter") -> bytes:
    """A SOAP 1.2 WS-Discovery Probe; `types=None` probes for every device type.

    `message_id` may be a bare UUID or a full `urn:uuid:…`; retransmissions must reuse it, since
    devices (and we) use it to recognise the same probe. `types` may use the prefixes `dn`
    (ONVIF network WSDL) and `tds` (device WSDL), the only ones the envelope declares.
    """
    mid = message_id if message_id.startswith("urn:") else f"urn:uuid:{message_id}"
    if types is None:
        probe = "<d:Probe/>"
    else:
        for qname in types.split():
            prefix, sep, _ = qname.rpartition(":")
            if not sep or prefix not in _PROBE_PREFIXES:
                raise ValueError(f"probe type {qname!r} must use a prefix of {_PROBE_PREFIXES}")
        probe = f"<d:Probe><d:Types>{escape(types)}</d:Types></d:Probe>"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP12}" xmlns:a="{NS_WSA}" xmlns:d="{NS_WSD}"'
        f' xmlns:dn="{NS_DN}" xmlns:tds="{NS_TDS}">'
        "<s:Header>"
        f'<a:Action s:mustUnderstand="1">{ACTION_PROBE}</a:Action>'
        f"<a:MessageID>{escape(mid)}</a:MessageID>"
        f"<a:ReplyTo><a:Address>{_ANONYMOUS}</a:Address></a:ReplyTo>"
        f'<a:To s:mustUnderstand="1">{DISCOVERY_TO}</a:To>'
        "</s:Header>"
        f"<s:Body>{probe}</s:Body>"
        "</s:Envelope>"
    )
    return xml.encode()


def parse_message(data: bytes, sender: tuple[str, int]) -> Message | None:
    """Parse one datagram into a ProbeMatches, Hello or Bye, or None for other SOAP messages.

    Raises `MalformedXml` for anything that is not a SOAP envelope (garbage, DTDs, oversize),
    so callers can count junk separately from legitimate traffic they do not care about (other
    clients' Probes, Resolve messages).
    """
    root = parse_xml(data)
    if not _is(root, _SOAP, "Envelope"):
        raise MalformedXml("not a SOAP envelope")
    header = _child(root, _SOAP, "Header")
    body = _child(root, _SOAP, "Body")
    if body is None:
        raise MalformedXml("SOAP envelope without Body")
    relates_to = _text(_child(header, _WSA, "RelatesTo"))
    ip = sender[0]
    hello = _child(body, _WSD, "Hello")
    if hello is not None:
        found = _found(hello, ip, relates_to)
        return Hello(found) if found is not None else None
    bye = _child(body, _WSD, "Bye")
    if bye is not None:
        endpoint = _endpoint(bye)
        return Bye(endpoint, ip) if endpoint else None
    # Matched anywhere below Body: some firmwares (Dahua-like) omit the ProbeMatches wrapper.
    match_elements = [el for el in body.iter() if _is(el, _WSD, "ProbeMatch")]
    if not match_elements and _child(body, _WSD, "ProbeMatches") is None:
        return None
    matches = [f for el in match_elements if (f := _found(el, ip, relates_to)) is not None]
    return ProbeMatches(relates_to, matches)


def parse_probe_matches(data: bytes, sender: tuple[str, int]) -> list[Found]:
    """The devices in a ProbeMatches datagram; [] for other messages, `MalformedXml` for junk."""
    message = parse_message(data, sender)
    return message.matches if isinstance(message, ProbeMatches) else []


def _is(el: Any, namespaces: frozenset[str], local: str) -> bool:
    if not isinstance(el.tag, str):
        return False
    qname = etree.QName(el)
    return bool(qname.localname == local and qname.namespace in namespaces)


def _child(el: Any, namespaces: frozenset[str], local: str) -> Any:
    """The first child with this namespace URI and local name; prefixes are never looked at."""
    if el is None:
        return None
    for child in el:
        if _is(child, namespaces, local):
            return child
    return None


def _text(el: Any) -> str | None:
    if el is None or el.text is None:
        return None
    text: str = el.text.strip()
    return text or None


def _endpoint(el: Any) -> str | None:
    return _text(_child(_child(el, _WSA, "EndpointReference"), _WSA, "Address"))


def _found(el: Any, sender_ip: str, relates_to: str | None) -> Found | None:
    """A `Found` from a ProbeMatch or Hello element; None when it identifies nothing."""
    raw = (_text(_child(el, _WSD, "XAddrs")) or "").split()
    xaddrs = list(dict.fromkeys(x for u in raw if (x := _normalise_xaddr(u)) is not None))
    endpoint = _endpoint(el) or (xaddrs[0] if xaddrs else None)
    if endpoint is None:
        return None
    types_el = _child(el, _WSD, "Types")
    types = [_resolve_qname(types_el, t) for t in (_text(types_el) or "").split()]
    scopes = (_text(_child(el, _WSD, "Scopes")) or "").split()
    version_text = _text(_child(el, _WSD, "MetadataVersion"))
    found = Found(
        endpoint=endpoint,
        xaddrs=xaddrs,
        address=sender_ip,
        types=types,
        scopes=scopes,
        relates_to=relates_to,
        metadata_version=int(version_text) if version_text and version_text.isdigit() else None,
    )
    _apply_scopes(found)
    return found


def _resolve_qname(el: Any, qname: str) -> str:
    """`dn:NetworkVideoTransmitter` → `{uri}NetworkVideoTransmitter`, by the element's nsmap."""
    prefix, sep, local = qname.rpartition(":")
    namespace = el.nsmap.get(prefix if sep else None)
    return f"{{{namespace}}}{local}" if namespace else qname


def _normalise_xaddr(url: str) -> str | None:
    """Add a scheme and the ONVIF device-service path when a device leaves them out."""
    if "://" not in url:
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for junk ports
    except ValueError:
        return None
    if not parts.hostname:
        return None
    path = parts.path if parts.path not in ("", "/") else DEFAULT_DEVICE_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _apply_scopes(found: Found) -> None:
    """Fill hardware/name/location/MAC from `onvif://www.onvif.org/<key>/<value>` scopes."""
    locations: list[str] = []
    for scope in found.scopes:
        parts = urlsplit(scope)
        segments = [unquote(s, errors="replace") for s in parts.path.split("/") if s]
        if not segments:
            continue
        key, rest = segments[0].lower(), "/".join(segments[1:])
        if parts.hostname == "www.onvif.org" and rest:
            if key == "hardware" and found.hardware is None:
                found.hardware = rest
            elif key == "name" and found.name is None:
                found.name = rest
            elif key == "location":
                locations.append(rest)
        if found.mac is None and (key in _MAC_SCOPE_KEYS or len(segments) == 1):
            found.mac = _mac(segments[-1])
    if locations:
        found.location = ", ".join(dict.fromkeys(locations))


def _mac(text: str) -> str | None:
    m = _MAC.match(text.strip())
    return ":".join(g.lower() for g in m.groups()) if m else None


def _replace_host(parts: Any, host: str) -> str:
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _unusable_host(host: str, sender_ip: str) -> bool:
    """Hosts that cannot be how the sender is reached from here."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: keep as announced
    if ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return True
    return ip.is_loopback and not ipaddress.ip_address(sender_ip).is_loopback


# --------------------------------------------------------------------------- rate limiting


class TokenBucket:
    """Allows `rate` events per second on average, with bursts of up to `burst`.

    Sleeps (never spins) until a token is available, so a sweep of tens of thousands of
    addresses is spread out instead of flooding switches and the devices' tiny UDP stacks.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    async def acquire(self) -> None:
        """Take one token, waiting as long as needed for it to accrue."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self._stamp is not None:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


# --------------------------------------------------------------------------- sockets


class _Receiver(asyncio.DatagramProtocol):
    """Hands every datagram to the scan; socket errors (ICMP unreachable) are only counted."""

    def __init__(
        self, handle: Callable[[bytes, tuple[str, int], bool], None], hello_only: bool
    ) -> None:
        self._handle = handle
        self._hello_only = hello_only
        self.errors = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._handle(data, (str(addr[0]), int(addr[1])), self._hello_only)

    def error_received(self, exc: Exception) -> None:
        self.errors += 1
        log.debug("ws-discovery socket error: %s", exc)


def _send_socket(ip: str, *, multicast: bool) -> socket.socket:
    """A non-blocking UDP socket on an ephemeral port of `ip` (never 3702: that is the devices')."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        if multicast:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ip))
            # TTL 1: discovery is link-local by design; probes must never be routed further.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.bind((ip, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _hello_socket(interfaces: list[str], port: int) -> socket.socket:
    """A socket on the discovery group, joined on each interface, for Hello announcements."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Bound to the group address so only group traffic arrives, not unicast to 3702.
        sock.bind((MULTICAST_GROUP, port))
        for ip in interfaces:
            mreq = socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton(ip)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8


def _ipv4_of(sock: socket.socket, name: str) -> tuple[int, str] | None:
    """(flags, IPv4 address) of the interface called `name`, None without an address."""
    ifreq = struct.pack("256s", name.encode()[:15])
    try:
        flags = struct.unpack_from("H", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, ifreq), 16)[0]
        raw = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, ifreq)
    except OSError:
        return None  # no IPv4 address, or the interface vanished meanwhile
    return flags, socket.inet_ntoa(raw[20:24])


def ipv4_interfaces() -> list[tuple[str, str]]:
    """(name, IPv4 address) of all up, non-loopback interfaces (the primary address of each).

    Uses SIOCGIFFLAGS/SIOCGIFADDR ioctls, which report one address per interface: secondary
    addresses on the same interface are not listed (pass them to `scan` explicitly).
    """
    result: list[tuple[str, str]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            got = _ipv4_of(sock, name)
            if got is None:
                continue
            flags, ip = got
            if not flags & _IFF_UP or flags & _IFF_LOOPBACK:
                continue
            if ip not in (r[1] for r in result) and not ipaddress.ip_address(ip).is_loopback:
                result.append((name, ip))
    return result


def local_ipv4_interfaces() -> list[str]:
    """IPv4 addresses of all up, non-loopback interfaces (see `ipv4_interfaces`)."""
    return [ip for _, ip in ipv4_interfaces()]


def interface_address(value: str) -> tuple[str, str]:
    """(name, IPv4 address) for an interface given by name (eth0) or by its address.

    Raises ValueError naming the interfaces there are when `value` is neither."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        names = [name for _, name in socket.if_nameindex()]
        try:
            ip = str(ipaddress.IPv4Address(value))
        except ValueError:
            got = _ipv4_of(sock, value) if value in names else None
            if got is None:
                raise ValueError(_no_such_interface(value, sock, names)) from None
            return value, got[1]
        for name in names:
            got = _ipv4_of(sock, name)
            if got is not None and got[1] == ip:
                return name, ip
        return ip, ip  # an address this machine has not (yet): the socket bind will say


def _no_such_interface(value: str, sock: socket.socket, names: list[str]) -> str:
    have = [f"{n} ({got[1]})" for n in names if (got := _ipv4_of(sock, n)) is not None]
    listed = ", ".join(have) or "none with an IPv4 address"
    return f"no interface {value!r} with an IPv4 address; this machine has: {listed}"


# --------------------------------------------------------------------------- discovery


_Dest = tuple[asyncio.DatagramTransport, tuple[str, int], bool]  # transport, address, unicast


class Discovery:
    """WS-Discovery client: `async with Discovery() as d: found = await d.scan(...)`.

    Results of the latest scan stay in `found` even when the scan is cancelled or times out
    from the outside. Counters (`malformed`, `ignored`, `invalid_targets`, `sent`,
    `socket_errors`) explain what the network sent besides cameras.
    """

    def __init__(self, *, max_found: int = 100_000) -> None:
        self.max_found = max_found
        self.message_id = ""
        self.malformed = 0
        self.ignored = 0
        self.invalid_targets = 0
        self.sent = 0
        self.departed: set[str] = set()
        self._found: dict[str, Found] = {}
        self._responded: set[str] = set()
        self._transports: list[asyncio.DatagramTransport] = []
        self._receivers: list[_Receiver] = []
        self._on_found: Callable[[Found], None] | None = None

    async def __aenter__(self) -> Discovery:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    @property
    def found(self) -> list[Found]:
        """Devices found by the latest scan so far, in order of discovery."""
        return list(self._found.values())

    @property
    def socket_errors(self) -> int:
        return sum(r.errors for r in self._receivers)

    async def scan(
        self,
        *,
        interfaces: Iterable[str] = (),
        unicast_targets: Iterable[str | ipaddress.IPv4Address] = (),
        port: int = DISCOVERY_PORT,
        # Not an overall deadline (wrap the call in asyncio.timeout for that): how long to keep
        # listening after the last probe, which is what a sweep's duration cannot replace.
        timeout: float = 3.0,  # noqa: ASYNC109
        retransmits: int = 3,
        rate: float = 500.0,
        burst: int = 20,
        max_outstanding: int = 256,
        types: str | None = "dn:NetworkVideoTransmitter",
        listen_hello: bool = False,
        on_found: Callable[[Found], None] | None = None,
    ) -> list[Found]:
        """Probe by multicast from each of `interfaces` and by unicast to each target.

        Every probe is sent `retransmits` times, 50–250 ms apart (random, per SOAP-over-UDP),
        except unicast retransmits to a target that has already answered. All sends share one
        token bucket (`rate` per second, bursts of `burst`), and at most `max_outstanding`
        targets await retransmission at a time, so `unicast_targets` is consumed lazily (pass
        `ipaddress.ip_network(cidr).hosts()` directly, as strings or addresses). The scan
        listens until `timeout` seconds after the last probe went out; a /16 at 500/s thus
        takes minutes, a single subnet a few seconds. Replies count only if their RelatesTo
        is this scan's MessageID, but Hello announcements always count; `listen_hello` also
        joins the multicast group on `interfaces` to hear them. `on_found` is called once per
        new endpoint, from the event loop; its exceptions are logged, not raised.

        Probes go out from ephemeral ports only; the one socket on the discovery port is the
        receive-only group listener of `listen_hello` (SO_REUSEADDR, so other tools coexist).
        Raises `OSError` when an interface address is not configured on this host, and
        `ValueError` for a non-IPv4 interface; unusable unicast targets are only counted
        (`invalid_targets`), since a sweep must not die halfway through its list.
        """
        if retransmits < 1 or max_outstanding < 1 or timeout < 0:
            raise ValueError("retransmits and max_outstanding must be >= 1, timeout >= 0")
        iface_list = [str(ipaddress.IPv4Address(str(ip))) for ip in interfaces]
        self._close()
        self._found = {}
        self._responded = set()
        self._on_found = on_found
        self.message_id = f"urn:uuid:{uuid.uuid4()}"
        probe = build_probe(self.message_id, types)
        loop = asyncio.get_running_loop()
        try:
            dests: list[_Dest] = []
            for ip in iface_list:
                transport = await self._open(_send_socket(ip, multicast=True), hello_only=False)
                dests.append((transport, (MULTICAST_GROUP, port), False))
            # Any address: the kernel routes each directed probe out of the right interface.
            any_ip = "0.0.0.0"  # noqa: S104
            unicast = await self._open(_send_socket(any_ip, multicast=False), hello_only=False)
            if listen_hello and iface_list:
                await self._open(_hello_socket(iface_list, port), hello_only=True)
            targets = self._unicast_dests(unicast, unicast_targets, port)
            last_send = await self._send_all(
                probe,
                iter([*dests]),
                targets,
                retransmits=retransmits,
                bucket=TokenBucket(rate, burst),
                max_outstanding=max_outstanding,
            )
            await asyncio.sleep(max(0.0, last_send + timeout - loop.time()))
        finally:
            self._close()
            self._on_found = None
        return self.found

    async def _open(self, sock: socket.socket, *, hello_only: bool) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        receiver = _Receiver(self._datagram, hello_only)
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: receiver, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transports.append(transport)
        self._receivers.append(receiver)
        return transport

    def _close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports = []

    def _unicast_dests(
        self, transport: asyncio.DatagramTransport, targets: Iterable[Any], port: int
    ) -> Iterator[_Dest]:
        """Targets as send destinations; anything but an IPv4 literal is skipped and counted.

        Hostnames are refused because resolving them would block the event loop in sendto.
        """
        for target in targets:
            try:
                ip = str(ipaddress.IPv4Address(str(target).strip()))
            except ValueError:
                self.invalid_targets += 1
                log.warning("ws-discovery: skipping target %r: not an IPv4 address", target)
                continue
            yield (transport, (ip, port), True)

    async def _send_all(
        self,
        probe: bytes,
        multicast: Iterator[_Dest],
        unicast: Iterator[_Dest],
        *,
        retransmits: int,
        bucket: TokenBucket,
        max_outstanding: int,
    ) -> float:
        """Send every probe and its retransmits; returns the loop time of the last send.

        A heap holds pending retransmits (due time, seq, destination, sends left); due
        retransmits go before new targets, and new targets are only taken while fewer than
        `max_outstanding` are pending.
        """
        loop = asyncio.get_running_loop()
        pending: list[tuple[float, int, _Dest, int]] = []
        seq = 0
        last_send = loop.time()
        sources = [multicast, unicast]
        while True:
            now = loop.time()
            dest: _Dest | None = None
            left = 0
            if pending and pending[0][0] <= now:
                _, _, dest, left = heapq.heappop(pending)
                if dest[2] and dest[1][0] in self._responded:
                    continue
            elif sources and len(pending) < max_outstanding:
                dest = next(sources[0], None)
                if dest is None:
                    sources.pop(0)
                    continue
                left = retransmits
            elif pending:
                await asyncio.sleep(pending[0][0] - now)
                continue
            else:
                return last_send
            await bucket.acquire()
            transport, address, _ = dest
            if not transport.is_closing():
                transport.sendto(probe, address)
                self.sent += 1
            last_send = loop.time()
            if left > 1:
                seq += 1
                due = last_send + random.uniform(0.05, 0.25)
                heapq.heappush(pending, (due, seq, dest, left - 1))

    def _datagram(self, data: bytes, sender: tuple[str, int], hello_only: bool) -> None:
        """Classify one datagram; never raises, since it runs in the transport's callback."""
        try:
            message = parse_message(data, sender)
        except MalformedXml as exc:
            self.malformed += 1
            log.debug("ws-discovery: malformed datagram from %s: %s", sender[0], exc)
            return
        if isinstance(message, Hello):
            self._record(message.found)
        elif isinstance(message, ProbeMatches) and not hello_only:
            if message.relates_to != self.message_id:
                self.ignored += 1
                return
            self._responded.add(sender[0])
            for found in message.matches:
                self._record(found)
        elif isinstance(message, Bye):
            if len(self.departed) < self.max_found:  # bounded: anyone can send Byes
                self.departed.add(message.endpoint)
        else:
            self.ignored += 1

    def _record(self, found: Found) -> None:
        known = self._found.get(found.endpoint)
        if known is not None:
            known.merge(found)
            return
        if len(self._found) >= self.max_found:
            self.ignored += 1
            return
        self._found[found.endpoint] = found
        if self._on_found is not None:
            try:
                self._on_found(found)
            except Exception:
                log.exception("ws-discovery: on_found callback failed")
