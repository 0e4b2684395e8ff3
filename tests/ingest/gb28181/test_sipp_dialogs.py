"""Dialogs we start with SIPp devices: SUBSCRIBE Catalog → NOTIFY, INVITE → 200 + RTP → BYE."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from ingest.gb28181.server import SipServer
from tests.ingest.gb28181.peers import (
    IPC_ID,
    NVR_ID,
    RTP_SSRC,
    Recorder,
    RtpSink,
    Sipp,
    write_rtp_pcap,
)


async def test_subscribe_catalog_then_notify_add_del_off_reaches_the_registry_side(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await Sipp(
        tmp_path, server.port, "register.xml", device_id=NVR_ID, ooc="ooc_subscribe.xml"
    ).start()
    try:
        await asyncio.wait_for(recorder.registered.get(), 10)
        sub = await asyncio.wait_for(server.subscribe_catalog(NVR_ID, 120), 10)
        assert sub.expires_s == 120
        assert server.subscriptions[NVR_ID] is sub
        device_id, items = await asyncio.wait_for(recorder.notifies.get(), 10)
    finally:
        await sipp.stop()
    assert device_id == NVR_ID
    assert [(i.device_id[-3:], i.event) for i in items] == [
        ("101", "ADD"),
        ("102", "DEL"),
        ("103", "OFF"),
    ]
    assert items[0].longitude == 112.55
    assert server.metrics()["notify_events"] == 3


async def test_invite_gets_200_rtp_reaches_the_media_port_and_bye_ends_it(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    write_rtp_pcap(tmp_path / "rtp.pcap", packets=20)
    loop = asyncio.get_running_loop()
    media, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=("127.0.0.1", 0))
    sink.want = 20
    media_port = media.get_extra_info("sockname")[1]
    sipp = await Sipp(
        tmp_path,
        server.port,
        "register.xml",
        ooc="ooc_invite.xml",
        hold_ms=4000,
    ).start()
    try:
        await asyncio.wait_for(recorder.registered.get(), 10)
        session = await asyncio.wait_for(
            server.invite(IPC_ID, IPC_ID, media_ip="127.0.0.1", media_port=media_port), 10
        )
        assert session.ssrc == "0200000001"
        assert session.answer.media_port > 0  # where the device sends from (SIPp's -mp)
        assert server.sessions[session.dialog.call_id] is session
        await asyncio.wait_for(sink.got.wait(), 10)
        await asyncio.wait_for(server.bye(session), 10)
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
        media.close()
    first = sink.packets[0]
    version, payload_type, _seq, _ts, ssrc = struct.unpack("!BBHII", first[:12])
    assert (version >> 6, payload_type & 0x7F, ssrc) == (2, 96, RTP_SSRC)
    assert first[12:16] == b"\x00\x00\x01\xba"  # a PS pack header
    assert len(sink.packets) == 20
    assert server.sessions == {}
    ended, reason = await asyncio.wait_for(recorder.ended.get(), 5)
    assert ended is session
    assert reason == "stopped"
