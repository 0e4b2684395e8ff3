"""An upper platform (SIPp) INVITEs one of our channels: the media server (a real HTTP server
speaking ZLMediaKit's API) pulls the camera and sends RTP to the SDP address, a real UDP socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient

from api.cascade.media import MediaClient, MediaServer
from api.state import POOL
from tests.api.cascade.peers import OUTSIDE, UpperPlatform, make_client, upstream_settings, wait_for
from tests.conftest import Tok, camera
from tests.fake_zlm import SECRET, FakeZlm, RtpSink

CHANNEL = "14010500001320000101"


async def test_invite_in_region_relays_rtp_to_the_sdp_address_and_bye_tears_down_audited(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    headers = await auth("admin")
    for body in (
        camera(
            gb_id=CHANNEL,
            streams={"main": "rtsp://127.0.0.1:8554/cam101"},
            username="viewer",
            password="cam-pass",
        ),
        OUTSIDE,
    ):
        resp = await client.post("/api/v1/cameras", json=body, headers=headers)
        assert resp.status in (201, 409), await resp.text()
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=("127.0.0.1", 0))
    rtp_port = transport.get_extra_info("sockname")[1]
    zlm = await FakeZlm(packets=10).start()
    upper = await UpperPlatform(
        tmp_path,
        scenario="upper_invite.xml",
        watch_ms=1500,
        keys={"channel": CHANNEL, "forbidden": OUTSIDE["gb_id"], "rtp_port": str(rtp_port)},
    ).start()
    async with aiohttp.ClientSession() as session:
        media = MediaClient(MediaServer(zlm.url, SECRET, rtp_ip="127.0.0.1"), session)
        up = make_client(client, upstream_settings(upper.port), media=media)
        await up.start()
        try:
            await wait_for(lambda: up.counters["views_ended"] >= 1, what="view ended by BYE")
            await asyncio.wait_for(sink.got.wait(), 5)
        finally:
            await up.stop()
            await upper.stop()
            await zlm.stop()
            transport.close()
    assert up.counters["invites"] == 2
    assert up.counters["invites_refused"] == 1
    assert up.last_error is not None and up.last_error.status == 403  # the refused one, recorded
    assert sink.ssrcs() == {100000002}  # y=0100000002 from the INVITE
    assert len(sink.packets) >= 5
    (proxy,) = zlm.called("addStreamProxy")
    assert proxy["url"] == "rtsp://viewer:cam-pass@127.0.0.1:8554/cam101"
    (send,) = zlm.called("startSendRtp")
    assert (send["dst_url"], send["dst_port"], send["is_udp"]) == ("127.0.0.1", str(rtp_port), "1")
    assert len(zlm.called("stopSendRtp")) == 1 and len(zlm.called("delStreamProxy")) == 1
    assert "Unexpected" not in upper.errors(), upper.errors()
    rows = await client.app[POOL].fetch(
        "SELECT action, detail FROM audit_log"
        " WHERE action LIKE 'gb28181.upstream_view%' ORDER BY id"
    )
    assert [r["action"] for r in rows] == [
        "gb28181.upstream_view.start",
        "gb28181.upstream_view.end",
    ]
    end = rows[1]["detail"]
    assert end["channel"] == CHANNEL and end["upstream"] == "province"
    assert end["reason"] == "upper platform sent BYE" and end["seconds"] >= 1.0
    assert "cam-pass" not in str([r["detail"] for r in rows])
