"""Live video of a GB/T 28181 channel: a stream link INVITEs the SIPp device to send RTP to the
port our media server opened, RTP arrives there, and the media server's no-reader hook ends it
with BYE and closeRtpServer. The media server is a real HTTP server implementing the two
ZLMediaKit calls we use, and its RTP port a real UDP socket."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import GB_DEVICES, SIP
from camera_registry.config import Gb28181Settings, MediaServer, Relay, Settings
from ingest.gb28181.manscdp import CatalogItem
from tests.conftest import Tok
from tests.ingest.gb28181.peers import RtpSink, Sipp, write_rtp_pcap

SERVER_ID = "14000000002000000001"
IPC = "14010500001320000077"
ZLM_SECRET = "zlm-api-secret-for-tests"
RELAY_SECRET = "relay-hook-secret-0123456789"


class FakeZlm:
    """The ZLMediaKit HTTP API calls we use; each opened RTP server is a real UDP socket."""

    def __init__(self) -> None:
        self.sinks: dict[str, tuple[asyncio.DatagramTransport, RtpSink]] = {}
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.app = web.Application()
        self.app.router.add_get("/index/api/openRtpServer", self.open)
        self.app.router.add_get("/index/api/closeRtpServer", self.close)

    def _check(self, request: web.Request, name: str) -> dict[str, str]:
        q = dict(request.query)
        self.calls.append((name, q))
        if q.get("secret") != ZLM_SECRET:
            raise web.HTTPOk(text='{"code": -100, "msg": "secret error"}')
        return q

    async def open(self, request: web.Request) -> web.Response:
        q = self._check(request, "openRtpServer")
        loop = asyncio.get_running_loop()
        transport, sink = await loop.create_datagram_endpoint(
            RtpSink, local_addr=("127.0.0.1", int(q["port"]))
        )
        sink.want = 20
        self.sinks[q["stream_id"]] = (transport, sink)
        return web.json_response({"code": 0, "port": transport.get_extra_info("sockname")[1]})

    async def close(self, request: web.Request) -> web.Response:
        q = self._check(request, "closeRtpServer")
        entry = self.sinks.get(q["stream_id"])
        if entry is not None:
            entry[0].close()
        return web.json_response({"code": 0, "hit": int(entry is not None)})


@pytest.fixture(scope="module")
async def zlm() -> AsyncIterator[tuple[FakeZlm, str]]:
    fake = FakeZlm()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    for transport, _ in fake.sinks.values():
        transport.close()
    await server.close()


@pytest.fixture(scope="module")
async def live_client(
    settings: Settings, database_url: str, schema: str, zlm: tuple[FakeZlm, str]
) -> AsyncIterator[TestClient]:
    gb = Gb28181Settings(
        sip_host="127.0.0.1",
        sip_port=0,
        server_id=SERVER_ID,
        query_on_register=False,
        media=MediaServer(api_url=zlm[1], secret=ZLM_SECRET, rtp_ip="127.0.0.1"),
    )
    relay = Relay(
        name="zlm",
        urls={"flv": "http://127.0.0.1:8081/rtp/{stream_key}.live.flv?sign={sign}"},
        secret=RELAY_SECRET,
    )
    app = create_app(
        settings.model_copy(update={"gb28181": gb, "relays": (relay,)}),
        Database(dsn=database_url, schema=schema),
        run_sip=True,
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_stream_link_for_a_gb_channel_invites_rtp_to_the_media_server_and_no_reader_ends_it(
    live_client: TestClient, zlm: tuple[FakeZlm, str], tmp_path: Path
) -> None:
    fake, _ = zlm
    tok = Tok(live_client)
    write_rtp_pcap(tmp_path / "rtp.pcap", packets=20)
    sipp = await Sipp(
        tmp_path,
        live_client.app[SIP].port,
        "register.xml",
        ooc="ooc_invite.xml",
        device_id=IPC,
        hold_ms=6000,
        keys={"server_id": SERVER_ID, "domain": SERVER_ID[:10]},
    ).start()
    try:
        async with asyncio.timeout(10):
            while True:  # the SIP server registers it on its own task
                if live_client.app[SIP].registrar.live(IPC) is not None:
                    break
                await asyncio.sleep(0.05)
        channel = CatalogItem(
            device_id=IPC, name="迎泽大街", civil_code="140105", longitude=112.55,
            latitude=37.87, po_type=3, status="ON",
        )  # fmt: skip
        await live_client.app[GB_DEVICES].apply_catalog(
            IPC, [dataclasses.asdict(channel)], complete=True
        )
        camera_id = str(
            await live_client.app[GB_DEVICES].pool.fetchval(
                "SELECT id FROM cameras WHERE gb_id = $1", IPC
            )
        )
        resp = await live_client.get(
            f"/api/v1/cameras/{camera_id}/stream?protocol=flv", headers=await tok("commander")
        )
        assert resp.status == 200, await resp.text()
        link: dict[str, Any] = await resp.json()
        key = f"{IPC}_main"
        assert link["url"].startswith(f"http://127.0.0.1:8081/rtp/{key}.live.flv?sign=")
        assert [c[0] for c in fake.calls] == ["openRtpServer"]
        _, sink = fake.sinks[key]
        await asyncio.wait_for(sink.got.wait(), 10)  # the device's RTP reached the media port
        assert len(sink.packets) >= 20
        # a second link for the same stream reuses the leg: no second INVITE
        again = await live_client.get(
            f"/api/v1/cameras/{camera_id}/stream?protocol=flv", headers=await tok("commander")
        )
        assert again.status == 200
        assert [c[0] for c in fake.calls] == ["openRtpServer"]
        hook = await live_client.post(
            f"/api/v1/hooks/zlm/on_stream_none_reader?secret={RELAY_SECRET}",
            json={"app": "rtp", "stream": key, "schema": "rtsp"},
        )
        assert await hook.json() == {"code": 0, "close": True}
        assert await sipp.wait() == 0, sipp.logs()  # SIPp got its BYE and answered it
    finally:
        await sipp.stop()
    assert [c[0] for c in fake.calls] == ["openRtpServer", "closeRtpServer"]
    assert fake.calls[1][1]["stream_id"] == key
    assert live_client.app[SIP].sessions == {}
