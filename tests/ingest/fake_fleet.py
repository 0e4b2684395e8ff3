"""Many fake ONVIF devices at once: a WS-Discovery responder (UDP) plus a `FakeOnvifServer`
(HTTP/SOAP) per address, for sweeps, scan jobs, network namespaces and the benchmark.

In-process use: `async with fleet([(address, camera), ...]) as (servers, udp_port)`. As a
helper process (for namespaces and the benchmark): `python -m tests.ingest.fake_fleet
--first 127.1.0.1 --count 256 [--step 8] [--udp-port P] [--multicast]` prints one JSON line
with the ports once every device listens, and serves until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tests.ingest.fake_onvif import FakeCamera, FakeOnvifServer
from tests.ingest.test_wsdiscovery import hik_reply, message_id_of

MULTICAST_GROUP = "239.255.255.250"


class ProbeResponder(asyncio.DatagramProtocol):
    """Answers every Probe with a ProbeMatch naming this device's ONVIF service."""

    def __init__(self, endpoint: str, xaddrs: str) -> None:
        self.endpoint = endpoint
        self.xaddrs = xaddrs
        self.transport: asyncio.DatagramTransport | None = None
        self.probes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            relates_to = message_id_of(data)
        except Exception:  # a fake device ignores what it cannot read
            return
        self.probes += 1
        assert self.transport is not None
        self.transport.sendto(hik_reply(relates_to, self.endpoint, self.xaddrs), addr)


def _multicast_socket(address: str, port: int) -> socket.socket:
    """Listen on the discovery port for the group, on the interface holding `address`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))  # noqa: S104 - inside a test namespace only
    mreq = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(address))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    return sock


def endpoint_for(address: str) -> str:
    """A stable WS-Discovery endpoint UUID per fake address."""
    n = int(ipaddress.IPv4Address(address))
    return f"urn:uuid:00000000-0000-4000-8000-{n:012x}"


@contextlib.asynccontextmanager
async def fleet(
    devices: Sequence[tuple[str, FakeCamera]],
    udp_port: int = 0,
    *,
    multicast: bool = False,
    endpoints: Sequence[str] | None = None,
) -> AsyncIterator[tuple[list[FakeOnvifServer], int]]:
    """Start every device; all responders share one UDP port (picked by the first bind)."""
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        servers: list[FakeOnvifServer] = []
        for index, (address, camera) in enumerate(devices):
            server = await stack.enter_async_context(FakeOnvifServer(camera, host=address))
            servers.append(server)
            xaddrs = f"http://{address}:{server.port}/onvif/device_service"
            endpoint = endpoints[index] if endpoints else endpoint_for(address)
            responder = ProbeResponder(endpoint, xaddrs)
            if multicast:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda r=responder: r,  # type: ignore[misc]
                    sock=_multicast_socket(address, udp_port),
                )
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda r=responder: r,  # type: ignore[misc]
                    local_addr=(address, udp_port),
                )
                udp_port = udp_port or transport.get_extra_info("sockname")[1]
            stack.callback(transport.close)
        yield servers, udp_port


async def _serve(args: argparse.Namespace) -> None:
    first = ipaddress.IPv4Address(args.first)
    addresses = [str(first + i * args.step) for i in range(args.count)]
    devices = [(a, FakeCamera(serial=f"SN{a}", mac=_mac(a))) for a in addresses]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), stop.set)  # parent gone or closed our stdin
    async with fleet(devices, args.udp_port, multicast=args.multicast) as (servers, port):
        print(json.dumps({"udp_port": port, "devices": len(servers)}), flush=True)
        await stop.wait()


def _mac(address: str) -> str:
    n = int(ipaddress.IPv4Address(address))
    return ":".join(f"{b:02x}" for b in (0x02, 0x00, *n.to_bytes(4, "big")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first", required=True, help="first device address")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--step", type=int, default=1, help="address distance between devices")
    parser.add_argument("--udp-port", type=int, default=0)
    parser.add_argument("--multicast", action="store_true", help="answer group probes")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
