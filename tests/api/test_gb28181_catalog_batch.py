"""Many devices' catalogs arriving together are applied in a few batches (one transaction
each), and every channel lands exactly once: a channel listed by two devices is one camera,
a device's second catalog in the same wave is applied after its first, an invalid item still
reaches the inbox, and re-reading the same catalogs changes nothing."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from api.gb28181 import Bridge
from api.state import GB_DEVICES, POOL
from camera_registry.config import Gb28181Settings
from ingest.gb28181.catalog import CatalogResult
from ingest.gb28181.manscdp import parse_manscdp

NVRS = [f"14010500001180{i:06d}" for i in range(1, 21)]  # 20 NVRs with 8 channels
IPCS = [f"14010600001320{i:06d}" for i in range(1, 181)]  # 180 IPCs listing themselves
SHARED = "14010500001320099999"  # listed by the first two NVRs
LOST_POSITION = "14010500001320088888"  # level 1 without a position: inbox, not dropped


def channels_of(nvr: int) -> list[str]:
    return [f"140105000013201{nvr:02d}{c:03d}" for c in range(8)]


def item(item_id: str, parent: str, *, level: int = 3, name: str = "", lon: bool = True) -> str:
    pos = "<Longitude>112.55</Longitude><Latitude>37.87</Latitude>" if lon else ""
    return (
        f"<Item><DeviceID>{item_id}</DeviceID><Name>{name or '通道' + item_id[-3:]}</Name>"
        f"<CivilCode>{item_id[:6]}</CivilCode><ParentID>{parent}</ParentID>"
        f"<Status>ON</Status>{pos}<Info><PoType>{level}</PoType></Info></Item>"
    )


def result(device: str, items: list[str], sn: int = 1) -> CatalogResult:
    body = (
        f"<Response><CmdType>Catalog</CmdType><SN>{sn}</SN><DeviceID>{device}</DeviceID>"
        f"<SumNum>{len(items)}</SumNum><DeviceList>{''.join(items)}</DeviceList></Response>"
    )
    msg = parse_manscdp(body.encode())
    return CatalogResult(device, sn, msg.sum_num, {i.device_id: i for i in msg.items}, True)


def wave(renamed: str | None = None) -> list[CatalogResult]:
    out = []
    for n, nvr in enumerate(NVRS):
        items = [item(c, nvr, name="改名" if c == renamed else "") for c in channels_of(n)]
        if n < 2:
            items.append(item(SHARED, nvr))
        if n == 2:
            items.append(item(LOST_POSITION, nvr, level=1, lon=False))
        out.append(result(nvr, items))
    out += [result(ipc, [item(ipc, ipc)]) for ipc in IPCS]
    return out


async def counts(client: TestClient) -> tuple[int, int, int, int]:
    pool = client.app[POOL]
    items = await pool.fetchval("SELECT count(*) FROM gb_catalog_items")
    cameras = await pool.fetchval("SELECT count(*) FROM cameras")
    distinct = await pool.fetchval("SELECT count(DISTINCT gb_id) FROM cameras")
    audits = await pool.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'camera.%'")
    return items, cameras, distinct, audits


async def test_catalogs_arriving_together_all_land_once_in_few_transactions(
    client: TestClient,
) -> None:
    store = client.app[GB_DEVICES]
    bridge = Bridge(store, Gb28181Settings(server_id="14000000002000000001"), client.app[POOL])
    for device in NVRS + IPCS:
        await store.registered(
            device, transport="UDP", source_host="127.0.0.1", source_port=5099,
            contact="<sip:x@y>", user_agent="t", expires_s=3600,
        )  # fmt: skip
    catalogs = wave()
    # the last NVR answers twice in the same wave; the second answer lacks its first channel
    again = result(NVRS[-1], [item(c, NVRS[-1]) for c in channels_of(19)[1:]], sn=2)
    await asyncio.gather(*(bridge.on_catalog(c) for c in [*catalogs, again]))

    assert bridge.catalog_batches < 10  # 201 catalogs, not 201 transactions
    items, cameras, distinct, audits = await counts(client)
    camera_count = 20 * 8 + 1 + 180  # the shared channel once; LOST_POSITION is no camera
    assert (items, cameras, distinct) == (20 * 8 + 2 + 1 + 180, camera_count, camera_count)
    assert audits == camera_count  # one audited create each
    pool = client.app[POOL]
    creator = await pool.fetchval(
        "SELECT a.actor FROM audit_log a JOIN cameras c ON c.id = a.camera_id WHERE c.gb_id = $1",
        IPCS[7],
    )
    assert creator == f"gb28181:{IPCS[7]}"
    gone = await pool.fetchval(
        "SELECT removed FROM gb_catalog_items WHERE device_id = $1 AND item_id = $2",
        NVRS[-1],
        channels_of(19)[0],
    )
    assert gone  # the second answer was applied after the first
    inbox = await pool.fetchval(
        "SELECT failure FROM discovered_devices WHERE endpoint = $1", f"gb28181:{LOST_POSITION}"
    )
    assert inbox == "gb28181_invalid"
    shared = await pool.fetchval(
        "SELECT count(DISTINCT camera_id) FROM gb_catalog_items WHERE item_id = $1", SHARED
    )
    assert shared == 1
    health = await pool.fetchval(
        "SELECT count(*) FROM camera_health WHERE last_probe->>'source' = 'gb28181'"
    )
    assert health == camera_count  # each channel's Status fed its health

    # the same catalogs again, together: nothing is written to any camera
    await asyncio.gather(*(bridge.on_catalog(c) for c in wave()))
    assert await counts(client) == (items, cameras, distinct, audits)
    assert await pool.fetchval("SELECT max(version) FROM cameras") == 1

    # one renamed channel among them: exactly one audited update
    await asyncio.gather(*(bridge.on_catalog(c) for c in wave(renamed=channels_of(5)[3])))
    updates = await pool.fetch(
        "SELECT c.gb_id, c.name FROM audit_log a JOIN cameras c ON c.id = a.camera_id "
        "WHERE a.action = 'camera.update'"
    )
    assert [(r["gb_id"], r["name"]) for r in updates] == [(channels_of(5)[3], "改名")]
