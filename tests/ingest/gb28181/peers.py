"""Real peers for the GB/T 28181 tests: SIPp devices and the registry side's stand-in.

`Directory` and `Recorder` stand where the registry will plug in (phase 2): a dict of known
device IDs with passwords, and queues of what the server reported. They are the server's
documented interfaces filled with plain data, not mocks of anything the server does.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.gb28181.catalog import CatalogResult
from ingest.gb28181.manscdp import CatalogItem, Manscdp
from ingest.gb28181.registrar import DeviceAccess, Registration
from ingest.gb28181.server import Gb28181Events, PlaySession

SCENARIOS = Path(__file__).resolve().parent / "sipp"
SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"
IPC_ID = "34020000001320000001"
NVR_ID = "34020000001180000001"
PASSWORD = "12345678"


def sipp_binary() -> str:
    """SIPp (Debian sip-tester) must be installed: a missing binary fails, never skips."""
    path = shutil.which("sipp")
    assert path is not None, "sipp not found: install the Debian package sip-tester"
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Directory:
    devices: dict[str, DeviceAccess] = field(default_factory=dict)

    def add(self, device_id: str, password: str = PASSWORD, *, in_scope: bool = True) -> None:
        self.devices[device_id] = DeviceAccess(device_id, password, in_scope)

    async def lookup(self, device_id: str) -> DeviceAccess | None:
        return self.devices.get(device_id)


class Recorder(Gb28181Events):
    """Queues of every event, so a test can wait for exactly what it expects."""

    def __init__(self) -> None:
        self.registered: asyncio.Queue[tuple[Registration, bool]] = asyncio.Queue()
        self.unregistered: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.keepalives: asyncio.Queue[str] = asyncio.Queue()
        self.timeouts: asyncio.Queue[str] = asyncio.Queue()
        self.catalogs: asyncio.Queue[CatalogResult] = asyncio.Queue()
        self.infos: asyncio.Queue[tuple[str, Manscdp]] = asyncio.Queue()
        self.notifies: asyncio.Queue[tuple[str, list[CatalogItem]]] = asyncio.Queue()
        self.ended: asyncio.Queue[tuple[PlaySession, str]] = asyncio.Queue()

    async def on_register(self, registration: Registration, is_new: bool) -> None:
        self.registered.put_nowait((registration, is_new))

    async def on_unregister(self, device_id: str, reason: str) -> None:
        self.unregistered.put_nowait((device_id, reason))

    async def on_keepalive(self, device_id: str) -> None:
        self.keepalives.put_nowait(device_id)

    async def on_keepalive_timeout(self, device_id: str) -> None:
        self.timeouts.put_nowait(device_id)

    async def on_catalog(self, result: CatalogResult) -> None:
        self.catalogs.put_nowait(result)

    async def on_device_info(self, device_id: str, message: Manscdp) -> None:
        self.infos.put_nowait((device_id, message))

    async def on_notify(self, device_id: str, items: list[CatalogItem]) -> None:
        self.notifies.put_nowait((device_id, items))

    async def on_play_ended(self, session: PlaySession, reason: str) -> None:
        self.ended.put_nowait((session, reason))


class Sipp:
    """One SIPp process acting as a device against our server, on loopback."""

    def __init__(
        self,
        workdir: Path,
        server_port: int,
        scenario: str,
        *,
        ooc: str | None = None,
        device_id: str = IPC_ID,
        password: str = PASSWORD,
        transport: str = "u1",
        hold_ms: int = 3000,
        keys: dict[str, str | bytes] | None = None,
        extra: list[str | bytes] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_udp_port()
        self.device_id = device_id
        keys = {
            "device_id": device_id,
            "server_id": SERVER_ID,
            "domain": DOMAIN,
            "contact_host": "127.0.0.1",
            "item_name": "Camera",
            "item_address": "Street",
            "charset": "GB2312",
            **(keys or {}),
        }
        args: list[str | bytes] = [
            sipp_binary(),
            f"127.0.0.1:{server_port}",
            "-sf",
            str(SCENARIOS / scenario),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-t",
            transport,
            "-au",
            device_id,
            "-ap",
            password,
            "-d",
            str(hold_ms),
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
            "-trace_err",
            "-trace_msg",
        ]
        if ooc:
            args += ["-oocsf", str(SCENARIOS / ooc)]
        for name, value in keys.items():
            args += ["-key", name, value]
        self.args = args + (extra or [])
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Sipp:
        self.proc = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def wait(self, within_s: float = 30.0) -> int:
        """SIPp's exit status: 0 when every call of the scenario succeeded."""
        assert self.proc is not None
        try:
            async with asyncio.timeout(within_s):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
            raise

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def logs(self) -> str:
        """SIPp's message and error traces, for assertion messages."""
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            out.append(f"== {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(out) or "(no SIPp logs)"


RTP_SSRC = 0x0BEBC201  # 200000001: the y= of ooc_invite.xml


def rtp_packet(seq: int, *, ssrc: int = RTP_SSRC, payload: bytes = b"") -> bytes:
    """RTP (RFC 3550) with payload type 96 (PS) and a PS pack-start code as payload."""
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3600, ssrc)
    return header + (payload or b"\x00\x00\x01\xba" + bytes(200))


def write_rtp_pcap(path: Path, packets: int = 20, interval_s: float = 0.02) -> None:
    """A pcap (Ethernet/IPv4/UDP) of `packets` RTP packets for SIPp's play_pcap_video."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(packets):
        rtp = rtp_packet(i + 1)
        udp = struct.pack("!HHHH", 30000, 30002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
            socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"),
        )  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        t = 1_700_000_000 + i * interval_s
        out.append(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


class RtpSink(asyncio.DatagramProtocol):
    """A UDP socket of ours standing where the media server's RTP port would be."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.got = asyncio.Event()
        self.want = 1

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.packets.append(data)
        if len(self.packets) >= self.want:
            self.got.set()
