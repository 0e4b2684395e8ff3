"""A real HTTP server implementing the ZLMediaKit API calls we make (live video of GB
channels, the health worker's diagnosis, the cascade), the one fake media server of the tests.

It keeps the calls it got (so a test can see the pull URL and the teardown) and, on
`startSendRtp` over UDP, really sends RTP packets (PS payload type 96, the given SSRC) to the
destination, like the media server would: the media leg's arrival is tested at a socket.
`openRtpServer` opens a real UDP port (its packets are kept: a test waits on them at the port);
`startSendRtp` for its stream (app `rtp`) relays what a device sent there, with the SSRC the
upper platform asked for, as ZLMediaKit re-sends a GB channel: the relayed payload is the
device's own. `startSendRtpPassive` listens on a real TCP port and, once the upper platform
connects, sends the same RTP there framed as RFC 4571 (2-byte length) like ZLMediaKit's TCP
legs. `getMediaList` lists an RTP stream once packets reached its port.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestServer

SECRET = "zlm-test-secret"


def frame(packet: bytes) -> bytes:
    """RTP over TCP as RFC 4571 (and GB/T 28181's TCP media) frames it: a 2-byte length."""
    return struct.pack("!H", len(packet)) + packet


def rtp_packet(seq: int, ssrc: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3600, ssrc)
    return header + b"\x00\x00\x01\xba" + bytes(100)


class FakeZlm:
    def __init__(self, *, packets: int = 10, refuse: set[str] | None = None, want: int = 1) -> None:
        """`want`: how many packets an RTP port gets before its `got` event is set."""
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.packets = packets
        self.refuse = refuse or set()
        self.want = want
        self.proxies: dict[str, str] = {}
        self.sending: dict[tuple[str, str], asyncio.Task[None] | None] = {}
        self.rtp_servers: dict[str, tuple[asyncio.DatagramTransport, RtpRelay]] = {}
        self.readers: dict[str, int] = {}  # stream → players getMediaInfo reports
        # (stream, ssrc) → the TCP server of a passive send and the connections it accepted
        self.passive: dict[tuple[str, str], tuple[asyncio.Server, list[asyncio.StreamWriter]]] = {}
        self.server: TestServer | None = None

    async def start(self) -> FakeZlm:
        app = web.Application()
        app.router.add_get("/index/api/{api}", self._api)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def stop(self) -> None:
        for task in self.sending.values():
            if task is not None:
                task.cancel()
        for key in list(self.passive):
            await self._stop_passive(key)
        for transport, _ in self.rtp_servers.values():
            transport.close()
        if self.server is not None:
            await self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    def called(self, api: str) -> list[dict[str, str]]:
        return [params for name, params in self.calls if name == api]

    def names(self) -> list[str]:
        """The calls in order, without the health worker's `getMediaList` polls."""
        return [name for name, _ in self.calls if name != "getMediaList"]

    async def _api(self, request: web.Request) -> web.Response:
        api = request.match_info["api"]
        params = dict(request.query)
        self.calls.append((api, params))
        if params.get("secret") != SECRET:
            return web.json_response({"code": -100, "msg": "secret is wrong"})
        if api in self.refuse:
            return web.json_response({"code": -1, "msg": f"{api} refused by test"})
        if api == "addStreamProxy":
            key = f"{params['vhost']}/{params['app']}/{params['stream']}"
            self.proxies[key] = params["url"]
            return web.json_response({"code": 0, "data": {"key": key}})
        if api == "delStreamProxy":
            found = self.proxies.pop(params["key"], None) is not None
            return web.json_response({"code": 0, "data": {"flag": found}})
        if api == "openRtpServer":
            loop = asyncio.get_running_loop()
            transport, relay = await loop.create_datagram_endpoint(
                lambda: RtpRelay(want=self.want), local_addr=("127.0.0.1", int(params["port"]))
            )
            self.rtp_servers[params["stream_id"]] = (transport, relay)
            return web.json_response({"code": 0, "port": transport.get_extra_info("sockname")[1]})
        if api == "closeRtpServer":
            entry = self.rtp_servers.pop(params["stream_id"], None)
            if entry is not None:
                entry[0].close()
            return web.json_response({"code": 0, "hit": int(entry is not None)})
        if api == "getMediaList":
            entry = self.rtp_servers.get(params.get("stream", ""))
            if entry is None or not entry[1].packets:
                return web.json_response({"code": 0})
            listed = {"app": params.get("app"), "stream": params["stream"], "schema": "rtsp"}
            return web.json_response({"code": 0, "data": [listed]})
        if api == "getMediaInfo":
            if params["stream"] not in self.rtp_servers:
                return web.json_response({"code": -500, "msg": "can not find the stream"})
            n = self.readers.get(params["stream"], 0)
            return web.json_response({"code": 0, "online": True, "totalReaderCount": n})
        if api == "startSendRtpPassive":
            return await self._start_passive(params)
        if api == "stopSendRtp" and (params["stream"], params["ssrc"]) in self.passive:
            await self._stop_passive((params["stream"], params["ssrc"]))
            return web.json_response({"code": 0})
        if api == "startSendRtp" and params.get("app") == "rtp":
            entry = self.rtp_servers.get(params["stream"])
            if entry is None:
                return web.json_response({"code": -500, "msg": "can not find the source stream"})
            entry[1].forward((params["dst_url"], int(params["dst_port"])), int(params["ssrc"]))
            return web.json_response({"code": 0, "local_port": 30_000 + len(self.calls)})
        if api == "stopSendRtp" and params.get("app") == "rtp":
            entry = self.rtp_servers.get(params["stream"])
            if entry is not None:
                entry[1].targets.pop(int(params["ssrc"]), None)
            return web.json_response({"code": 0})
        if api == "startSendRtp":
            port = 30_000 + len(self.calls)
            if params.get("is_udp") == "1":
                task = asyncio.create_task(
                    self._send(params["dst_url"], int(params["dst_port"]), int(params["ssrc"]))
                )
                self.sending[(params["stream"], params["ssrc"])] = task
            return web.json_response({"code": 0, "local_port": port})
        if api == "stopSendRtp":
            sending = self.sending.pop((params["stream"], params["ssrc"]), None)
            if sending is not None:
                sending.cancel()
            return web.json_response({"code": 0})
        return web.json_response({"code": -300, "msg": f"unknown api {api}"})

    async def _start_passive(self, params: dict[str, str]) -> web.Response:
        """Listen for the upper platform's TCP connection; send RTP on it once it comes."""
        stream, ssrc = params["stream"], int(params["ssrc"])
        relay = self.rtp_servers.get(stream) if params.get("app") == "rtp" else None
        if params.get("app") == "rtp" and relay is None:
            return web.json_response({"code": -500, "msg": "can not find the source stream"})
        writers: list[asyncio.StreamWriter] = []

        async def accepted(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            if relay is not None:
                relay[1].forward_tcp(writer, ssrc)
                return
            for seq in range(1, self.packets + 1):
                writer.write(frame(rtp_packet(seq, ssrc)))
                await writer.drain()
                await asyncio.sleep(0.01)

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.passive[(stream, params["ssrc"])] = (server, writers)
        port = server.sockets[0].getsockname()[1]
        return web.json_response({"code": 0, "local_port": port})

    async def _stop_passive(self, key: tuple[str, str]) -> None:
        server, writers = self.passive.pop(key)
        entry = self.rtp_servers.get(key[0])
        if entry is not None:
            entry[1].tcp_targets.pop(int(key[1]), None)
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()

    async def _send(self, host: str, port: int, ssrc: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for seq in range(1, self.packets + 1):
                sock.sendto(rtp_packet(seq, ssrc), (host, port))
                await asyncio.sleep(0.01)


class RtpSink(asyncio.DatagramProtocol):
    """The upper platform's media port: a real UDP socket counting RTP packets."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.got = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)
        self.got.set()

    def ssrcs(self) -> set[int]:
        return {struct.unpack("!I", p[8:12])[0] for p in self.packets if len(p) >= 12}


class RtpRelay(asyncio.DatagramProtocol):
    """An RTP server port: keeps what the device sent and re-sends it to each destination."""

    def __init__(self, want: int = 1) -> None:
        self.packets: list[bytes] = []
        self.got = asyncio.Event()
        self.want = want
        self.targets: dict[int, tuple[str, int]] = {}  # ssrc → destination
        self.tcp_targets: dict[int, asyncio.StreamWriter] = {}  # ssrc → passive connection
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def forward(self, dst: tuple[str, int], ssrc: int) -> None:
        """Start sending to dst; what arrived before goes first (the media server's cache)."""
        self.targets[ssrc] = dst
        for data in self.packets:
            self._send(data, dst, ssrc)

    def forward_tcp(self, writer: asyncio.StreamWriter, ssrc: int) -> None:
        """Send on an accepted TCP connection (a passive leg), cached packets first."""
        self.tcp_targets[ssrc] = writer
        for data in self.packets:
            self._send_tcp(data, writer, ssrc)

    def _send(self, data: bytes, dst: tuple[str, int], ssrc: int) -> None:
        if self.transport is not None and len(data) >= 12:
            self.transport.sendto(data[:8] + struct.pack("!I", ssrc) + data[12:], dst)

    @staticmethod
    def _send_tcp(data: bytes, writer: asyncio.StreamWriter, ssrc: int) -> None:
        if len(data) >= 12 and not writer.is_closing():
            writer.write(frame(data[:8] + struct.pack("!I", ssrc) + data[12:]))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)
        if len(self.packets) >= self.want:
            self.got.set()
        for ssrc, dst in list(self.targets.items()):
            self._send(data, dst, ssrc)
        for ssrc, writer in list(self.tcp_targets.items()):
            self._send_tcp(data, writer, ssrc)
