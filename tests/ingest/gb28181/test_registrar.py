"""REGISTER semantics against our own UDP device: Expires bounds, refresh, unregister, Date, NAT."""

from __future__ import annotations

import asyncio
import re

from ingest.gb28181.digest import authorization_for
from ingest.gb28181.server import SipServer
from tests.ingest.gb28181.peers import DOMAIN, IPC_ID, NVR_ID, SERVER_ID, Recorder
from tests.ingest.gb28181.simdevice import SimDevice


async def test_200_carries_a_gb_date_header_and_the_granted_expiry(server: SipServer) -> None:
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        ok = await dev.register(expires=3600)
    finally:
        dev.close()
    assert ok.status == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", ok.headers.get("Date") or "")
    assert ok.headers.get("Expires") == "3600"


async def test_expires_too_short_gets_423_with_min_expires(server: SipServer) -> None:
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        resp = await dev.register(expires=10)
    finally:
        dev.close()
    assert resp.status == 423
    assert resp.headers.get("Min-Expires") == "60"
    assert server.registrar.live(IPC_ID) is None


async def test_expires_beyond_the_maximum_is_shortened(server: SipServer) -> None:
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        resp = await dev.register(expires=10_000_000)
    finally:
        dev.close()
    assert resp.status == 200
    assert resp.headers.get("Expires") == "86400"


async def test_refresh_is_not_new_but_expires_zero_unregisters(
    server: SipServer, recorder: Recorder
) -> None:
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        assert (await dev.register()).status == 200
        _, first_new = await asyncio.wait_for(recorder.registered.get(), 5)
        assert (await dev.register()).status == 200
        _, refresh_new = await asyncio.wait_for(recorder.registered.get(), 5)
        assert (first_new, refresh_new) == (True, False)
        assert (await dev.register(expires=0)).status == 200
        assert await asyncio.wait_for(recorder.unregistered.get(), 5) == (IPC_ID, "unregistered")
        assert server.registrar.live(IPC_ID) is None
        refused = await dev.keepalive()
        assert refused.status == 403
    finally:
        dev.close()
    assert server.metrics()["not_registered"] == 1


async def test_replayed_authorization_is_challenged_again_not_accepted(server: SipServer) -> None:
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        first = await dev.ask(dev.request("REGISTER", extra={"Expires": "3600"}))
        auth = authorization_for(
            first.headers.get("WWW-Authenticate") or "",
            method="REGISTER",
            uri=f"sip:{SERVER_ID}@{DOMAIN}",
            username=IPC_ID,
            password="12345678",
        )
        ok = await dev.ask(
            dev.request("REGISTER", extra={"Expires": "3600", "Authorization": auth})
        )
        replay = await dev.ask(
            dev.request("REGISTER", extra={"Expires": "3600", "Authorization": auth})
        )
    finally:
        dev.close()
    assert ok.status == 200
    assert replay.status == 401
    assert "stale=true" in (replay.headers.get("WWW-Authenticate") or "")


async def test_natted_private_contact_is_answered_and_queried_at_the_packet_source(
    server: SipServer,
) -> None:
    dev = await SimDevice(NVR_ID, server.port, contact_host="192.168.1.64").open()
    try:
        assert (await dev.register()).status == 200
        reg = server.registrar.live(NVR_ID)
        assert reg is not None
        assert reg.contact == f"<sip:{NVR_ID}@192.168.1.64:{dev.port}>"
        assert (reg.target.host, reg.target.port) == ("127.0.0.1", dev.port)
        assert reg.natted
        query = asyncio.create_task(server.query(NVR_ID, "DeviceInfo"))
        async with asyncio.timeout(5):
            while True:
                msg = await dev.proto.inbox.get()
                if getattr(msg, "method", "") == "MESSAGE":
                    break
        assert b"<CmdType>DeviceInfo</CmdType>" in msg.body
        query.cancel()
    finally:
        dev.close()


async def test_keepalive_silence_times_out_once_and_the_next_keepalive_revives_it(
    server: SipServer, recorder: Recorder
) -> None:
    server.config.keepalive_timeout_s = 0.6
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        assert (await dev.register()).status == 200
        assert (await dev.keepalive()).status == 200
        assert await asyncio.wait_for(recorder.timeouts.get(), 5) == IPC_ID
        await asyncio.sleep(1.0)  # still silent: no second report, no flapping
        assert recorder.timeouts.empty()
        assert (await dev.keepalive(2)).status == 200  # alive again
        assert await asyncio.wait_for(recorder.timeouts.get(), 5) == IPC_ID
    finally:
        dev.close()
    assert server.metrics()["keepalive_timeouts"] == 2


async def test_a_silent_device_behind_a_live_one_still_times_out(
    server: SipServer, recorder: Recorder
) -> None:
    """The keepalive pass reads devices in the order they were last seen and stops at the
    first fresh one: a device that registered first but keeps alive must not hide the silent
    one that registered after it."""
    server.config.keepalive_timeout_s = 0.6
    live = await SimDevice(IPC_ID, server.port).open()
    silent = await SimDevice(NVR_ID, server.port).open()
    try:
        assert (await live.register()).status == 200
        assert (await silent.register()).status == 200

        async def keep_alive() -> None:
            for sn in range(20):
                assert (await live.keepalive(sn)).status == 200
                await asyncio.sleep(0.1)

        beating = asyncio.create_task(keep_alive())
        assert await asyncio.wait_for(recorder.timeouts.get(), 5) == NVR_ID
        await beating
        assert recorder.timeouts.empty()  # the live one never timed out
    finally:
        live.close()
        silent.close()


async def test_a_registration_expires_and_the_others_stay(
    server: SipServer, recorder: Recorder
) -> None:
    """Expiry is checked only once a registration may have expired (the earliest expiry is
    kept), so a long registration made first must not hide a short one made after it."""
    server.registrar.min_expires = 1
    long = await SimDevice(NVR_ID, server.port).open()
    short = await SimDevice(IPC_ID, server.port).open()
    try:
        assert (await long.register(expires=3600)).status == 200
        assert (await short.register(expires=1)).status == 200
        assert await asyncio.wait_for(recorder.unregistered.get(), 5) == (IPC_ID, "expired")
        assert server.registrar.live(IPC_ID) is None
        assert server.registrar.live(NVR_ID) is not None
        # registered again, it expires again
        assert (await short.register(expires=1)).status == 200
        assert await asyncio.wait_for(recorder.unregistered.get(), 5) == (IPC_ID, "expired")
        assert recorder.unregistered.empty()
    finally:
        long.close()
        short.close()
