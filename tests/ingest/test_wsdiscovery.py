"""WS-Discovery against fake ONVIF devices: real UDP servers on 127.0.0.x with vendor quirks.

All traffic stays on loopback: scans use unicast targets in 127.0.0.0/8 and no interfaces, so
nothing is ever multicast.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest

import ingest.onvif.wsdiscovery as wsd
from ingest.errors import MalformedXml
from ingest.onvif.wsdiscovery import (
    Bye,
    Discovery,
    Found,
    Hello,
    ProbeMatches,
    TokenBucket,
    build_probe,
    local_ipv4_interfaces,
    parse_message,
    parse_probe_matches,
)
from ingest.xml_safe import parse_xml

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
DN = "http://www.onvif.org/ver10/network/wsdl"
NVT = f"{{{DN}}}NetworkVideoTransmitter"
DAHUA_NAME = "大华摄像机 东门"
TIMEOUT = 0.4
# Retransmits are 50–250 ms apart, so three sends can end 0.5 s after the first; add slack for
# a loaded CI machine. A correctness bound (the scan does stop), not a benchmark.
MARGIN = 0.5 + 1.0


def hik_reply(relates_to: str, endpoint: str = "urn:uuid:hik-0001", xaddrs: str = "") -> bytes:
    """Hikvision-like: proper ProbeMatches wrapper, the usual prefixes, NAT-wrong XAddrs."""
    xaddrs = xaddrs or (
        "http://192.168.1.64/onvif/device_service http://10.0.0.64:8080/onvif/device_service"
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<env:Envelope xmlns:env="{SOAP}" xmlns:wsadis="{WSD}" xmlns:wsa="{WSA}"
 xmlns:dn="{DN}" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">
<env:Header>
<wsa:MessageID>urn:uuid:reply-{endpoint[-4:]}</wsa:MessageID>
<wsa:RelatesTo>{relates_to}</wsa:RelatesTo>
<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>
<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>
</env:Header>
<env:Body><wsadis:ProbeMatches><wsadis:ProbeMatch>
<wsa:EndpointReference><wsa:Address>{endpoint}</wsa:Address></wsa:EndpointReference>
<wsadis:Types>dn:NetworkVideoTransmitter tds:Device</wsadis:Types>
<wsadis:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/Profile/Streaming
 onvif://www.onvif.org/hardware/DS-2CD2143G0-I onvif://www.onvif.org/name/HIKVISION%20DS-2CD2143G0-I
 onvif://www.onvif.org/location/city/hangzhou</wsadis:Scopes>
<wsadis:XAddrs>{xaddrs}</wsadis:XAddrs>
<wsadis:MetadataVersion>10</wsadis:MetadataVersion>
</wsadis:ProbeMatch></wsadis:ProbeMatches></env:Body></env:Envelope>""".encode()


def dahua_reply(relates_to: str) -> bytes:
    """Dahua-like: ProbeMatch straight in Body (no wrapper), odd prefixes, MAC in scopes."""
    name = quote(DAHUA_NAME)
    return f"""<?xml version="1.0" encoding="utf-8"?>
<x:Envelope xmlns:x="{SOAP}" xmlns:y="{WSA}" xmlns:z="{WSD}">
<x:Header><y:RelatesTo> {relates_to} </y:RelatesTo></x:Header>
<x:Body><z:ProbeMatch xmlns:tt="{DN}">
<y:EndpointReference><y:Address>urn:uuid:dahua-0002</y:Address></y:EndpointReference>
<z:Types>tt:NetworkVideoTransmitter</z:Types>
<z:Scopes>onvif://www.onvif.org/MAC/3C-EF-8C-AA-BB-CC onvif://www.onvif.org/hardware/IPC-HFW2431S
 onvif://www.onvif.org/name/{name}</z:Scopes>
<z:XAddrs>http://127.0.0.1/onvif/device_service  http://169.254.1.10/onvif/device_service</z:XAddrs>
<z:MetadataVersion>1</z:MetadataVersion>
</z:ProbeMatch></x:Body></x:Envelope>""".encode()


def hello_message() -> bytes:
    return f"""<e:Envelope xmlns:e="{SOAP}" xmlns:a="{WSA}" xmlns:d="{WSD}" xmlns:n="{DN}">
<e:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Hello</a:Action></e:Header>
<e:Body><d:Hello><a:EndpointReference><a:Address>urn:uuid:hello-0005</a:Address>
</a:EndpointReference><d:Types>n:NetworkVideoTransmitter</d:Types>
<d:XAddrs>http://127.0.0.1:8899/onvif/device_service</d:XAddrs>
<d:MetadataVersion>3</d:MetadataVersion></d:Hello></e:Body></e:Envelope>""".encode()


def bye_message() -> bytes:
    return f"""<e:Envelope xmlns:e="{SOAP}" xmlns:a="{WSA}" xmlns:d="{WSD}">
<e:Body><d:Bye><a:EndpointReference><a:Address>urn:uuid:bye-0006</a:Address>
</a:EndpointReference></d:Bye></e:Body></e:Envelope>""".encode()


def message_id_of(probe: bytes) -> str:
    root = parse_xml(probe)
    return str(root.find(f"{{{SOAP}}}Header/{{{WSA}}}MessageID").text)


class FakeDevice(asyncio.DatagramProtocol):
    """An ONVIF device answering Probes the way `quirk` says."""

    def __init__(self, quirk: str) -> None:
        self.quirk = quirk
        self.probes: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.alt: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.probes.append(data)
        assert addr[0] == "127.0.0.1"  # every probe comes from loopback
        mid = message_id_of(data)
        replies: list[bytes] = []
        if self.quirk in ("hikvision", "other_port"):
            replies = [hik_reply(mid)]
        elif self.quirk == "dahua":
            replies = [dahua_reply(mid)]
        elif self.quirk == "nopath":
            replies = [hik_reply(mid, "urn:uuid:nopath-03", "http://0.0.0.0 10.9.8.7:8000")]
        elif self.quirk == "lossy" and len(self.probes) >= 3:
            replies = [hik_reply(mid, "urn:uuid:lossy-004")]
        elif self.quirk == "garbage":
            replies = [b"\x00\xff garbage \xfe"]
        elif self.quirk == "wrong_relates":
            replies = [hik_reply("urn:uuid:00000000-0000-0000-0000-000000000000")]
        elif self.quirk == "hello":
            replies = [hello_message(), bye_message()]
        elif self.quirk == "xxe":
            replies = [b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>']
        elif self.quirk == "dup":
            one = "http://127.0.0.1:81/onvif/device_service"
            two = "http://127.0.0.1:82/onvif/device_service"
            replies = [hik_reply(mid, xaddrs=one), hik_reply(mid, xaddrs=f"{two} {one}")]
        sender = self.alt if self.quirk == "other_port" else self.transport
        assert sender is not None
        for reply in replies:
            sender.sendto(reply, addr)


@contextlib.asynccontextmanager
async def fake_device(quirk: str, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Any]:
    """Yield (device, port): a FakeDevice serving on host:port (0 = any free port)."""
    loop = asyncio.get_running_loop()
    transport, device = await loop.create_datagram_endpoint(
        lambda: FakeDevice(quirk), local_addr=(host, port)
    )
    alt = None
    if quirk == "other_port":
        alt, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        device.alt = alt
    try:
        yield device, transport.get_extra_info("sockname")[1]
    finally:
        transport.close()
        if alt is not None:
            alt.close()


async def scan_one(quirk: str, **kwargs: Any) -> tuple[Discovery, list[Found], FakeDevice, float]:
    async with fake_device(quirk) as (device, port), Discovery() as discovery:
        start = time.monotonic()
        found = await discovery.scan(
            unicast_targets=["127.0.0.1"], port=port, timeout=TIMEOUT, **kwargs
        )
        elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT + MARGIN
    return discovery, found, device, elapsed


# --------------------------------------------------------------------------- messages


def test_build_probe_is_a_proper_onvif_probe() -> None:
    root = parse_xml(build_probe("1b4e28ba-2fa1-11d2-883f-0016d3cca427"))
    assert root.tag == f"{{{SOAP}}}Envelope"
    header = root.find(f"{{{SOAP}}}Header")
    assert header.findtext(f"{{{WSA}}}MessageID") == "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert header.findtext(f"{{{WSA}}}To") == "urn:schemas-xmlsoap-org:ws:2005:04:discovery"
    assert header.findtext(f"{{{WSA}}}Action") == f"{WSD}/Probe"
    types = root.find(f"{{{SOAP}}}Body/{{{WSD}}}Probe/{{{WSD}}}Types")
    prefix, local = types.text.split(":")
    assert types.nsmap[prefix] == DN
    assert local == "NetworkVideoTransmitter"


def test_untyped_probe_and_bad_prefix() -> None:
    root = parse_xml(build_probe("urn:uuid:abc", types=None))
    probe = root.find(f"{{{SOAP}}}Body/{{{WSD}}}Probe")
    assert probe is not None
    assert len(probe) == 0
    assert root.find(f"{{{SOAP}}}Header/{{{WSA}}}MessageID").text == "urn:uuid:abc"
    with pytest.raises(ValueError, match="prefix"):
        build_probe("x", types="foo:Bar")


def test_parse_hikvision_probe_matches() -> None:
    [found] = parse_probe_matches(hik_reply("urn:uuid:me"), ("10.1.1.5", 3702))
    assert found.endpoint == "urn:uuid:hik-0001"
    assert found.xaddrs == [
        "http://192.168.1.64/onvif/device_service",
        "http://10.0.0.64:8080/onvif/device_service",
    ]
    assert found.address == "10.1.1.5"
    assert found.types == [NVT, "{http://www.onvif.org/ver10/device/wsdl}Device"]
    assert found.is_video_transmitter
    assert found.hardware == "DS-2CD2143G0-I"
    assert found.name == "HIKVISION DS-2CD2143G0-I"
    assert found.location == "city/hangzhou"
    assert found.mac is None
    assert found.relates_to == "urn:uuid:me"
    assert found.metadata_version == 10
    assert len(found.scopes) == 5
    # Behind NAT: announced hosts first, then the same URLs at the sender's address.
    assert found.candidate_urls() == [
        "http://192.168.1.64/onvif/device_service",
        "http://10.0.0.64:8080/onvif/device_service",
        "http://10.1.1.5/onvif/device_service",
        "http://10.1.1.5:8080/onvif/device_service",
    ]


def test_parse_dahua_without_wrapper_and_custom_prefixes() -> None:
    message = parse_message(dahua_reply("urn:uuid:me"), ("127.0.0.1", 40000))
    assert isinstance(message, ProbeMatches)
    assert message.relates_to == "urn:uuid:me"
    [found] = message.matches
    assert found.endpoint == "urn:uuid:dahua-0002"
    assert found.types == [NVT]
    assert found.name == DAHUA_NAME
    assert found.hardware == "IPC-HFW2431S"
    assert found.mac == "3c:ef:8c:aa:bb:cc"
    # Link-local host is unusable: the sender address replaces it.
    assert found.candidate_urls() == [
        "http://127.0.0.1/onvif/device_service",
    ]


def test_parse_xaddrs_without_path_or_scheme() -> None:
    [found] = parse_probe_matches(
        hik_reply("r", "urn:uuid:n", "http://0.0.0.0 10.9.8.7:8000 http://[bad"), ("10.2.2.2", 1)
    )
    assert found.xaddrs == [
        "http://0.0.0.0/onvif/device_service",
        "http://10.9.8.7:8000/onvif/device_service",
    ]
    assert found.candidate_urls()[0] == "http://10.2.2.2/onvif/device_service"


def test_parse_hello_and_bye() -> None:
    hello = parse_message(hello_message(), ("127.0.0.9", 3702))
    assert isinstance(hello, Hello)
    assert hello.found.endpoint == "urn:uuid:hello-0005"
    assert hello.found.types == [NVT]
    assert hello.found.metadata_version == 3
    bye = parse_message(bye_message(), ("127.0.0.9", 3702))
    assert bye == Bye("urn:uuid:bye-0006", "127.0.0.9")
    assert parse_probe_matches(hello_message(), ("127.0.0.9", 3702)) == []


def test_other_soap_is_none_and_junk_raises() -> None:
    assert parse_message(build_probe("urn:uuid:someone-else"), ("127.0.0.1", 1)) is None
    for junk in (b"\x00garbage", b"<a/>", f'<e:Envelope xmlns:e="{SOAP}"/>'.encode()):
        with pytest.raises(MalformedXml):
            parse_message(junk, ("127.0.0.1", 1))


def test_found_merge_keeps_first_xaddrs() -> None:
    first = Found("urn:uuid:a", ["http://a/x"], "127.0.0.1")
    first.merge(Found("urn:uuid:a", ["http://b/x", "http://a/x"], "127.0.0.2", name="cam"))
    assert first.xaddrs == ["http://a/x", "http://b/x"]
    assert first.name == "cam"
    assert first.address == "127.0.0.1"


def test_local_ipv4_interfaces_are_up_and_not_loopback() -> None:
    addresses = local_ipv4_interfaces()
    for ip in addresses:
        socket.inet_aton(ip)
        assert not ip.startswith("127.")
    assert len(set(addresses)) == len(addresses)


def test_multicast_socket_options_without_sending() -> None:
    sock = wsd._send_socket("127.0.0.1", multicast=True)
    try:
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4) == socket.inet_aton(
            "127.0.0.1"
        )
        assert sock.getsockname()[1] not in (0, 3702)
    finally:
        sock.close()


# --------------------------------------------------------------------------- scans


async def test_scan_finds_hikvision_with_fields() -> None:
    discovery, found, device, _ = await scan_one("hikvision")
    [cam] = found
    assert cam.endpoint == "urn:uuid:hik-0001"
    assert cam.address == "127.0.0.1"
    assert cam.relates_to == discovery.message_id
    assert cam.name == "HIKVISION DS-2CD2143G0-I"
    # It answered the first probe, so retransmits to it were skipped.
    assert len(device.probes) == 1
    assert message_id_of(device.probes[0]) == discovery.message_id


async def test_scan_finds_dahua() -> None:
    _, found, _, _ = await scan_one("dahua")
    assert [(f.endpoint, f.mac, f.name) for f in found] == [
        ("urn:uuid:dahua-0002", "3c:ef:8c:aa:bb:cc", DAHUA_NAME)
    ]


async def test_scan_accepts_reply_from_other_source_port() -> None:
    _, found, _, _ = await scan_one("other_port")
    assert [f.endpoint for f in found] == ["urn:uuid:hik-0001"]


async def test_scan_keeps_unspecified_xaddrs_with_sender_fallback() -> None:
    _, [cam], _, _ = await scan_one("nopath")
    assert cam.xaddrs[0] == "http://0.0.0.0/onvif/device_service"
    assert cam.address == "127.0.0.1"
    assert cam.candidate_urls()[0] == "http://127.0.0.1/onvif/device_service"


async def test_retransmits_find_a_lossy_device() -> None:
    discovery, found, device, _ = await scan_one("lossy", retransmits=3)
    assert [f.endpoint for f in found] == ["urn:uuid:lossy-004"]
    assert len(device.probes) == 3
    assert {message_id_of(p) for p in device.probes} == {discovery.message_id}
    _, missed, _, _ = await scan_one("lossy", retransmits=2)
    assert missed == []


async def test_garbage_is_counted_not_raised() -> None:
    discovery, found, device, _ = await scan_one("garbage")
    assert found == []
    assert discovery.malformed == len(device.probes) == 3


async def test_hostile_dtd_reply_is_malformed() -> None:
    discovery, found, _, _ = await scan_one("xxe", retransmits=1)
    assert found == []
    assert discovery.malformed == 1


async def test_wrong_relates_to_is_ignored() -> None:
    discovery, found, device, _ = await scan_one("wrong_relates")
    assert found == []
    assert discovery.ignored == len(device.probes) == 3


async def test_hello_counts_as_found_and_bye_is_noted() -> None:
    seen: list[str] = []
    discovery, found, _, _ = await scan_one("hello", on_found=lambda f: seen.append(f.endpoint))
    assert [f.endpoint for f in found] == seen == ["urn:uuid:hello-0005"]
    assert discovery.departed == {"urn:uuid:bye-0006"}


async def test_silent_device_finds_nothing_within_timeout() -> None:
    discovery, found, device, elapsed = await scan_one("silent")
    assert found == []
    assert len(device.probes) == 3
    assert elapsed >= TIMEOUT
    assert discovery.sent == 3


async def test_duplicate_replies_are_merged() -> None:
    seen: list[Found] = []
    _, found, _, _ = await scan_one("dup", on_found=seen.append)
    [cam] = found
    assert len(seen) == 1
    assert cam.xaddrs == [
        "http://127.0.0.1:81/onvif/device_service",
        "http://127.0.0.1:82/onvif/device_service",
    ]


async def test_on_found_errors_do_not_stop_the_scan() -> None:
    def boom(found: Found) -> None:
        raise RuntimeError("callback bug")

    _, found, _, _ = await scan_one("hikvision", on_found=boom)
    assert len(found) == 1


async def test_sweep_over_several_loopback_addresses() -> None:
    """One device per 127.0.0.x on a shared port, as a CIDR sweep sees a subnet."""
    quirks = ["hikvision", "dahua", "lossy", "garbage", "wrong_relates", "silent"]
    async with contextlib.AsyncExitStack() as stack:
        first, port = await stack.enter_async_context(fake_device(quirks[0]))
        devices = [first]
        for i, quirk in enumerate(quirks[1:], start=2):
            device, _ = await stack.enter_async_context(fake_device(quirk, f"127.0.0.{i}", port))
            devices.append(device)
        targets = (f"127.0.0.{i}" for i in range(1, len(quirks) + 2))  # +1: nobody there
        async with Discovery() as discovery:
            start = time.monotonic()
            found = await discovery.scan(
                unicast_targets=[*targets, "not-an-ip", "::1"], port=port, timeout=TIMEOUT
            )
            assert time.monotonic() - start < TIMEOUT + MARGIN
    assert sorted(f.endpoint for f in found) == [
        "urn:uuid:dahua-0002",
        "urn:uuid:hik-0001",
        "urn:uuid:lossy-004",
    ]
    by_endpoint = {f.endpoint: f for f in found}
    assert by_endpoint["urn:uuid:dahua-0002"].address == "127.0.0.2"
    assert by_endpoint["urn:uuid:lossy-004"].address == "127.0.0.3"
    assert discovery.malformed == 3
    assert discovery.ignored == 3
    assert discovery.invalid_targets == 2


async def test_cancelled_scan_keeps_what_was_found() -> None:
    async with fake_device("hikvision") as (_, port), Discovery() as discovery:
        got = asyncio.Event()
        task = asyncio.create_task(
            discovery.scan(
                unicast_targets=["127.0.0.1"], port=port, timeout=30, on_found=lambda f: got.set()
            )
        )
        await asyncio.wait_for(got.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [f.endpoint for f in discovery.found] == ["urn:uuid:hik-0001"]
        assert discovery._transports == []


# --------------------------------------------------------------------------- rate limiting


async def test_token_bucket_lower_bound() -> None:
    bucket = TokenBucket(rate=200, burst=5)
    start = time.monotonic()
    for _ in range(25):
        await bucket.acquire()
    assert time.monotonic() - start >= (25 - 5) / 200 * 0.95


async def test_sweep_is_rate_limited() -> None:
    n, rate, burst = 40, 200.0, 5
    async with fake_device("silent") as (_, port), Discovery() as discovery:
        start = time.monotonic()
        found = await discovery.scan(
            unicast_targets=(f"127.0.0.{i}" for i in range(2, 2 + n)),
            port=port,
            timeout=0,
            retransmits=1,
            rate=rate,
            burst=burst,
        )
        elapsed = time.monotonic() - start
    assert found == []
    assert discovery.sent == n
    assert elapsed >= (n - burst) / rate * 0.95  # 5% for clock granularity


async def test_targets_are_consumed_lazily_with_bounded_outstanding() -> None:
    discovery = Discovery()
    sent_when_pulled: list[int] = []

    def targets() -> Iterator[str]:
        for i in range(2, 12):
            sent_when_pulled.append(discovery.sent)
            yield f"127.0.0.{i}"

    async with fake_device("silent") as (_, port), discovery:
        await discovery.scan(
            unicast_targets=targets(), port=port, timeout=0, retransmits=3, max_outstanding=2
        )
    assert discovery.sent == 30
    # While target i is pulled, at most 1 earlier target still awaits retransmits.
    for i, sent in enumerate(sent_when_pulled):
        assert sent >= 3 * (i - 1)
