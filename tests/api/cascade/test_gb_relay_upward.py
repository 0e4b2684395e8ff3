"""An upper platform (SIPp) INVITEs a channel that is itself a GB/T 28181 channel of one of our
devices (SIPp too): we INVITE the device downward to the media server's RTP port, have the
media server re-send that RTP to the upper platform's SDP address (a real UDP socket), and the
upper platform's BYE tears down both legs. The media server is a real HTTP server speaking
ZLMediaKit's API whose RTP port relays what the device really sent."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.cascade.media import MediaClient, MediaServer
from api.state import GB_DEVICES, GB_PLAYER, POOL, SIP
from camera_registry.config import MediaServer as MediaSettings
from camera_registry.config import Settings
from ingest.gb28181.manscdp import CatalogItem
from tests.api.cascade.peers import (
    OUTSIDE,
    SCENARIOS,
    UpperPlatform,
    make_client,
    upstream_settings,
    wait_for,
)
from tests.api.gb_app import RELAY_SECRET, SERVER_ID, ZLM_RELAY, gb_app
from tests.conftest import Tok
from tests.fake_zlm import SECRET, FakeZlm, RtpSink
from tests.ingest.gb28181.peers import RTP_SSRC, Sipp, write_rtp_pcap

IPC = "14010500001320000077"


@pytest.fixture
async def zlm() -> AsyncIterator[FakeZlm]:
    fake = await FakeZlm().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def gb_client(
    settings: Settings, database_url: str, schema: str, zlm: FakeZlm
) -> AsyncIterator[TestClient]:
    media = MediaSettings(api_url=zlm.url, secret=SECRET, rtp_ip="127.0.0.1")
    app = gb_app(
        settings, database_url, schema, relay=ZLM_RELAY, query_on_register=False, media=media
    )
    async with TestClient(TestServer(app)) as c:
        yield c


def workdirs(tmp_path: Path) -> tuple[Path, Path]:
    """SIPp working directories: the device's (with the RTP it plays) and the upper platform's."""
    device, upper = tmp_path / "device", tmp_path / "upper"
    device.mkdir()
    upper.mkdir()
    write_rtp_pcap(device / "rtp.pcap", packets=20)
    return device, upper


async def _device_with_channel(
    client: TestClient, tmp_path: Path, *, ooc: str = "ooc_invite.xml"
) -> tuple[Sipp, str]:
    """A SIPp device registered with one channel in the registry; returns it and the camera."""
    device = await Sipp(
        tmp_path,
        client.app[SIP].port,
        "register.xml",
        ooc=ooc,
        device_id=IPC,
        hold_ms=8000,
        keys={"server_id": SERVER_ID, "domain": SERVER_ID[:10]},
    ).start()
    async with asyncio.timeout(10):
        while client.app[SIP].registrar.live(IPC) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    channel = CatalogItem(
        device_id=IPC, name="迎泽大街", civil_code="140105", longitude=112.55,
        latitude=37.87, po_type=3, status="ON",
    )  # fmt: skip
    await client.app[GB_DEVICES].apply_catalog(IPC, [dataclasses.asdict(channel)], complete=True)
    camera_id = await client.app[POOL].fetchval("SELECT id FROM cameras WHERE gb_id = $1", IPC)
    return device, str(camera_id)


@pytest.mark.parametrize("other_reader", [False, True], ids=["alone", "with-a-player"])
async def test_upper_platform_invite_for_a_gb_channel_relays_the_devices_rtp_and_bye_ends_both(
    gb_client: TestClient, zlm: FakeZlm, tmp_path: Path, other_reader: bool
) -> None:
    """BYE ends the upward leg always, the device's leg only when no player still reads it."""
    tok = Tok(gb_client)
    resp = await gb_client.post("/api/v1/cameras", json=OUTSIDE, headers=await tok("admin"))
    assert resp.status in (201, 409), await resp.text()
    device_dir, upper_dir = workdirs(tmp_path)
    device, _ = await _device_with_channel(gb_client, device_dir)
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=("127.0.0.1", 0))
    rtp_port = transport.get_extra_info("sockname")[1]
    upper = await UpperPlatform(
        upper_dir,
        scenario="upper_invite.xml",
        watch_ms=2500,
        keys={"channel": IPC, "forbidden": OUTSIDE["gb_id"], "rtp_port": str(rtp_port)},
    ).start()
    player = gb_client.app[GB_PLAYER]
    key = f"{IPC}_main"
    if other_reader:
        zlm.readers[key] = 1  # a commander watches the same stream through a stream link
    hook_answer: object = None
    async with aiohttp.ClientSession() as session:
        media = MediaClient(MediaServer(zlm.url, SECRET, rtp_ip="127.0.0.1"), session)
        up = make_client(gb_client, upstream_settings(upper.port), media=media, player=player)
        await up.start()
        try:
            await wait_for(lambda: up.counters["views_started"] >= 1, what="view started")
            # the media server sees no player while only the upper platform watches: the
            # no-reader hook must not close a leg an upper platform holds
            hook = await gb_client.post(
                f"/api/v1/hooks/zlm/on_stream_none_reader?secret={RELAY_SECRET}",
                json={"app": "rtp", "stream": key, "schema": "rtsp"},
            )
            hook_answer = await hook.json()
            await wait_for(lambda: up.counters["views_ended"] >= 1, what="view ended by BYE")
            if other_reader:
                # the view is counted ended before its teardown releases the hold
                await wait_for(lambda: player.holds == {}, what="hold released")
                assert key in player.sessions and zlm.called("closeRtpServer") == []
                await player.stop(key, "the player left")
            await wait_for(lambda: key not in player.sessions, what="downward leg closed")
            assert await device.wait() == 0, device.logs()  # the device got its BYE, answered
        finally:
            await up.stop()
            await upper.stop()
            await device.stop()
            transport.close()
    assert up.counters["invites"] == 2 and up.counters["invites_refused"] == 1
    assert "Unexpected" not in upper.errors(), upper.errors()
    # the media leg: the device's own packets (its payload), with the upper platform's SSRC
    assert len(sink.packets) >= 20
    assert sink.ssrcs() == {100000002}
    device_payload = b"\x00\x00\x01\xba" + bytes(200)
    assert {p[12:] for p in sink.packets} == {device_payload}
    assert RTP_SSRC not in sink.ssrcs()
    calls = [name for name, _ in zlm.calls]
    assert "addStreamProxy" not in calls  # a GB channel is not pulled over RTSP
    (opened,) = zlm.called("openRtpServer")
    (send,) = zlm.called("startSendRtp")
    assert (send["app"], send["stream"]) == ("rtp", opened["stream_id"]) == ("rtp", key)
    assert (send["dst_url"], send["dst_port"], send["is_udp"]) == ("127.0.0.1", str(rtp_port), "1")
    assert [c["app"] for c in zlm.called("stopSendRtp")] == ["rtp"]
    assert [c["stream_id"] for c in zlm.called("closeRtpServer")] == [key]
    assert calls.index("stopSendRtp") < calls.index("closeRtpServer")
    assert gb_client.app[SIP].sessions == {} and player.holds == {}
    rows = await gb_client.app[POOL].fetch(
        "SELECT action, detail FROM audit_log WHERE action LIKE 'gb28181.upstream_view%'"
        " AND detail->>'upstream_id' = $1 ORDER BY id",
        up.id,
    )
    assert [r["action"] for r in rows] == [
        "gb28181.upstream_view.start",
        "gb28181.upstream_view.end",
    ]
    assert rows[0]["detail"]["source"] == "gb28181" and rows[0]["detail"]["channel"] == IPC
    assert rows[1]["detail"]["reason"] == "upper platform sent BYE"
    assert hook_answer == {"code": 0, "close": False}


async def test_device_hanging_up_ends_the_upper_platforms_view_with_a_bye(
    gb_client: TestClient, zlm: FakeZlm, tmp_path: Path
) -> None:
    tok = Tok(gb_client)
    resp = await gb_client.post("/api/v1/cameras", json=OUTSIDE, headers=await tok("admin"))
    assert resp.status in (201, 409), await resp.text()
    device_dir, upper_dir = workdirs(tmp_path)
    device, _ = await _device_with_channel(
        gb_client, device_dir, ooc=str(SCENARIOS / "ooc_invite_hangup.xml")
    )
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=("127.0.0.1", 0))
    rtp_port = transport.get_extra_info("sockname")[1]
    upper = await UpperPlatform(
        upper_dir,
        scenario="upper_invite_hangup.xml",
        keys={"channel": IPC, "forbidden": OUTSIDE["gb_id"], "rtp_port": str(rtp_port)},
    ).start()
    player = gb_client.app[GB_PLAYER]
    async with aiohttp.ClientSession() as session:
        media = MediaClient(MediaServer(zlm.url, SECRET, rtp_ip="127.0.0.1"), session)
        up = make_client(gb_client, upstream_settings(upper.port), media=media, player=player)
        await up.start()
        try:
            await wait_for(lambda: up.counters["views_ended"] >= 1, what="view ended")
            assert await device.wait() == 0, device.logs()  # its BYE was answered
            await wait_for(lambda: b"BYE sip:" in upper.trace(), what="BYE reached upward")
        finally:
            await up.stop()
            await upper.stop()
            await device.stop()
            transport.close()
    assert "Unexpected" not in upper.errors(), upper.errors()
    assert len(sink.packets) >= 1 and sink.ssrcs() == {100000002}
    key = f"{IPC}_main"
    assert [c["stream_id"] for c in zlm.called("closeRtpServer")] == [key]
    assert [c["app"] for c in zlm.called("stopSendRtp")] == ["rtp"]
    assert player.sessions == {} and player.holds == {}
    end = await gb_client.app[POOL].fetchrow(
        "SELECT detail FROM audit_log WHERE action = 'gb28181.upstream_view.end'"
        " AND detail->>'upstream_id' = $1",
        up.id,
    )
    assert end is not None and end["detail"]["reason"] == "device hung up"


async def _read_rtp_over_tcp(port: int, want: int) -> list[bytes]:
    """The upper platform's side of a passive leg: connect to the media server's port and
    read RFC 4571 frames (2-byte length, then the RTP packet)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    packets: list[bytes] = []
    try:
        async with asyncio.timeout(10):
            while len(packets) < want:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                packets.append(await reader.readexactly(length))
    finally:
        writer.close()
    return packets


async def test_upper_platform_connecting_over_tcp_gets_the_devices_rtp_from_a_passive_leg(
    gb_client: TestClient, zlm: FakeZlm, tmp_path: Path
) -> None:
    """INVITE with TCP/RTP/AVP and a=setup:active for a GB channel: the media server listens
    (startSendRtpPassive on the device's stream, app `rtp`), our 200 says TCP, passive and
    its port; the upper platform connects there and gets the device's RTP; BYE ends both."""
    tok = Tok(gb_client)
    resp = await gb_client.post("/api/v1/cameras", json=OUTSIDE, headers=await tok("admin"))
    assert resp.status in (201, 409), await resp.text()
    device_dir, upper_dir = workdirs(tmp_path)
    device, _ = await _device_with_channel(gb_client, device_dir)
    upper = await UpperPlatform(
        upper_dir,
        scenario="upper_invite_tcp.xml",
        watch_ms=4000,
        keys={"channel": IPC, "forbidden": OUTSIDE["gb_id"], "rtp_port": "9"},
    ).start()
    player = gb_client.app[GB_PLAYER]
    key = f"{IPC}_main"
    async with aiohttp.ClientSession() as session:
        media = MediaClient(MediaServer(zlm.url, SECRET, rtp_ip="127.0.0.1"), session)
        up = make_client(gb_client, upstream_settings(upper.port), media=media, player=player)
        await up.start()
        try:
            await wait_for(lambda: up.counters["views_started"] >= 1, what="view started")
            (passive,) = zlm.called("startSendRtpPassive")
            server, _ = zlm.passive[(passive["stream"], passive["ssrc"])]
            port = server.sockets[0].getsockname()[1]
            packets = await _read_rtp_over_tcp(port, 20)
            await wait_for(lambda: up.counters["views_ended"] >= 1, what="view ended by BYE")
            await wait_for(lambda: key not in player.sessions, what="downward leg closed")
            assert await device.wait() == 0, device.logs()
        finally:
            await up.stop()
            await upper.stop()
            await device.stop()
    assert "Unexpected" not in upper.errors(), upper.errors()  # 200 was TCP and passive
    assert (passive["app"], passive["stream"], passive["ssrc"]) == ("rtp", key, "0100000002")
    assert {struct.unpack("!I", p[8:12])[0] for p in packets} == {100000002}
    assert {p[12:] for p in packets} == {b"\x00\x00\x01\xba" + bytes(200)}  # the device's own
    assert zlm.called("startSendRtp") == []  # no UDP or active-TCP leg was opened
    assert [(c["app"], c["ssrc"]) for c in zlm.called("stopSendRtp")] == [("rtp", "0100000002")]
    assert zlm.passive == {}  # the listening port is closed by the teardown
    assert [c["stream_id"] for c in zlm.called("closeRtpServer")] == [key]
    start = await gb_client.app[POOL].fetchrow(
        "SELECT detail FROM audit_log WHERE action = 'gb28181.upstream_view.start'"
        " AND detail->>'upstream_id' = $1",
        up.id,
    )
    assert start is not None and start["detail"]["transport"] == "tcp"
