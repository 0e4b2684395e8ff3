"""What catalogs and NOTIFYs do to the registry, through the bridge the SIP server calls:
the tree is kept, removed channels are marked (never deleted), a partial catalog removes
nothing, and items that cannot be cameras wait in the inbox with their reason."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from api.gb28181 import Bridge
from api.state import GB_DEVICES, POOL
from camera_registry.config import Gb28181Settings
from ingest.gb28181.catalog import CatalogResult
from ingest.gb28181.manscdp import parse_manscdp

NVR = "14010500001180000001"
CH = [f"1401050000132000{i:04d}" for i in range(1, 5)]
GROUP = "14010500002150000001"  # 215 业务分组


def item(item_id: str, *, level: int = 3, lon: float | None = 112.55, event: str = "") -> str:
    pos = f"<Longitude>{lon}</Longitude><Latitude>37.87</Latitude>" if lon is not None else ""
    ev = f"<Event>{event}</Event>" if event else ""
    return (
        f"<Item><DeviceID>{item_id}</DeviceID><Name>通道{item_id[-2:]}</Name>{ev}"
        f"<CivilCode>140105</CivilCode><ParentID>{NVR}</ParentID><Status>ON</Status>{pos}"
        f"<Info><PoType>{level}</PoType></Info></Item>"
    )


def result(items: list[str], *, complete: bool = True) -> CatalogResult:
    body = (
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{NVR}</DeviceID>"
        f"<SumNum>{len(items)}</SumNum><DeviceList>{''.join(items)}</DeviceList></Response>"
    )
    msg = parse_manscdp(body.encode())
    return CatalogResult(NVR, 1, msg.sum_num, {i.device_id: i for i in msg.items}, complete)


async def channels(client: TestClient) -> dict[str, dict[str, Any]]:
    rows = await client.app[POOL].fetch(
        "SELECT item_id, removed, status, camera_id, problem, type_code FROM gb_catalog_items "
        "WHERE device_id = $1",
        NVR,
    )
    return {r["item_id"]: dict(r) for r in rows}


async def test_catalog_tree_removal_partial_and_notify(client: TestClient) -> None:
    store = client.app[GB_DEVICES]
    bridge = Bridge(store, Gb28181Settings(server_id="14000000002000000001"))
    await store.registered(
        NVR, transport="UDP", source_host="127.0.0.1", source_port=5099, contact="<sip:x@y>",
        user_agent="t", expires_s=3600,
    )  # fmt: skip
    group = f"<Item><DeviceID>{GROUP}</DeviceID><Name>雪亮一组</Name></Item>"
    await bridge.on_catalog(result([item(CH[0]), item(CH[1]), item(CH[2]), group]))
    state = await channels(client)
    assert {k: v["camera_id"] is not None for k, v in state.items()} == {
        CH[0]: True, CH[1]: True, CH[2]: True, GROUP: False,
    }  # fmt: skip
    assert state[GROUP]["type_code"] == "215"  # kept as the catalog tree

    # a partial catalog without CH[2]: nothing is removed
    await bridge.on_catalog(result([item(CH[0]), item(CH[1])], complete=False))
    assert not (await channels(client))[CH[2]]["removed"]
    # a complete one without CH[2]: marked removed, camera kept
    await bridge.on_catalog(result([item(CH[0]), item(CH[1]), group]))
    state = await channels(client)
    assert state[CH[2]]["removed"] and state[CH[2]]["camera_id"] is not None
    assert not state[CH[0]]["removed"]

    # NOTIFY: ADD a level-1 channel without position (→ inbox), DEL CH[1], OFF CH[0]
    body = (
        f"<Notify><CmdType>Catalog</CmdType><SN>9</SN><DeviceID>{NVR}</DeviceID>"
        f"<SumNum>3</SumNum><DeviceList>{item(CH[3], level=1, lon=None, event='ADD')}"
        f"<Item><DeviceID>{CH[1]}</DeviceID><Event>DEL</Event></Item>"
        f"<Item><DeviceID>{CH[0]}</DeviceID><Event>OFF</Event></Item></DeviceList></Notify>"
    )
    await bridge.on_notify(NVR, parse_manscdp(body.encode()).items)
    state = await channels(client)
    assert state[CH[1]]["removed"]
    assert state[CH[0]]["status"] == "OFF"
    assert state[CH[3]]["camera_id"] is None
    assert "lon" in state[CH[3]]["problem"] or "position" in state[CH[3]]["problem"]
    inbox = await client.app[POOL].fetchrow(
        "SELECT failure, detail FROM discovered_devices WHERE endpoint = $1", f"gb28181:{CH[3]}"
    )
    assert inbox["failure"] == "gb28181_invalid"
    assert CH[3] in inbox["detail"]
    cams = await client.app[POOL].fetchval(
        "SELECT count(*) FROM cameras WHERE gb_id = ANY($1::text[])", CH
    )
    assert cams == 3  # removed channels' cameras are kept, nothing deleted


async def test_unchanged_catalog_writes_no_camera_and_one_change_is_one_update(
    client: TestClient,
) -> None:
    store = client.app[GB_DEVICES]
    bridge = Bridge(store, Gb28181Settings(server_id="14000000002000000001"))
    first = CH[0]
    before = await client.app[POOL].fetchrow("SELECT version FROM cameras WHERE gb_id = $1", first)
    await bridge.on_catalog(result([item(first), item(CH[2])], complete=False))
    same = await client.app[POOL].fetchrow("SELECT version FROM cameras WHERE gb_id = $1", first)
    assert same["version"] == before["version"]
    await bridge.on_catalog(result([item(first, level=2)], complete=False))
    after = await client.app[POOL].fetchrow(
        "SELECT version, level FROM cameras WHERE gb_id = $1", first
    )
    assert (after["version"], after["level"]) == (before["version"] + 1, 2)
    updates = await client.app[POOL].fetchval(
        "SELECT count(*) FROM audit_log a JOIN cameras c ON c.id = a.camera_id "
        "WHERE c.gb_id = $1 AND a.action = 'camera.update'",
        first,
    )
    assert updates == 1


async def test_an_item_that_leaves_fields_out_erases_nothing_we_hold(client: TestClient) -> None:
    """Re-sent and NOTIFY UPDATE items are often partial: only what an item says is patched."""
    store = client.app[GB_DEVICES]
    nvr, channel = "14010500001180000077", "14010500001320007701"
    full = {
        "device_id": channel, "name": "迎泽大街东口", "po_type": 1, "civil_code": "140105",
        "longitude": 112.57, "latitude": 37.86, "record_save_days": 90, "address": "迎泽大街",
        "management_unit": "小店分局", "manufacturer": "Hikvision", "hfov": 60.0,
    }  # fmt: skip
    assert (await store.apply_catalog(nvr, [full], complete=False)).created == 1
    pool = client.app[POOL]
    before = await pool.fetchrow("SELECT * FROM cameras WHERE gb_id = $1", channel)
    # the name changed; position, level, record days, address… left out (or 0/0, or empty)
    partial = {
        "device_id": channel, "name": "迎泽大街东口北", "longitude": 0.0, "latitude": 0.0,
        "address": "", "civil_code": "140105",
    }  # fmt: skip
    out = await store.apply_catalog(nvr, [partial], complete=False)
    assert (out.updated, out.to_inbox, out.problems) == (1, 0, {})
    after = await pool.fetchrow("SELECT * FROM cameras WHERE gb_id = $1", channel)
    assert after["name"] == "迎泽大街东口北"
    assert after["version"] == before["version"] + 1
    kept = ("level", "lon", "lat", "record_days", "address", "owner", "vendor", "hfov")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    audits = await pool.fetch(
        "SELECT a.detail FROM audit_log a WHERE a.camera_id = $1 AND a.action = 'camera.update'",
        after["id"],
    )
    assert len(audits) == 1  # one change, one audited update
    # read again, unchanged: nothing written
    again = await store.apply_catalog(nvr, [partial], complete=False)
    assert (again.updated, again.unchanged) == (0, 1)
    same = await pool.fetchrow("SELECT version FROM cameras WHERE gb_id = $1", channel)
    assert same["version"] == after["version"]


async def test_channel_pages_walk_every_live_channel_once(client: TestClient) -> None:
    """A platform's loss is observed page by page (its channels can be millions): every live
    camera channel once, removed channels and tree nodes never."""
    store = client.app[GB_DEVICES]
    platform = "14010500002000000077"
    ids = [f"14010500001320{n:06d}" for n in range(901, 924)]
    items = [
        {"device_id": i, "name": f"通道{n}", "civil_code": "140105", "po_type": 3}
        for n, i in enumerate(ids)
    ]
    items.append({"device_id": "14010500002150000001", "name": "分组"})
    assert (await store.apply_catalog(platform, items, complete=True)).created == len(ids)
    assert await store.remove_items(platform, ids[:2]) == 2
    pages = [page async for page in store.channel_pages([platform], size=5)]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 1]
    cams = await client.app[POOL].fetch(
        "SELECT id, gb_id FROM cameras WHERE gb_id = ANY($1::text[])", ids[2:]
    )
    assert sorted(c for p in pages for _, c, _ in p) == sorted(r["id"] for r in cams)
    assert {d for p in pages for d, _, _ in p} == {platform}
