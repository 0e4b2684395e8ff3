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
from aiohttp.test_utils import TestClient, TestServer

from api.state import GB_DEVICES, SIP
from camera_registry.config import MediaServer, Settings
from ingest.gb28181.manscdp import CatalogItem
from tests.api.gb_app import RELAY_SECRET, SERVER_ID, ZLM_RELAY, gb_app
from tests.conftest import Tok
from tests.fake_zlm import SECRET, FakeZlm
from tests.ingest.gb28181.peers import Sipp, write_rtp_pcap

IPC = "14010500001320000077"


@pytest.fixture(scope="module")
async def zlm() -> AsyncIterator[FakeZlm]:
    fake = await FakeZlm(want=20).start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
async def live_client(
    settings: Settings, database_url: str, schema: str, zlm: FakeZlm
) -> AsyncIterator[TestClient]:
    media = MediaServer(api_url=zlm.url, secret=SECRET, rtp_ip="127.0.0.1")
    app = gb_app(
        settings, database_url, schema, relay=ZLM_RELAY, query_on_register=False, media=media
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_stream_link_for_a_gb_channel_invites_rtp_to_the_media_server_and_no_reader_ends_it(
    live_client: TestClient, zlm: FakeZlm, tmp_path: Path
) -> None:
    fake = zlm
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
        _, sink = fake.rtp_servers[key]
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
