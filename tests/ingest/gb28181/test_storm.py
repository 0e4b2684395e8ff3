"""An unauthenticated REGISTER storm from thousands of source ports stays bounded in memory and
does not stop a registered device's keepalives."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from ingest.gb28181.message import Headers, SipRequest, new_branch, new_tag
from ingest.gb28181.server import SipServer, SipServerConfig
from tests.ingest.gb28181.peers import DOMAIN, IPC_ID, SERVER_ID, Directory, Recorder
from tests.ingest.gb28181.simdevice import SimDevice

PORTS = 6_000
BOUND = 1_000


def storm_register(device_id: str, port: int) -> bytes:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{port};rport;branch={new_branch()}")
    h.add("From", f"<sip:{device_id}@{DOMAIN}>;tag={new_tag()}")
    h.add("To", f"<sip:{device_id}@{DOMAIN}>")
    h.add("Call-ID", f"storm-{port}")
    h.add("CSeq", "1 REGISTER")
    h.add("Contact", f"<sip:{device_id}@127.0.0.1:{port}>")
    h.add("Expires", "3600")
    return SipRequest(h, b"", "REGISTER", f"sip:{SERVER_ID}@{DOMAIN}").serialise()


async def test_register_storm_from_thousands_of_ports_stays_bounded_and_keepalives_pass(
    config: SipServerConfig, directory: Directory, recorder: Recorder
) -> None:
    config.max_sources = BOUND
    config.response_cache_size = BOUND
    server = SipServer(config, directory, recorder)
    await server.start()
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        assert (await dev.register()).status == 200
        answered = 0
        for batch in range(0, PORTS, 500):
            socks = []
            for i in range(500):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
                # half claim our known IPC (challenged), half unknown IDs (403)
                device = IPC_ID if i % 2 else f"3402000000132{batch + i:07d}"
                s.sendto(storm_register(device, s.getsockname()[1]), ("127.0.0.1", server.port))
                socks.append(s)
            ok = await dev.keepalive(batch + 1)
            assert ok.status == 200  # the registered device is served during the storm
            await asyncio.sleep(0.05)
            for s in socks:
                with contextlib.suppress(BlockingIOError):
                    answered += bool(s.recv(4096))
                s.close()
        m = server.metrics()
    finally:
        dev.close()
        await server.stop()
    assert answered > 0
    assert m["rate_limiter_sources"] <= BOUND
    assert m["response_cache_entries"] <= BOUND
    assert m["registrations"] == 1
    assert m["replay_cache_entries"] == 1  # only the authenticated REGISTER left state
    assert m["challenged"] + m["unknown_device"] >= PORTS // 4  # the storm was processed
    assert m["keepalives"] == PORTS // 500
