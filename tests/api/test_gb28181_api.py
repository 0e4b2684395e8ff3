"""GB/T 28181 into the registry: a SIPp IPC registers to `camreg serve`'s SIP server, its catalog
becomes a camera (audited, unchanged on re-read), a bad item lands in the discovery inbox, and
the devices API shows it all within the caller's region scope."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.state import POOL, SIP
from camera_registry.config import Settings
from tests.api.gb_app import SERVER_ID, gb_app
from tests.conftest import Tok
from tests.ingest.gb28181.peers import Sipp

IPC = "14010500001320000001"  # 小店区, as the catalog item's CivilCode says
MISFIT = "14010600001320000002"  # 杏花岭区 ID, but its catalog item says CivilCode 140105


@pytest.fixture(scope="module")
async def gb_client(
    settings: Settings, database_url: str, schema: str
) -> AsyncIterator[TestClient]:
    app = gb_app(settings, database_url, schema, catalog_idle_timeout_s=1.5)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture(scope="module")
def tok(gb_client: TestClient) -> Tok:
    return Tok(gb_client)


def device_sipp(client: TestClient, tmp_path: Path, device_id: str) -> Sipp:
    return Sipp(
        tmp_path,
        client.app[SIP].port,
        "register.xml",
        ooc="ooc_catalog.xml",
        device_id=device_id,
        hold_ms=8000,
        keys={
            "server_id": SERVER_ID,
            "domain": SERVER_ID[:10],
            "item_name": "迎泽大街与双塔西街口".encode("gb2312"),
            "charset": "GB2312",
        },
    )


async def wait_registered(client: TestClient, headers: dict[str, str], device_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            resp = await client.get(f"/api/v1/gb28181/devices/{device_id}", headers=headers)
            if resp.status == 200 and (await resp.json())["online"]:
                return
            await asyncio.sleep(0.1)


async def camera_row(client: TestClient, gb_id: str) -> Any:
    return await client.app[POOL].fetchrow(
        "SELECT id, name, level, lon, lat, record_days, hfov, vfov, max_view_distance, owner, "
        "vendor, mac, installed_at, version FROM cameras WHERE gb_id = $1",
        gb_id,
    )


async def test_server_endpoint_says_where_sip_listens(gb_client: TestClient, tok: Tok) -> None:
    resp = await gb_client.get("/api/v1/gb28181/server", headers=await tok("technician"))
    assert resp.status == 200
    body = await resp.json()
    assert body["server_id"] == SERVER_ID
    assert body["domain"] == "1400000000"
    assert body["port"] == gb_client.app[SIP].port > 0
    assert body["transports"] == ["udp", "tcp"]


async def test_sipp_ipc_catalog_becomes_a_camera_and_rereading_changes_nothing(
    gb_client: TestClient, tok: Tok, tmp_path: Path
) -> None:
    admin = await tok("admin")
    sipp = await device_sipp(gb_client, tmp_path, IPC).start()
    try:
        await wait_registered(gb_client, admin, IPC)
        resp = await gb_client.post(f"/api/v1/gb28181/devices/{IPC}/catalog", headers=admin)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["complete"] is True
        async with asyncio.timeout(10):
            while True:
                cam = await camera_row(gb_client, IPC)
                if cam is not None:
                    break
                await asyncio.sleep(0.1)
        assert cam["name"] == "迎泽大街与双塔西街口"
        assert (cam["level"], cam["record_days"], cam["vendor"], cam["mac"]) == (
            1,
            90,
            "SIPp",
            "00:11:22:33:44:55",
        )
        assert (cam["lon"], cam["lat"]) == (112.5489, 37.8706)
        assert (round(cam["hfov"], 2), cam["vfov"], cam["max_view_distance"]) == (62.5, 35, 120)
        assert str(cam["installed_at"]) == "2024-05-01"
        # the same catalog again: no camera write, no audit entry
        resp = await gb_client.post(f"/api/v1/gb28181/devices/{IPC}/catalog", headers=admin)
        assert resp.status == 200
        await asyncio.sleep(0.5)
    finally:
        await sipp.stop()
    again = await camera_row(gb_client, IPC)
    assert again["version"] == 1
    audits = await gb_client.app[POOL].fetch(
        "SELECT action, actor FROM audit_log WHERE camera_id = $1", cam["id"]
    )
    assert [(a["action"], a["actor"]) for a in audits] == [("camera.create", f"gb28181:{IPC}")]
    device = await (await gb_client.get(f"/api/v1/gb28181/devices/{IPC}", headers=admin)).json()
    assert device["catalog_complete"] is True
    assert device["transport"] == "UDP"
    assert [(c["item_id"], c["camera_id"], c["removed"]) for c in device["channels"]] == [
        (IPC, str(cam["id"]), False)
    ]


async def test_catalog_item_whose_civil_code_disagrees_goes_to_the_inbox_with_the_reason(
    gb_client: TestClient, tok: Tok, tmp_path: Path
) -> None:
    admin = await tok("admin")
    sipp = await device_sipp(gb_client, tmp_path, MISFIT).start()
    try:
        await wait_registered(gb_client, admin, MISFIT)
        resp = await gb_client.post(f"/api/v1/gb28181/devices/{MISFIT}/catalog", headers=admin)
        assert resp.status == 200
        async with asyncio.timeout(10):
            while True:
                row = await gb_client.app[POOL].fetchrow(
                    "SELECT failure, detail FROM discovered_devices WHERE endpoint = $1",
                    f"gb28181:{MISFIT}",
                )
                if row is not None:
                    break
                await asyncio.sleep(0.1)
    finally:
        await sipp.stop()
    assert "CivilCode 140105 does not agree with the ID's region 140106" in row["detail"]
    assert await camera_row(gb_client, MISFIT) is None
    device = await (await gb_client.get(f"/api/v1/gb28181/devices/{MISFIT}", headers=admin)).json()
    assert "CivilCode" in device["channels"][0]["problem"]


async def test_devices_list_is_scoped_by_the_device_id_region(
    gb_client: TestClient, tok: Tok
) -> None:
    inside = await (
        await gb_client.get("/api/v1/gb28181/devices", headers=await tok("technician", "140105"))
    ).json()
    outside = await (
        await gb_client.get("/api/v1/gb28181/devices", headers=await tok("technician", "1402"))
    ).json()
    assert [d["device_id"] for d in inside["items"]] == [IPC]
    assert outside["items"] == []
    hidden = await gb_client.get(
        f"/api/v1/gb28181/devices/{IPC}", headers=await tok("technician", "1402")
    )
    assert hidden.status == 404
    assert hidden.content_type == "application/problem+json"


async def test_per_device_password_is_sealed_admin_only_and_used_for_digest(
    gb_client: TestClient, tok: Tok
) -> None:
    denied = await gb_client.put(
        f"/api/v1/gb28181/devices/{IPC}/password",
        json={"password": "n3w-secret"},
        headers=await tok("technician"),
    )
    assert denied.status == 403
    ok = await gb_client.put(
        f"/api/v1/gb28181/devices/{IPC}/password",
        json={"password": "n3w-secret"},
        headers=await tok("admin"),
    )
    assert ok.status == 204
    stored = await gb_client.app[POOL].fetchval(
        "SELECT password FROM gb_device_passwords WHERE device_id = $1", IPC
    )
    assert stored is not None and b"n3w-secret" not in stored
    body = await (
        await gb_client.get(f"/api/v1/gb28181/devices/{IPC}", headers=await tok("admin"))
    ).json()
    assert body["own_password"] is True
    assert "n3w-secret" not in str(body)
    access = await gb_client.app[SIP].registrar.directory.lookup(IPC)
    assert access is not None and access.password == "n3w-secret"
    cleared = await gb_client.put(
        f"/api/v1/gb28181/devices/{IPC}/password",
        json={"password": None},
        headers=await tok("admin"),
    )
    assert cleared.status == 204
    assert not await gb_client.app[POOL].fetchval(
        "SELECT count(*) FROM gb_device_passwords WHERE device_id = $1", IPC
    )
    body = await (
        await gb_client.get(f"/api/v1/gb28181/devices/{IPC}", headers=await tok("admin"))
    ).json()
    assert body["own_password"] is False
