"""A discovery run: find devices (WS-Discovery multicast per interface, unicast probes over
CIDR ranges, optional HTTP sweep of ONVIF ports), interrogate them over ONVIF, fill the inbox.

Every stage is bounded (rate, concurrency, per-device budget) so sweeping a /16 behind a
router neither floods it nor takes forever; what was found survives a Ctrl-C.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ingest.errors import IngestError
from ingest.onvif.probe import DeviceFacts, Target, interrogate, load_onvif
from ingest.onvif.wsdiscovery import Discovery, Found

_DATE_PROBE = (
    '<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/'
    'soap-envelope"><s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/'
    'wsdl"/></s:Body></s:Envelope>'
)
MAX_SWEEP_HOSTS = 65_536


@dataclass
class DiscoveryReport:
    found: list[Found] = field(default_factory=list)
    swept: list[tuple[str, int]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0


def cidr_hosts(cidrs: Iterable[str]) -> Iterator[str]:
    """Hosts of each range, lazily (a /16 is 65,534 addresses; never a list in memory)."""
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise IngestError(f"--cidr {cidr!r} is not an IPv4 range like 10.2.0.0/22") from None
        if net.version != 4 or net.num_addresses > MAX_SWEEP_HOSTS:
            raise IngestError(f"--cidr {cidr}: sweep IPv4 ranges of at most a /16 at a time")
        yield from (str(h) for h in (net.hosts() if net.num_addresses > 2 else net))


async def http_sweep(
    hosts: Iterable[str], ports: Iterable[int], *, concurrency: int = 64, per_host_s: float = 2.0
) -> list[tuple[str, int]]:
    """Devices that answer ONVIF's unauthenticated GetSystemDateAndTime on a port (for the
    cameras that ignore unicast WS-Discovery probes)."""
    found: list[tuple[str, int]] = []
    sem = asyncio.Semaphore(concurrency)
    client_timeout = aiohttp.ClientTimeout(total=per_host_s, connect=per_host_s)

    async def one(session: aiohttp.ClientSession, host: str, port: int) -> None:
        url = f"http://{host}:{port}/onvif/device_service"
        try:
            async with (
                sem,
                session.post(
                    url,
                    data=_DATE_PROBE,
                    headers={"Content-Type": "application/soap+xml; charset=utf-8"},
                ) as resp,
            ):
                body = await resp.content.read(65536)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return
        if b"GetSystemDateAndTimeResponse" in body:
            found.append((host, port))

    ports = list(ports)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        pending: set[asyncio.Task[None]] = set()
        for host, port in itertools.product(hosts, ports):
            pending.add(asyncio.create_task(one(session, host, port)))
            if len(pending) >= concurrency * 2:  # never one task per address of a /16
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending)
    return sorted(found)


def _target(found: Found, username: str | None, password: str | None) -> Target:
    url = (found.candidate_urls() or [f"http://{found.address}/onvif/device_service"])[0]
    parts = urlsplit(url)
    return Target(parts.hostname or found.address, parts.port or 80, username, password)


def _device(endpoint: str, xaddrs: list[str], facts: DeviceFacts) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "address": facts.address,
        "port": facts.port,
        "xaddrs": xaddrs,
        "vendor": facts.vendor,
        "model": facts.model,
        "firmware": facts.firmware,
        "serial": facts.serial,
        "mac": facts.mac,
        "failure": facts.failure,
        "detail": facts.detail,
        "clock_skew_s": facts.clock_skew_s,
        "ptz": facts.ptz,
        "geo_lon": facts.geo_lon,
        "geo_lat": facts.geo_lat,
        "geo_elevation": facts.geo_elevation,
        "geo_flag": facts.geo_flag,
        "profiles": [asdict(p) for p in facts.profiles],
    }


def device_order(device: dict[str, Any]) -> tuple[int, Any, int]:
    """Sort key: numeric address order (127.0.0.6 before 127.0.0.11), then port."""
    try:
        ip = ipaddress.ip_address(device["address"])
        return (ip.version, int(ip), device["port"])
    except ValueError:
        return (9, device["address"], device["port"])


@dataclass
class Progress:
    """Counts of a running discovery, for progress bars and scan jobs."""

    addresses: int = 0  # unicast addresses to probe
    probed: int = 0  # unicast addresses probed so far
    found: int = 0  # devices found (WS-Discovery or HTTP sweep)
    interrogated: int = 0  # devices whose interrogation finished (either way)
    failed: dict[str, int] = field(default_factory=dict)  # failure category -> count


def count_hosts(cidrs: Iterable[str]) -> int:
    """How many addresses `cidr_hosts` yields for `cidrs` (validating them the same way)."""
    total = 0
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise IngestError(f"--cidr {cidr!r} is not an IPv4 range like 10.2.0.0/22") from None
        if net.version != 4 or net.num_addresses > MAX_SWEEP_HOSTS:
            raise IngestError(f"--cidr {cidr}: sweep IPv4 ranges of at most a /16 at a time")
        total += net.num_addresses - 2 if net.num_addresses > 2 else net.num_addresses
    return total


async def discover(
    *,
    interfaces: Iterable[str] = (),
    cidrs: Iterable[str] = (),
    ports: Iterable[int] = (),
    username: str | None = None,
    password: str | None = None,
    discovery_port: int = 3702,
    timeout: float = 3.0,  # noqa: ASYNC109 - listening time after the last probe
    rate: float = 500.0,
    concurrency: int = 16,
    device_timeout: float = 8.0,
    on_found: Callable[[Found], None] | None = None,
    on_device: Callable[[dict[str, Any]], None] | None = None,
    progress: Progress | None = None,
) -> DiscoveryReport:
    """Find and interrogate; the caller stores `report.devices` in the inbox.

    Interrogation is pipelined with the sweep: a device is interrogated (at most
    `concurrency` at a time) as soon as it answers, not after the last probe, so a large sweep
    ends shortly after its last probe. `on_device` is called with each finished device;
    `progress` (if given) is kept up to date for whoever reports it.
    """
    report = DiscoveryReport()
    state = progress if progress is not None else Progress()
    cidrs = list(cidrs)
    state.addresses = count_hosts(cidrs)
    await load_onvif()  # WSDL parsing before the first device's budget starts
    slots = asyncio.Semaphore(concurrency)
    tasks: dict[asyncio.Task[None], tuple[str, list[str], Target]] = {}

    def finished(device: dict[str, Any]) -> None:
        device["username"], device["password"] = username, password
        report.devices.append(device)
        state.interrogated += 1
        if device["failure"] is not None:
            state.failed[device["failure"]] = state.failed.get(device["failure"], 0) + 1
        if on_device is not None:
            on_device(device)

    async def interrogate_one(endpoint: str, xaddrs: list[str], target: Target) -> None:
        async with slots:
            facts = await interrogate(
                target.address, target.port, username, password, timeout=device_timeout
            )
        finished(_device(endpoint, xaddrs, facts))

    def start(endpoint: str, xaddrs: list[str], target: Target) -> None:
        state.found += 1
        task = asyncio.create_task(interrogate_one(endpoint, xaddrs, target))
        tasks[task] = (endpoint, xaddrs, target)
        task.add_done_callback(lambda t: tasks.pop(t, None))

    def found_cb(found: Found) -> None:
        start(found.endpoint, list(found.xaddrs), _target(found, username, password))
        if on_found is not None:
            on_found(found)

    def counted(hosts: Iterable[str]) -> Iterator[str]:
        for host in hosts:
            state.probed += 1
            yield host

    try:
        async with Discovery() as disco:
            report.found = await disco.scan(
                interfaces=list(interfaces),
                unicast_targets=counted(cidr_hosts(cidrs)),
                port=discovery_port,
                timeout=timeout,
                rate=rate,
                on_found=found_cb,
            )
            report.malformed = disco.malformed
        ports = list(ports)
        if ports and cidrs:
            seen = {f.address for f in report.found}
            report.swept = [
                hp for hp in await http_sweep(cidr_hosts(cidrs), ports) if hp[0] not in seen
            ]
            for host, port in report.swept:
                start(f"http://{host}:{port}/onvif/device_service", [], Target(host, port))
        while tasks:
            await asyncio.wait(list(tasks))
    finally:
        # Stopped (Ctrl-C, job cancelled): what was found but not yet interrogated is still
        # reported, as timed out by us, so a rerun knows it is there.
        unfinished = list(tasks.items())
        for task, _ in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait([t for t, _ in unfinished])
        for task, (endpoint, xaddrs, target) in unfinished:
            if task.cancelled():
                facts = DeviceFacts(address=target.address, port=target.port)
                facts.failure, facts.detail = "timeout", "scan stopped before interrogation ended"
                finished(_device(endpoint, xaddrs, facts))
    report.devices.sort(key=device_order)
    return report
