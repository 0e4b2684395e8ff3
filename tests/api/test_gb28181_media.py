"""GB/T 28181 channels through the media server beyond one link: a video wall's
`POST /api/v1/streams` INVITEs them like `GET /cameras/{id}/stream`, and the health worker
diagnoses their frames by INVITEing them to the media server, reading its output with the
frame sampler, then hanging up (BYE, closeRtpServer).

Real peers: SIPp is the device (it answers the INVITE and sends RTP), the media server is a
real HTTP server implementing the ZLMediaKit calls we use with a real UDP socket per opened
RTP port, and the media server's output the sampler reads is a GStreamer RTSP mount."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.state import GB_DEVICES, GB_PLAYER, POOL, SIP, STREAMS, WORKER
from camera_registry.config import MediaServer, Settings
from health.errors import MediaBusy
from health.store import observe_many
from ingest.gb28181.manscdp import CatalogItem
from tests.api.gb_app import RELAY_SECRET, SERVER_ID, ZLM_RELAY, gb_app
from tests.conftest import Tok
from tests.fake_zlm import SECRET, FakeZlm
from tests.health.conftest import rtsp_ptz_dir, rtsp_server  # noqa: F401 - the GStreamer RTSP server fixtures
from tests.ingest.gb28181.peers import Sipp, write_rtp_pcap

IPC = "14010500001320000051"
SILENT = "14010500001320000052"  # in the registry, never registered
WALL_IPC = "14010500001320000053"


@pytest.fixture(scope="module")
async def zlm() -> AsyncIterator[FakeZlm]:
    fake = await FakeZlm(want=20).start()
    yield fake
    await fake.stop()


def media_app(
    settings: Settings, database_url: str, schema: str, zlm_url: str, rtsp_base: str,
    *, run_health: bool,
) -> web.Application:  # fmt: skip
    media = MediaServer(
        api_url=zlm_url,
        secret=SECRET,
        rtp_ip="127.0.0.1",
        invite_timeout_s=10,
        # the media server's RTSP output of a stream: here a GStreamer mount stands for it
        output_url=f"{rtsp_base}/normal?stream={{stream_key}}&sign={{sign}}",
    )
    return gb_app(
        settings, database_url, schema,
        relay=ZLM_RELAY, run_health=run_health, query_on_register=False, media=media,
    )  # fmt: skip


@pytest.fixture
async def wall_client(
    settings: Settings,
    database_url: str,
    schema: str,
    zlm: FakeZlm,
    rtsp_server: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[TestClient]:
    """The service without its health worker: only viewers open media legs."""
    app = media_app(settings, database_url, schema, zlm.url, rtsp_server, run_health=False)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
async def media_client(
    settings: Settings,
    database_url: str,
    schema: str,
    zlm: FakeZlm,
    rtsp_server: str,  # noqa: F811 - the fixture imported above
) -> AsyncIterator[TestClient]:
    """The service as `camreg serve` runs it: with its health worker."""
    app = media_app(settings, database_url, schema, zlm.url, rtsp_server, run_health=True)
    async with TestClient(TestServer(app)) as c:
        yield c


def device(tmp_path: Path, client: TestClient, device_id: str, hold_ms: int = 8000) -> Sipp:
    write_rtp_pcap(tmp_path / "rtp.pcap", packets=20)
    return Sipp(
        tmp_path,
        client.app[SIP].port,
        "register.xml",
        ooc="ooc_invite.xml",
        device_id=device_id,
        hold_ms=hold_ms,
        keys={"server_id": SERVER_ID, "domain": SERVER_ID[:10]},
    )


async def registered(client: TestClient, device_id: str) -> None:
    async with asyncio.timeout(10):
        while True:  # the SIP server registers it on its own task
            if client.app[SIP].registrar.live(device_id) is not None:
                return
            await asyncio.sleep(0.05)


async def channel(client: TestClient, device_id: str) -> uuid.UUID:
    """The device's one channel as a camera in the registry (the catalog, applied)."""
    item = CatalogItem(
        device_id=device_id, name="迎泽大街", civil_code="140105", longitude=112.55,
        latitude=37.87, po_type=3, status="ON",
    )  # fmt: skip
    await client.app[GB_DEVICES].apply_catalog(device_id, [dataclasses.asdict(item)], complete=True)
    cid = await client.app[POOL].fetchval("SELECT id FROM cameras WHERE gb_id = $1", device_id)
    assert isinstance(cid, uuid.UUID)
    return cid


async def metric(client: TestClient, series: str) -> float:
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} is not on /metrics")


async def test_video_wall_invites_gb_channels_and_says_per_item_why_one_cannot_play(
    wall_client: TestClient, zlm: FakeZlm, tmp_path: Path
) -> None:
    fake = zlm
    tok = Tok(wall_client)
    sipp = await device(tmp_path, wall_client, WALL_IPC).start()
    try:
        await registered(wall_client, WALL_IPC)
        playing = str(await channel(wall_client, WALL_IPC))
        silent = str(await channel(wall_client, SILENT))
        missing = str(uuid.uuid4())
        resp = await wall_client.post(
            "/api/v1/streams",
            json={"camera_ids": [playing, silent, missing], "protocol": "flv"},
            headers=await tok("commander"),
        )
        assert resp.status == 200, await resp.text()
        items: list[dict[str, Any]] = (await resp.json())["items"]
        assert [i["camera_id"] for i in items] == [playing, silent, missing]
        key = f"{WALL_IPC}_main"
        assert items[0]["url"].startswith(f"http://127.0.0.1:8081/rtp/{key}.live.flv?sign=")
        assert items[1]["error"]["status"] == 409  # its device is not registered
        assert SILENT in items[1]["error"]["detail"]
        assert items[2]["error"]["status"] == 404
        _, sink = fake.rtp_servers[key]
        await asyncio.wait_for(sink.got.wait(), 10)  # the device's RTP reached the media port
        assert await metric(wall_client, 'camreg_gb28181_invites_total{outcome="ok"}') == 1
        assert (
            await metric(wall_client, 'camreg_gb28181_invites_total{outcome="not_registered"}') == 1
        )
        hook = await wall_client.post(
            f"/api/v1/hooks/zlm/on_stream_none_reader?secret={RELAY_SECRET}",
            json={"app": "rtp", "stream": key, "schema": "rtsp"},
        )
        assert await hook.json() == {"code": 0, "close": True}
        assert await sipp.wait() == 0, sipp.logs()  # SIPp got its BYE and answered it
    finally:
        await sipp.stop()
    # the silent device's port was opened and closed again; the playing one's by the hook
    assert sorted(fake.names()) == ["closeRtpServer"] * 2 + ["openRtpServer"] * 2
    assert wall_client.app[SIP].sessions == {}


async def test_health_diagnoses_a_gb_channel_through_the_media_server_then_hangs_up(
    media_client: TestClient, zlm: FakeZlm, tmp_path: Path
) -> None:
    fake = zlm
    fake.calls.clear()
    sipp = await device(tmp_path, media_client, IPC, hold_ms=20_000).start()
    try:
        await registered(media_client, IPC)
        cid = await channel(media_client, IPC)
        pool = media_client.app[POOL]
        # what the device's registration says about its channel: off the RTSP schedule
        await observe_many(pool, [(cid, "ok", "registered; channel ON")])
        media_client.app[WORKER].poke_media()  # new channels: no need to wait for the next turn
        async with asyncio.timeout(60):
            while True:  # the worker's own loop picks it up
                row = await pool.fetchrow(
                    "SELECT last_diagnosis, next_probe_at = 'infinity' AS off_schedule "
                    "FROM camera_health WHERE camera_id = $1",
                    cid,
                )
                if row["last_diagnosis"] is not None:
                    break
                await asyncio.sleep(0.2)
        assert await sipp.wait() == 0, sipp.logs()  # INVITE, 200, ACK, RTP, then our BYE
    finally:
        await sipp.stop()
    report = row["last_diagnosis"]
    report = json.loads(report) if isinstance(report, str) else report
    assert report.get("failure") in (None, ""), report
    assert report["frames"] >= 10 and report["faulty"] is False, report
    assert row["off_schedule"]  # still fed by its device, never probed over RTSP
    key = f"{IPC}_main"
    # (the first test's channels are due too: their legs are opened and closed alike)
    ours = [name for name, q in fake.calls if key in (q.get("stream_id"), q.get("stream"))]
    assert [n for n in ours if n != "getMediaList"] == ["openRtpServer", "closeRtpServer"]
    assert media_client.app[SIP].sessions == {}
    health = await pool.fetchrow(
        "SELECT reference IS NOT NULL AS has_reference, state->>'picture' AS picture "
        "FROM camera_health WHERE camera_id = $1",
        cid,
    )
    assert (health["has_reference"], health["picture"]) == (True, "clean")
    assert await metric(media_client, 'camreg_gb28181_invites_total{outcome="ok"}') >= 1


async def test_diagnosis_reads_a_watched_leg_without_hanging_up_and_respects_the_session_cap(
    wall_client: TestClient, zlm: FakeZlm, tmp_path: Path
) -> None:
    fake = zlm
    fake.calls.clear()
    tok = Tok(wall_client)
    player = wall_client.app[GB_PLAYER]
    opener = player.opener(wall_client.app[STREAMS].signer)
    assert opener is not None
    nvr = "14010500001180000061"
    sipp = await device(tmp_path, wall_client, nvr).start()
    try:
        await registered(wall_client, nvr)
        items = [
            dataclasses.asdict(CatalogItem(
                device_id=f"1401050000132000006{n}", name=f"通道{n}", civil_code="140105",
                longitude=112.55, latitude=37.87, po_type=3, status="ON", parent_id=nvr,
            ))
            for n in (2, 3)
        ]  # fmt: skip
        await wall_client.app[GB_DEVICES].apply_catalog(nvr, items, complete=True)
        ids = {
            r["gb_id"]: r["id"]
            for r in await wall_client.app[POOL].fetch(
                "SELECT gb_id, id FROM cameras WHERE gb_id LIKE '14010500001320000_6%'"
            )
        }
        watched, other = ids["14010500001320000062"], ids["14010500001320000063"]
        resp = await wall_client.get(
            f"/api/v1/cameras/{watched}/stream?protocol=flv", headers=await tok("commander")
        )
        assert resp.status == 200, await resp.text()
        key = "14010500001320000062_main"
        # the diagnosis reads the watched leg and leaves it to its viewer
        async with opener(watched) as url:
            assert url.startswith("rtsp://") and f"stream={key}" in url
            # the media server's play hook admits the diagnosis's own link for this stream
            sign = url.rsplit("sign=", 1)[1]
            hook = await wall_client.post(
                f"/api/v1/hooks/zlm/on_play?secret={RELAY_SECRET}",
                json={"app": "rtp", "stream": key, "params": f"sign={sign}", "ip": "127.0.0.1"},
            )
            assert (await hook.json())["code"] == 0
            other_stream = await wall_client.post(
                f"/api/v1/hooks/zlm/on_play?secret={RELAY_SECRET}",
                json={"app": "rtp", "stream": "14010500001320000063_main",
                      "params": f"sign={sign}", "ip": "127.0.0.1"},
            )  # fmt: skip
            assert (await other_stream.json())["code"] != 0
        assert key in player.sessions
        assert fake.names() == ["openRtpServer"]
        # at the device's cap, a diagnosis waits for a later turn: no INVITE, no port
        player.media = player.media.model_copy(update={"max_sessions_per_device": 1})
        with pytest.raises(MediaBusy):
            async with opener(other):
                pass
        assert fake.names() == ["openRtpServer"]
        assert await player.stop(key, "test done")
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
