"""A registered lower platform pushes whole catalogs: its address gets a budget of its own, so a
province does not drop a city's catalog push at a single device's flood limit."""

from __future__ import annotations

import asyncio
import socket

from ingest.gb28181.message import SipRequest, SipResponse
from ingest.gb28181.transport import Peer, SipTransport

OPTIONS = (
    b"OPTIONS sip:34020000002000000001@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-%d\r\n"
    b"From: <sip:14010000002000000001@1401000000>;tag=a\r\n"
    b"To: <sip:34020000002000000001@3402000000>\r\n"
    b"Call-ID: budget-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


async def _deliveries(as_platform: bool) -> int:
    got: list[SipRequest | SipResponse] = []

    def on_message(message: SipRequest | SipResponse, peer: Peer) -> None:
        got.append(message)

    transport = SipTransport(
        on_message,
        lambda data, peer, exc: None,
        rate_per_source=0.001,
        burst_per_source=2,
        platform_rate_per_source=1_000,
    )
    await transport.start("127.0.0.1", 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind(("127.0.0.1", 0))
        if as_platform:
            transport.platforms.add(sender.getsockname())
        for i in range(20):
            sender.sendto(OPTIONS % (i, i), ("127.0.0.1", transport.port))
        for _ in range(50):
            await asyncio.sleep(0.02)
        return len(got)
    finally:
        sender.close()
        await transport.stop()


async def test_a_device_source_is_held_to_its_flood_budget() -> None:
    assert await _deliveries(as_platform=False) == 2


async def test_a_registered_platform_source_gets_the_platform_budget() -> None:
    assert await _deliveries(as_platform=True) == 20
