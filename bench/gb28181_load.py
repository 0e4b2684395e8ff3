"""Simulated GB/T 28181 devices over UDP for bench_gb28181.py: one socket (source port) per
device, digest REGISTER, answers to Catalog/DeviceInfo queries, keepalives.

Every request is retransmitted on Timer E (0.5 s doubling, capped at 4 s, for 32 s) until
answered, as a device does, so a datagram dropped under load is a delay and never a lost
channel; a REGISTER answered 503 (the server shedding load) is sent again after its
Retry-After, as real devices do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.gb28181.digest import authorization_for
from ingest.gb28181.errors import SipParseError
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

DOMAIN = "1400000000"
SERVER_ID = "14000000002000000001"
PASSWORD = "12345678"  # noqa: S105 — the default device password of [gb28181]
ITEMS_PER_MESSAGE = 8
KEEPALIVE_S = 60.0
_SN = re.compile(rb"<SN>(\d+)</SN>")


def device_ids(n: int, nvr_share: float) -> list[tuple[str, int]]:
    """(device ID, channels): NVRs (type 118) first, then IPCs (132), all in 太原市."""
    nvrs = round(n * nvr_share)
    out = [(f"14010500001180{i:06d}", 32) for i in range(nvrs)]
    out += [(f"14010600001320{i:06d}", 1) for i in range(n - nvrs)]
    return out


def channel_ids(device_id: str, channels: int) -> list[str]:
    if channels == 1 and device_id[10:13] == "132":
        return [device_id]
    base = int(device_id[14:]) * 32
    return [f"14010700001310{base + c:06d}" for c in range(channels)]


def catalog_item(item_id: str, parent: str) -> bytes:
    return (
        f"<Item><DeviceID>{item_id}</DeviceID><Name>通道{item_id[-4:]}</Name>"
        f"<Manufacturer>Bench</Manufacturer><CivilCode>{item_id[:6]}</CivilCode>"
        f"<ParentID>{parent}</ParentID><Status>ON</Status><Longitude>112.5{item_id[-4:]}"
        f"</Longitude><Latitude>37.8{item_id[-4:]}</Latitude><Info><PoType>3</PoType></Info>"
        "</Item>"
    ).encode()


class ServiceUnavailable(Exception):
    """The server answered 503: come back after `retry_after` seconds (RFC 3261 §21.5.4)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"503, retry after {retry_after} s")
        self.retry_after = retry_after


def retry_after(response: SipResponse, default: float = 5.0) -> float:
    """A response's Retry-After delta-seconds (comment and parameters ignored, §20.33)."""
    text = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0].strip()
    return float(text) if text.isdigit() else default


SHED = {"responses": 0}  # 503s this process's devices were answered (the server shed load)


class Port(asyncio.DatagramProtocol):
    """One UDP socket (source port) for one or more devices; requests from the server are
    routed to their device by the request URI's user, responses by their Via branch."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.devices: dict[str, Device] = {}
        self.pending: dict[str, asyncio.Future[SipResponse]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = int(transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            return
        if isinstance(msg, SipResponse):
            fut = self.pending.get(msg.top_via.branch)
            if fut is not None and not fut.done() and msg.status >= 200:
                fut.set_result(msg)
            return
        user = msg.uri.split(":", 1)[-1].split("@", 1)[0]
        device = self.devices.get(user) or next(iter(self.devices.values()))
        device.on_request(msg)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Device:
    device_id: str
    channels: int
    server: tuple[str, int]
    socket: Port
    on_keepalive: Callable[[], None] | None = None
    cseq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    tag: str = field(default_factory=new_tag)
    call_id: str = field(default_factory=lambda: new_call_id("127.0.0.1"))
    tasks: set[asyncio.Task[object]] = field(default_factory=set)

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self.socket.transport

    @property
    def port(self) -> int:
        return self.socket.port

    @property
    def pending(self) -> dict[str, asyncio.Future[SipResponse]]:
        return self.socket.pending

    def on_request(self, msg: SipRequest) -> None:
        assert self.transport is not None
        self.transport.sendto(build_response(msg, 200, to_tag=self.tag).serialise(), self.server)
        if msg.method != "MESSAGE":
            return
        sn = _SN.search(msg.body)
        if sn is None:
            return
        if b"<CmdType>Catalog</CmdType>" in msg.body:
            task = asyncio.get_running_loop().create_task(self.answer_catalog(sn.group(1)))
        elif b"<CmdType>DeviceInfo</CmdType>" in msg.body:
            task = asyncio.get_running_loop().create_task(self.answer_info(sn.group(1)))
        else:
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def request(
        self, method: str, body: bytes = b"", extra: dict[str, str] | None = None
    ) -> SipRequest:
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={new_branch()}")
        h.add("From", f"<sip:{self.device_id}@{DOMAIN}>;tag={self.tag}")
        h.add("To", f"<sip:{self.device_id if method == 'REGISTER' else SERVER_ID}@{DOMAIN}>")
        h.add("Call-ID", self.call_id if method == "REGISTER" else new_call_id("127.0.0.1"))
        h.add("CSeq", f"{next(self.cseq)} {method}")
        h.add("Contact", f"<sip:{self.device_id}@127.0.0.1:{self.port}>")
        h.add("Max-Forwards", "70")
        for k, v in (extra or {}).items():
            h.add(k, v)
        if body:
            h.add("Content-Type", "Application/MANSCDP+xml")
        return SipRequest(h, body, method, f"sip:{SERVER_ID}@{DOMAIN}")

    async def ask(self, req: SipRequest) -> SipResponse:
        assert self.transport is not None
        branch = req.top_via.branch
        fut: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.pending[branch] = fut
        data = req.serialise()
        interval = 0.5
        try:
            for _ in range(11):  # Timer F: 64 × T1 = 32 s
                self.transport.sendto(data, self.server)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), interval)
                except TimeoutError:
                    interval = min(interval * 2, 4.0)
            raise TimeoutError(f"{self.device_id}: no answer to {req.method}")
        finally:
            self.pending.pop(branch, None)

    async def register(self) -> None:
        """REGISTER with digest, then keep alive. Raises `ServiceUnavailable` on a 503 (the
        server sheds load): the caller waits its Retry-After and starts again, as a device does."""
        first = await self.ask(self.request("REGISTER", extra={"Expires": "3600"}))
        if first.status == 503:
            raise ServiceUnavailable(retry_after(first))
        if first.status == 200:
            return
        auth = authorization_for(
            first.headers.get("WWW-Authenticate") or "",
            method="REGISTER",
            uri=f"sip:{SERVER_ID}@{DOMAIN}",
            username=self.device_id,
            password=PASSWORD,
        )
        ok = await self.ask(
            self.request("REGISTER", extra={"Expires": "3600", "Authorization": auth})
        )
        if ok.status == 503:
            raise ServiceUnavailable(retry_after(ok))
        if ok.status != 200:
            raise RuntimeError(f"{self.device_id}: REGISTER answered {ok.status}")
        # then keep alive every 60 s, as a device does (a wave longer than the keepalive
        # timeout would otherwise take the first devices offline while the last register)
        task = asyncio.get_running_loop().create_task(self.keep_alive_every(KEEPALIVE_S))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def keep_alive_every(self, interval: float) -> None:
        for sn in itertools.count(1_000_000):
            await asyncio.sleep(interval)
            with contextlib.suppress(TimeoutError):
                await self.keepalive(sn)

    async def answer_catalog(self, sn: bytes) -> None:
        ids = channel_ids(self.device_id, self.channels)
        for i in range(0, len(ids), ITEMS_PER_MESSAGE):
            items = b"".join(
                catalog_item(c, self.device_id) for c in ids[i : i + ITEMS_PER_MESSAGE]
            )
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>Catalog</CmdType><SN>'
                + sn + b"</SN><DeviceID>" + self.device_id.encode() + b"</DeviceID><SumNum>"
                + str(len(ids)).encode() + b"</SumNum><DeviceList>" + items
                + b"</DeviceList></Response>"
            )  # fmt: skip
            await self.ask(self.request("MESSAGE", body))

    async def answer_info(self, sn: bytes) -> None:
        body = (
            b"<Response><CmdType>DeviceInfo</CmdType><SN>" + sn + b"</SN><DeviceID>"
            + self.device_id.encode() + b"</DeviceID><Result>OK</Result><Manufacturer>Bench"
            b"</Manufacturer><Channel>" + str(self.channels).encode() + b"</Channel></Response>"
        )  # fmt: skip
        await self.ask(self.request("MESSAGE", body))

    async def keepalive(self, sn: int) -> None:
        body = (
            b"<Notify><CmdType>Keepalive</CmdType><SN>" + str(sn).encode() + b"</SN><DeviceID>"
            + self.device_id.encode() + b"</DeviceID><Status>OK</Status></Notify>"
        )  # fmt: skip
        await self.ask(self.request("MESSAGE", body))
        if self.on_keepalive is not None:
            self.on_keepalive()


async def open_devices(
    specs: list[tuple[str, int]], server: tuple[str, int], *, per_port: int = 1
) -> list[Device]:
    """The devices, `per_port` of them on each UDP socket (one source port each by default;
    more than one lets 50,000 devices fit beside other work in the machine's ephemeral ports)."""
    loop = asyncio.get_running_loop()
    out: list[Device] = []
    for i in range(0, len(specs), per_port):
        _, port = await loop.create_datagram_endpoint(Port, local_addr=("127.0.0.1", 0))
        for device_id, channels in specs[i : i + per_port]:
            dev = Device(device_id, channels, server, port)
            port.devices[device_id] = dev
            out.append(dev)
    return out


def quiet(devices: list[Device]) -> None:
    """Stop the devices' own keepalives (and any answer in progress), so that a measured
    keepalive phase is all the keepalive load the server sees."""
    for d in devices:
        for task in list(d.tasks):
            task.cancel()


def close_devices(devices: list[Device]) -> None:
    quiet(devices)
    for port in {id(d.socket): d.socket for d in devices}.values():
        port.close()


def raise_open_files() -> int:
    """Raise this process's open-file limit to its hard limit (one socket per device)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def register_all(devices: list[Device], in_flight: int) -> None:
    sem = asyncio.Semaphore(max(1, in_flight))  # devices boot over time

    async def register(dev: Device) -> None:
        while True:
            try:
                async with sem:
                    await dev.register()
                return
            except ServiceUnavailable as shed:
                # waits outside the slot: a device told to come back later is not booting,
                # and real devices back off each on its own
                SHED["responses"] += 1
                await asyncio.sleep(shed.retry_after)

    await asyncio.gather(*(register(d) for d in devices))


async def worker(
    host: str,
    port: int,
    start: int,
    count: int,
    n: int,
    share: float,
    in_flight: int,
    per_port: int,
) -> None:
    """A load process of its own for devices [start, start + count) of `device_ids(n, share)`:
    one process holds at most the open-file limit in sockets, so 50,000 devices need several.

    Protocol on stdin/stdout with the benchmark: prints `ready` once its sockets are open,
    registers on a `go` line, prints `registered`, keeps alive every 60 s until a `quiet` line,
    and keeps answering the server's queries until stdin closes.
    """
    raise_open_files()
    specs = device_ids(n, share)[start : start + count]
    devices = await open_devices(specs, (host, port), per_port=per_port)
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() == "go":
        await register_all(devices, in_flight)
        print(f"registered {SHED['responses']}", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() == "quiet":
            quiet(devices)
    await asyncio.to_thread(sys.stdin.read)
    close_devices(devices)


if __name__ == "__main__":
    h, p, s, c, total, sh, f, pp = sys.argv[1:9]
    asyncio.run(worker(h, int(p), int(s), int(c), int(total), float(sh), int(f), int(pp)))
