"""A channel a GB/T 28181 device lists but the registry refuses waits in the discovery inbox
with the reason, and a technician completes it there as for an ONVIF device: SIPp is the
device, its catalog answers the query that follows its REGISTER."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.state import GB_DEVICES, POOL, SIP
from camera_registry.config import Settings
from tests.api.gb_app import SERVER_ID, gb_app
from tests.conftest import Tok
from tests.ingest.gb28181.peers import Sipp

# 杏花岭区 by its ID, while the SIPp catalog item says CivilCode 140105: refused
MISFIT = "14010600001320000003"


@pytest.fixture(scope="module")
async def gb_client(
    settings: Settings, database_url: str, schema: str
) -> AsyncIterator[TestClient]:
    # the test queries the catalog itself, once SIPp is registered
    app = gb_app(
        settings, database_url, schema, catalog_idle_timeout_s=1.5, query_on_register=False
    )
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture(scope="module")
def tok(gb_client: TestClient) -> Tok:
    return Tok(gb_client)


async def inbox_entry(client: TestClient, headers: dict[str, str], gb_id: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            resp = await client.get("/api/v1/discovery/devices", headers=headers)
            assert resp.status == 200, await resp.text()
            found = [d for d in (await resp.json())["items"] if d["endpoint"] == f"gb28181:{gb_id}"]
            if found:
                return found[0]
            await asyncio.sleep(0.1)


async def test_refused_channel_lands_in_the_inbox_with_its_reason_and_registers_from_there(
    gb_client: TestClient, tok: Tok, tmp_path: Path
) -> None:
    technician = await tok("technician", "1401")
    sipp = Sipp(
        tmp_path,
        gb_client.app[SIP].port,
        "register.xml",
        ooc="ooc_catalog.xml",
        device_id=MISFIT,
        hold_ms=8000,
        keys={
            "server_id": SERVER_ID,
            "domain": SERVER_ID[:10],
            "item_name": "胜利街新建路口".encode("gb2312"),
            "charset": "GB2312",
        },
    )
    await sipp.start()
    sip = gb_client.app[SIP]
    try:
        async with asyncio.timeout(10):
            while sip.registrar.live(MISFIT) is None:  # noqa: ASYNC110 - SIPp's REGISTER
                await asyncio.sleep(0.05)
        for _ in range(5):  # SIPp answers out of call once its Keepalive is through
            result = await sip.query_catalog(MISFIT)
            if result.complete:
                break
        assert result.complete and len(result.items) == 1
        found = await inbox_entry(gb_client, technician, MISFIT)
    finally:
        await sipp.stop()
    assert found["failure"] == "gb28181_invalid"
    assert "CivilCode 140105 does not agree with the ID's region 140106" in found["detail"]
    assert found["address"] == f"gb28181:{MISFIT}/{MISFIT}"
    assert found["status"] == "new" and found["vendor"] == "SIPp"

    # the technician settles it: the place and the ID's district stand; the rest is the catalog's
    resp = await gb_client.post(
        f"/api/v1/discovery/devices/{found['id']}/register",
        json={"name": "胜利街与新建路口", "level": 1, "lon": 112.57, "lat": 37.88},
        headers=technician,
    )
    assert resp.status == 201, await resp.text()
    cam = await resp.json()
    assert (cam["gb_id"], cam["region_code"], cam["name"]) == (MISFIT, "140106", "胜利街与新建路口")
    assert (cam["record_days"], cam["vendor"], cam["model"]) == (90, "SIPp", "IPC-1")
    assert (cam["hfov"], cam["max_view_distance"]) == (62.5, 120)
    channel = await gb_client.app[POOL].fetchrow(
        """SELECT camera_id, problem, jsonb_typeof(item) AS shape, item ->> 'name' AS name
           FROM gb_catalog_items WHERE device_id = $1 AND item_id = $1""",
        MISFIT,
    )
    assert str(channel["camera_id"]) == cam["id"] and channel["problem"] is None
    assert (channel["shape"], channel["name"]) == ("object", "胜利街新建路口")
    resp = await gb_client.get("/api/v1/discovery/devices?status=registered", headers=technician)
    [registered] = [d for d in (await resp.json())["items"] if d["id"] == found["id"]]
    assert registered["camera_ids"] == [cam["id"]]


async def test_channels_refused_before_the_devices_registration_is_stored_still_reach_the_inbox(
    gb_client: TestClient, tok: Tok
) -> None:
    """A catalog can be applied before its device's registration row is written (a wave of
    registrations, a database blip): nothing about the device's address is known yet."""
    nvr = "14010500001180000009"
    no_days = "14010500001320000091"  # level 1 needs RecordSaveDays
    no_place = "14010500001320000092"  # level 2 needs a position
    items = [
        {"device_id": no_days, "name": "一类无存储天数", "po_type": 1,
         "longitude": 112.55, "latitude": 37.87, "civil_code": "140105"},
        {"device_id": no_place, "name": "二类无坐标", "po_type": 2, "civil_code": "140105"},
    ]  # fmt: skip
    outcome = await gb_client.app[GB_DEVICES].apply_catalog(nvr, items, complete=True)
    assert outcome.to_inbox == 2, outcome
    technician = await tok("technician", "140105")
    days = await inbox_entry(gb_client, technician, no_days)
    place = await inbox_entry(gb_client, technician, no_place)
    assert "record_days" in days["detail"] and days["address"] == f"gb28181:{nvr}/{no_days}"
    assert "lon" in place["detail"] and place["address"] == f"gb28181:{nvr}/{no_place}"


async def test_a_channel_completed_in_the_inbox_keeps_its_place_when_the_catalog_comes_again(
    gb_client: TestClient, tok: Tok
) -> None:
    nvr = "14010500001180000010"
    channel = "14010500001320000101"
    items = [{"device_id": channel, "name": "二类待补坐标", "po_type": 2, "civil_code": "140105"}]
    store = gb_client.app[GB_DEVICES]
    assert (await store.apply_catalog(nvr, items, complete=True)).to_inbox == 1
    technician = await tok("technician", "140105")
    found = await inbox_entry(gb_client, technician, channel)
    resp = await gb_client.post(
        f"/api/v1/discovery/devices/{found['id']}/register",
        json={"name": "二类待补坐标", "level": 2, "lon": 112.56, "lat": 37.86},
        headers=technician,
    )
    assert resp.status == 201, await resp.text()
    cam = await resp.json()
    again = await store.apply_catalog(nvr, items, complete=True)
    row = await gb_client.app[POOL].fetchrow(
        "SELECT lon, lat, version FROM cameras WHERE id = $1::uuid", cam["id"]
    )
    assert (row["lon"], row["lat"], row["version"]) == (112.56, 37.86, 1), again
    # the technician's position completes the item: not refused into the inbox again
    assert (again.to_inbox, again.unchanged, again.updated) == (0, 1, 0), again
    linked = await gb_client.app[POOL].fetchval(
        "SELECT camera_id FROM gb_catalog_items WHERE device_id = $1 AND item_id = $2",
        nvr,
        channel,
    )
    assert str(linked) == cam["id"]
