"""GB channel status from its device's life, through the RTSP probes' hysteresis: keepalives
keep channels online, silence takes them offline after the configured misses, re-registering
brings them back, one late keepalive flaps nothing, and the catalog's OFF channel stays off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.state import POOL, SIP
from camera_registry.config import Settings
from tests.api.gb_app import channel_item, gb_app
from tests.ingest.gb28181.simdevice import SimDevice

NVR = "14010500001180000009"
ON, OFF = "14010500001320000091", "14010500001320000092"
TIMEOUT_S = 3.0  # three keepalive intervals of 1 s


@pytest.fixture(scope="module")
async def gb_client(
    settings: Settings, database_url: str, schema: str
) -> AsyncIterator[TestClient]:
    app = gb_app(
        settings, database_url, schema,
        catalog_idle_timeout_s=1.0, keepalive_timeout_s=TIMEOUT_S, keepalive_flush_s=0.05,
    )  # fmt: skip
    async with TestClient(TestServer(app)) as c:
        c.app[SIP].config.housekeeping_s = 0.1
        yield c


async def status(client: TestClient, gb_id: str) -> Any:
    return await client.app[POOL].fetchval("SELECT status FROM cameras WHERE gb_id = $1", gb_id)


async def until(client: TestClient, gb_id: str, want: str | None, within_s: float = 10) -> None:
    """Poll the camera's status (written by another task) until it is `want`."""
    async with asyncio.timeout(within_s):
        while True:
            if (await status(client, gb_id)) == want:
                return
            await asyncio.sleep(0.05)


async def transitions(client: TestClient, gb_id: str) -> list[tuple[str, str]]:
    rows = await client.app[POOL].fetch(
        "SELECT t.old, t.new FROM status_transitions t JOIN cameras c ON c.id = t.camera_id "
        "WHERE c.gb_id = $1 ORDER BY t.at, t.id",
        gb_id,
    )
    return [(r["old"], r["new"]) for r in rows]


async def test_keepalive_silence_reregistration_drive_status_and_a_late_keepalive_flaps_nothing(
    gb_client: TestClient,
) -> None:
    dev = await SimDevice(NVR, gb_client.app[SIP].port).open()
    dev.answer_catalog_with(channel_item(ON, "ON", NVR) + channel_item(OFF, "OFF", NVR), 2)
    try:
        assert (await dev.register()).status == 200
        await until(gb_client, ON, "unknown")  # the catalog made the camera
        for sn in range(3):  # keepalives well inside the interval
            assert (await dev.keepalive(sn)).status == 200
            await asyncio.sleep(0.3)
        await until(gb_client, ON, "online")
        # one late keepalive (one missed interval) flaps nothing
        await asyncio.sleep(1.3)  # one interval missed, two to spare
        assert (await dev.keepalive(10)).status == 200
        assert (await dev.keepalive(11)).status == 200
        assert await status(gb_client, ON) == "online"
        # silence: three missed intervals → offline, through the hysteresis
        await until(gb_client, ON, "offline")
        row = await gb_client.app[POOL].fetchrow(
            "SELECT t.reason FROM status_transitions t JOIN cameras c ON c.id = t.camera_id "
            "WHERE c.gb_id = $1 AND t.new = 'offline'",
            ON,
        )
        assert "3 consecutive failed" in row["reason"]
        # back: register again and keep alive
        assert (await dev.register()).status == 200
        async with asyncio.timeout(10):
            for sn in range(20, 60):  # keeping alive, as a device does
                assert (await dev.keepalive(sn)).status == 200
                if await status(gb_client, ON) == "online":
                    break
                await asyncio.sleep(0.3)
        assert await status(gb_client, ON) == "online"
    finally:
        dev.close()
    seen = await transitions(gb_client, ON)
    assert seen[:2] == [("unknown", "online"), ("online", "offline")]  # the late one: nothing
    # Back online; the flap detector may first call the return "flapping" (late, silent, back
    # within one flap window is three raw changes), exactly as it would for an RTSP camera.
    assert seen[2:] in ([("offline", "online")], [("offline", "flapping"), ("flapping", "online")])
    # the channel the device itself reports OFF never came online
    assert await status(gb_client, OFF) == "offline"
    assert ("offline", "online") not in await transitions(gb_client, OFF)
    probe = await gb_client.app[POOL].fetchrow(
        "SELECT h.last_probe, h.next_probe_at = 'infinity' AS off_rtsp FROM camera_health h "
        "JOIN cameras c ON c.id = h.camera_id WHERE c.gb_id = $1",
        ON,
    )
    assert probe["off_rtsp"]  # never leased for an RTSP probe: it has no RTSP URL
