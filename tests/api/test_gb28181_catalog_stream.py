"""A catalog larger than the assembler's buffer (a city's cascade, here with a buffer of 5)
goes to the registry in batches as it arrives, never held whole: complete, every item is
there and the device's items it no longer lists are marked removed; cut short, it is
recorded partial and removes nothing. A real SIP server and a device of ours over loopback,
the real bridge and store; duplicated and out-of-order MESSAGEs still give each item once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.gb28181 import Bridge
from api.state import GB_DEVICES, POOL
from camera_registry.config import Gb28181Settings
from ingest.gb28181.server import SipServer, SipServerConfig
from tests.ingest.gb28181.peers import DOMAIN, SERVER_ID
from tests.ingest.gb28181.simdevice import SimDevice

BUFFER = 5
SUM_NUM = 23


def ids(device: str) -> list[str]:
    """Four cameras and the rest 216 virtual organisations: more items than five buffers."""
    cams = [f"{device[:10]}132{device[-3:]}{i:04d}" for i in range(4)]
    return cams + [f"{device[:10]}216{device[-3:]}{i:04d}" for i in range(4, SUM_NUM)]


def item(device: str, item_id: str) -> str:
    if item_id[10:13] != "132":
        return f"<Item><DeviceID>{item_id}</DeviceID><Name>组{item_id[-2:]}</Name></Item>"
    return (
        f"<Item><DeviceID>{item_id}</DeviceID><Name>通道{item_id[-2:]}</Name>"
        f"<CivilCode>140105</CivilCode><ParentID>{device}</ParentID><Status>ON</Status>"
        f"<Longitude>112.55</Longitude><Latitude>37.87</Latitude>"
        f"<Info><PoType>3</PoType></Info></Item>"
    )


def response(device: str, sn: int, items: list[str]) -> bytes:
    body = "".join(item(device, i) for i in items)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>Catalog</CmdType>'
        f"<SN>{sn}</SN><DeviceID>{device}</DeviceID><SumNum>{SUM_NUM}</SumNum>"
        f"<DeviceList>{body}</DeviceList></Response>"
    ).encode()


@pytest.fixture(params=[100_000, 3], ids=["ids-tracked", "ids-over-budget"])
async def sip(client: TestClient, request: pytest.FixtureRequest) -> AsyncIterator[SipServer]:
    """The SIP server as `camreg serve` wires it (the bridge is directory and events), with
    a buffer of 5 items; with a budget of 3 tracked IDs the end comes at the idle timeout
    and only the store's count says whether the catalog was complete."""
    bridge = Bridge(client.app[GB_DEVICES], Gb28181Settings(server_id="14000000002000000001"))
    config = SipServerConfig(
        server_id=SERVER_ID,
        domain=DOMAIN,
        host="127.0.0.1",
        port=0,
        t1=0.1,
        catalog_idle_timeout_s=0.5,
        housekeeping_s=0.2,
        query_after_register=False,
        catalog_batch_items=BUFFER,
        catalog_max_tracked=request.param,
    )
    server = SipServer(config, bridge, bridge)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def device(server: SipServer, device_id: str) -> SimDevice:
    dev = await SimDevice(device_id, server.port).open()
    assert (await dev.register()).status == 200
    return dev


async def push(dev: SimDevice, sn: int, parts: list[list[str]]) -> None:
    for part in parts:
        reply = await dev.ask(dev.request("MESSAGE", body=response(dev.device_id, sn, part)))
        assert reply.status == 200


async def settled(client: TestClient, device_id: str, before: Any) -> dict[str, Any]:
    """The device row once the end of the catalog was applied (only the end of a catalog
    writes `catalog_at`; bounded wait)."""
    async with asyncio.timeout(20):
        while True:
            row = await client.app[POOL].fetchrow(
                "SELECT catalog_at, catalog_complete, catalog_items FROM gb_devices "
                "WHERE device_id = $1",
                device_id,
            )
            if row is not None and row["catalog_at"] != before:
                return dict(row)
            await asyncio.sleep(0.1)


async def items(client: TestClient, device_id: str) -> dict[str, bool]:
    rows = await client.app[POOL].fetch(
        "SELECT item_id, removed FROM gb_catalog_items WHERE device_id = $1", device_id
    )
    return {r["item_id"]: r["removed"] for r in rows}


async def old_item(client: TestClient, device_id: str) -> tuple[str, Any]:
    """An item the device listed before and no longer lists (a small complete catalog), and
    when that catalog was written."""
    old = f"{device_id[:10]}216{device_id[-3:]}9999"
    await client.app[GB_DEVICES].apply_catalog(device_id, [{"device_id": old}], complete=True)
    at = await client.app[POOL].fetchval(
        "SELECT catalog_at FROM gb_devices WHERE device_id = $1", device_id
    )
    return old, at


async def test_a_catalog_bigger_than_the_buffer_arrives_complete(
    client: TestClient, sip: SipServer
) -> None:
    nvr = "14010500001180000" + ("021" if sip.config.catalog_max_tracked > SUM_NUM else "022")
    old, before = await old_item(client, nvr)
    every = ids(nvr)
    dev = await device(sip, nvr)
    try:
        # out of order, one message twice, one item repeated across messages
        parts = [every[i : i + 4] for i in range(0, SUM_NUM, 4)]
        await push(dev, 41, [parts[2], parts[0], parts[2], parts[5], parts[1] + every[:1]])
        await push(dev, 41, [parts[4], parts[3]])
    finally:
        dev.close()
    row = await settled(client, nvr, before)
    assert (row["catalog_complete"], row["catalog_items"]) == (True, SUM_NUM)
    state = await items(client, nvr)
    assert {k: v for k, v in state.items() if not v} == dict.fromkeys(every, False)
    assert state[old] is True  # absent from a complete catalog: marked removed, kept
    assert sip.counters["catalog_batches"] >= SUM_NUM // BUFFER - 1  # it came in batches
    assert sip.counters["catalogs_partial"] == 0
    tracked = sip.config.catalog_max_tracked > SUM_NUM
    assert sip.counters["catalogs_complete" if tracked else "catalogs_counted_by_store"] == 1
    cams = await client.app[POOL].fetchval(
        "SELECT count(*) FROM cameras WHERE gb_id = ANY($1::text[])", every[:4]
    )
    assert cams == 4


async def test_a_catalog_cut_short_is_partial_and_removes_nothing(
    client: TestClient, sip: SipServer
) -> None:
    nvr = "14010500001180000" + ("031" if sip.config.catalog_max_tracked > SUM_NUM else "032")
    old, before = await old_item(client, nvr)
    every = ids(nvr)
    dev = await device(sip, nvr)
    try:  # 16 of 23 items, the last message twice, then silence
        await push(dev, 42, [every[8:16], every[:8], every[:8]])
    finally:
        dev.close()
    row = await settled(client, nvr, before)
    assert (row["catalog_complete"], row["catalog_items"]) == (False, 16)
    state = await items(client, nvr)
    assert state == {**dict.fromkeys(every[:16], False), old: False}  # nothing removed
    assert sip.counters["catalog_batches"] >= 2
    assert sip.counters["catalogs_complete"] == 0
    tracked = sip.config.catalog_max_tracked > SUM_NUM
    assert sip.counters["catalogs_partial" if tracked else "catalogs_counted_by_store"] == 1
