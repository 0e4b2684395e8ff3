"""`keepalive_channels` returns exactly the channels whose keepalive observation the status
machine would act on: it leaves out each ``ok`` repeating the last observation of a camera
settled online whose flap window holds only unchanged ``ok``s (full or not), and touches such
a row's `last_probe_at` once it is older than the freshness bound, without stepping it."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from api.gb28181 import FAILING_WORDS, KEEPALIVE_DETAIL, Bridge
from api.state import GB_DEVICES, POOL
from camera_registry.config import Gb28181Settings
from health.status import Outcome
from health.store import keepalive_channels, observe_many
from ingest.gb28181.catalog import CatalogResult
from ingest.gb28181.manscdp import parse_manscdp

NVR, NVR2 = "14010500001180000071", "14010500001180000072"
SHORT, OFF, FLIPPED, OTHER, FRESH, SHARED = (f"1401050000132000{i:04d}" for i in range(71, 77))
KA = KEEPALIVE_DETAIL + "ON"


def catalog(device: str, items: dict[str, str]) -> CatalogResult:
    xml = "".join(
        f"<Item><DeviceID>{i}</DeviceID><Name>通道{i[-2:]}</Name><CivilCode>140105</CivilCode>"
        f"<ParentID>{device}</ParentID><Status>{st}</Status><Longitude>112.55</Longitude>"
        f"<Latitude>37.87</Latitude><Info><PoType>3</PoType></Info></Item>"
        for i, st in items.items()
    )
    body = (
        f"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>{device}</DeviceID>"
        f"<SumNum>{len(items)}</SumNum><DeviceList>{xml}</DeviceList></Response>"
    )
    msg = parse_manscdp(body.encode())
    return CatalogResult(device, 1, msg.sum_num, {i.device_id: i for i in msg.items}, True)


async def cameras(client: TestClient) -> dict[str, uuid.UUID]:
    store = client.app[GB_DEVICES]
    bridge = Bridge(store, Gb28181Settings(server_id="14000000002000000001"))  # no health feed
    for dev in (NVR, NVR2):
        await store.registered(
            dev, transport="UDP", source_host="127.0.0.1", source_port=5099,
            contact="<sip:x@y>", user_agent="t", expires_s=3600,
        )  # fmt: skip
    await bridge.on_catalog(
        catalog(NVR, {SHORT: "ON", OFF: "OFF", FLIPPED: "ON", OTHER: "ON", FRESH: "ON"})
    )
    rows = await client.app[POOL].fetch(
        "SELECT gb_id, id FROM cameras WHERE gb_id = ANY($1::text[])",
        [SHORT, OFF, FLIPPED, OTHER, FRESH, SHARED],
    )
    return {r["gb_id"]: r["id"] for r in rows}


async def health(client: TestClient, cid: uuid.UUID) -> Any:
    return await client.app[POOL].fetchrow(
        "SELECT state, last_probe_at AS at, xmin::text AS version FROM camera_health "
        "WHERE camera_id = $1",
        cid,
    )


def but_window(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("ok_streak", "recent", "changes")}


async def test_only_channels_that_need_an_observation_come_back(client: TestClient) -> None:
    pool = client.app[POOL]
    cam = await cameras(client)

    async def seen(gb_id: str, *outcomes: Outcome, detail: str = KA) -> None:
        for o in outcomes:  # one transaction each, as keepalive flushes come
            await observe_many(pool, [(cam[gb_id], o, detail)])

    async def ask(*devices: str) -> dict[uuid.UUID, list[str]]:
        out: dict[uuid.UUID, list[str]] = {}
        for cid, word in await keepalive_channels(
            pool, devices, failing=FAILING_WORDS, detail=KEEPALIVE_DETAIL
        ):
            out.setdefault(cid, []).append(word)
        return out

    await seen(SHORT, "ok", "ok")  # settled online, a window of 2
    await seen(FLIPPED, "ok", "ok", "fail", "ok", "ok", "ok")  # online, a fail in the window
    await seen(OTHER, "ok", "ok", detail="registered; channel ON")  # another last observation
    await seen(FRESH, "ok")  # not yet online
    assert await ask(NVR) == {cam[c]: [w] for c, w in [
        (OFF, "OFF"), (FLIPPED, "ON"), (OTHER, "ON"), (FRESH, "ON")
    ]}  # fmt: skip
    # what was left out would have changed nothing but the ok streak and the window's length
    before = await health(client, cam[SHORT])
    await seen(SHORT, "ok")
    assert but_window((await health(client, cam[SHORT]))["state"]) == but_window(before["state"])
    # a camera in two devices' catalogs is left out only if every row is the same no-op
    await Bridge(
        client.app[GB_DEVICES], Gb28181Settings(server_id="14000000002000000001")
    ).on_catalog(catalog(NVR2, {SHORT: "OFF"}))
    assert sorted((await ask(NVR, NVR2))[cam[SHORT]]) == ["OFF", "ON"]
    assert await ask() == {}


async def test_a_settled_row_past_the_freshness_bound_is_touched_not_stepped(
    client: TestClient,
) -> None:
    pool = client.app[POOL]
    cam = await cameras(client)
    cid = cam[SHORT]
    await observe_many(pool, [(cid, "ok", KA)] * 2)  # settled online
    await pool.execute(
        "UPDATE camera_health SET last_probe_at = now() - interval '1 hour' WHERE camera_id = $1",
        cid,
    )
    stale = await health(client, cid)
    left_out = await keepalive_channels(
        pool, [NVR], failing=FAILING_WORDS, detail=KEEPALIVE_DETAIL, fresh_s=180
    )
    assert cid not in {c for c, _ in left_out}
    touched = await health(client, cid)
    assert touched["state"] == stale["state"]
    assert touched["at"] > stale["at"]
    # within the bound nothing is written at all
    await keepalive_channels(
        pool, [NVR], failing=FAILING_WORDS, detail=KEEPALIVE_DETAIL, fresh_s=180
    )
    assert (await health(client, cid))["version"] == touched["version"]
