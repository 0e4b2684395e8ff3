"""A keepalive of a settled online channel writes no health row (100,000 devices keep alive
1,667 times a second), while anything that can change the channel's status still does: a
channel the device reports OFF, and silence taking it offline. Past the freshness bound the
row's last_probe_at is touched, its state untouched."""

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

NVR = "14010500001180000019"
ON, OFF = "14010500001320000191", "14010500001320000192"
TIMEOUT_S = 3.0  # three keepalive intervals of 1 s; also how stale last_probe_at may get
FLUSH_S = 0.05


@pytest.fixture(scope="module")
async def gb_client(
    settings: Settings, database_url: str, schema: str
) -> AsyncIterator[TestClient]:
    app = gb_app(
        settings, database_url, schema,
        catalog_idle_timeout_s=1.0, keepalive_timeout_s=TIMEOUT_S, keepalive_flush_s=FLUSH_S,
    )  # fmt: skip
    async with TestClient(TestServer(app)) as c:
        c.app[SIP].config.housekeeping_s = 0.1
        yield c


async def row(client: TestClient, gb_id: str) -> Any:
    """The channel's health row with its version (xmin changes whenever the row is written)."""
    return await client.app[POOL].fetchrow(
        "SELECT c.status, h.xmin::text AS version, h.state, h.last_probe, h.last_probe_at "
        "FROM camera_health h "
        "JOIN cameras c ON c.id = h.camera_id WHERE c.gb_id = $1",
        gb_id,
    )


async def until(client: TestClient, gb_id: str, *want: str, within_s: float = 15) -> None:
    """Poll the camera's status (written by another task) until it is one of `want`."""
    async with asyncio.timeout(within_s):
        while True:
            found = await row(client, gb_id)
            if found is not None and found["status"] in want:
                return
            await asyncio.sleep(0.05)


async def keep_alive(dev: SimDevice, sns: range) -> None:
    """One keepalive per flush, so that each is its own observation."""
    for sn in sns:
        assert (await dev.keepalive(sn)).status == 200
        await asyncio.sleep(3 * FLUSH_S)


async def test_settled_online_channels_are_not_rewritten_by_keepalives(
    gb_client: TestClient,
) -> None:
    dev = await SimDevice(NVR, gb_client.app[SIP].port).open()
    dev.answer_catalog_with(channel_item(ON, "ON", NVR) + channel_item(OFF, "OFF", NVR), 2)
    try:
        assert (await dev.register()).status == 200
        await until(gb_client, ON, "unknown", "online")  # the catalog made the camera
        await keep_alive(dev, range(3))  # settles it online, with this observation recorded
        settled = await row(gb_client, ON)
        assert settled["status"] == "online"
        assert settled["last_probe"]["detail"] == "keepalive; channel ON"
        # the flap window need not be full (10) for a keepalive to be a no-op
        assert len(settled["state"]["recent"]) < 10
        off_before = (await row(gb_client, OFF))["version"]
        # settled: more keepalives within the freshness bound write nothing for the ON channel
        await keep_alive(dev, range(100, 106))
        assert (await row(gb_client, ON))["version"] == settled["version"]
        # the channel the device reports OFF is a failure each time: still written
        assert (await row(gb_client, OFF))["version"] != off_before
        assert (await row(gb_client, OFF))["status"] == "offline"
        # after the freshness bound (the keepalive timeout) the row is touched once more: its
        # last_probe_at moves to now, its state is not stepped (no state-machine write)
        async with asyncio.timeout(10):
            sn = 200
            while (await row(gb_client, ON))["version"] == settled["version"]:
                await keep_alive(dev, range(sn, sn + 1))
                sn += 1
        touched = await row(gb_client, ON)
        assert touched["status"] == "online"
        assert touched["state"] == settled["state"]
        assert touched["last_probe"] == settled["last_probe"]
        assert touched["last_probe_at"] > settled["last_probe_at"]
    finally:
        dev.close()
    # silence still takes the settled channel offline, through the hysteresis
    await until(gb_client, ON, "offline")
    assert (await row(gb_client, ON))["state"]["fail_streak"] >= 3


PLATFORM = "14010500002000000019"
RELAYED = "14010500001320000291"


async def test_a_lower_platforms_keepalives_do_not_observe_its_channels(
    gb_client: TestClient,
) -> None:
    """A platform relays other devices' channels (a city's millions): its keepalive proves the
    link, not each channel, so it writes none of them; losing the platform fails them all."""
    dev = await SimDevice(PLATFORM, gb_client.app[SIP].port).open()
    dev.answer_catalog_with(channel_item(RELAYED, "ON", PLATFORM), 1)
    try:
        assert (await dev.register()).status == 200
        await until(gb_client, RELAYED, "unknown", "online")
        await asyncio.sleep(10 * FLUSH_S)  # the catalog's observation is written
        before = await row(gb_client, RELAYED)
        assert before["last_probe"]["detail"] == "catalog Status ON"
        await keep_alive(dev, range(6))
        after = await row(gb_client, RELAYED)
        assert after["version"] == before["version"]
    finally:
        dev.close()
    await until(gb_client, RELAYED, "offline")  # silence: the platform's loss fails its channels
