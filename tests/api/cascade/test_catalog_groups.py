"""Business groups (215) and virtual organisations (216) from our devices' catalogs reach the
upper platform (SIPp) in the catalog tree, once each, with links it can build a tree from."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

from aiohttp.test_utils import TestClient

from api.cascade.catalog import resolve_groups
from api.state import GB_DEVICES, POOL
from ingest.gb28181.manscdp import CatalogItem
from tests.api.cascade.peers import (
    CITY_CAMERAS,
    CIVIL_NODES,
    LOCAL_ID,
    UpperPlatform,
    make_client,
    seed,
    upstream_settings,
    wait_for,
)
from tests.conftest import Tok

NVR = "14010500001180000001"
BG = "14010500002150000001"  # 业务分组
VO1 = "14010500002160000001"  # 虚拟组织 under BG
VO2 = "14010500002160000002"  # under VO1
VO_OUTSIDE = "11010100002160000009"  # another province's: not this upstream's
CHANNEL = "14010500001310000091"


def items() -> list[dict[str, object]]:
    return [
        dataclasses.asdict(i)
        for i in (
            CatalogItem(device_id=BG, name="公安业务", parent_id=NVR),
            CatalogItem(device_id=VO1, name="小店分局", parent_id=BG, business_group_id=BG),
            CatalogItem(
                device_id=VO2, name="坞城派出所", parent_id=f"{NVR}/{VO1}", business_group_id=BG
            ),
            CatalogItem(device_id=VO_OUTSIDE, name="外省", parent_id=NVR),
            CatalogItem(
                device_id=CHANNEL,
                name="坞城路口",
                civil_code="140105",
                longitude=112.56,
                latitude=37.83,
                po_type=3,
                status="ON",
                parent_id=VO2,
            ),
        )
    ]


def sent_items(upper: UpperPlatform) -> list[dict[str, str]]:
    """Every item SIPp received, in order, with its DeviceID, ParentID and BusinessGroupID."""
    out = []
    for block in re.split(rb"\n-{20,}", upper.trace()):
        if b"message received" not in block or b"<Response>" not in block:
            continue
        text = block.decode("gb18030", "replace")
        for item in re.findall(r"<Item>(.*?)</Item>", text, re.S):
            fields = dict(re.findall(r"<(DeviceID|ParentID|BusinessGroupID)>([^<]*)<", item))
            out.append(fields)
    return out


async def test_groups_from_devices_are_sent_once_with_consistent_links_and_exact_sumnum(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    await seed(client, auth)
    await client.app[GB_DEVICES].apply_catalog(NVR, items(), complete=True)
    upper = await UpperPlatform(tmp_path).start()
    up = make_client(client, upstream_settings(upper.port))
    await up.start()
    try:
        await wait_for(lambda: up.counters["catalog_pushes"] >= 1, what="catalog pushed")
    finally:
        await up.stop()
        await upper.stop()
    assert up.last_error is None, up.last_error
    sums, ids, _ = upper.received_catalog()
    got = sent_items(upper)
    assert [g["DeviceID"] for g in got] == ids
    want = sorted([c["gb_id"] for c in CITY_CAMERAS] + CIVIL_NODES + [BG, VO1, VO2, CHANNEL])
    assert sorted(ids) == want  # every item once; the other province's group not at all
    assert sums == {len(want)}
    by_id = {g["DeviceID"]: g for g in got}
    assert by_id[BG]["ParentID"] == LOCAL_ID and "BusinessGroupID" not in by_id[BG]
    assert (by_id[VO1]["ParentID"], by_id[VO1]["BusinessGroupID"]) == (BG, BG)
    assert (by_id[VO2]["ParentID"], by_id[VO2]["BusinessGroupID"]) == (VO1, BG)
    assert (by_id[CHANNEL]["ParentID"], by_id[CHANNEL]["BusinessGroupID"]) == (VO2, BG)
    position = {d: n for n, d in enumerate(ids)}
    for item in got:  # every link points at an item sent before it, or at us
        parent = item.get("ParentID")
        if parent is not None and parent != LOCAL_ID and len(parent) == 20:
            assert position[parent] < position[item["DeviceID"]], item
        group = item.get("BusinessGroupID")
        if group is not None:
            assert group[10:13] == "215" and position[group] < position[item["DeviceID"]]


def test_group_links_from_bad_catalogs_still_make_a_tree() -> None:
    """A cycle, a parent we do not send, a business group we do not send: all hang under us."""
    rows = [
        {"item_id": "A", "type_code": "216", "name": "a", "parent_id": "B",
         "business_group_id": "X"},
        {"item_id": "B", "type_code": "216", "name": "b", "parent_id": "A",
         "business_group_id": None},
        {"item_id": "C", "type_code": "216", "name": None, "parent_id": "gone",
         "business_group_id": None},
        {"item_id": "D", "type_code": "216", "name": "d", "parent_id": "C/A",
         "business_group_id": None},
    ]  # fmt: skip
    groups = {g.item_id: g for g in resolve_groups(rows, "ROOT")}
    assert groups["C"].parent_id == "ROOT" and groups["C"].name == "C"
    assert groups["D"].parent_id == "C"
    assert {groups["A"].parent_id, groups["B"].parent_id} & {"ROOT"}  # the cycle is cut
    assert groups["A"].business_group_id is None  # X is not sent
    order = [g.item_id for g in resolve_groups(rows, "ROOT")]
    for g in groups.values():
        if g.parent_id != "ROOT":
            assert order.index(g.parent_id) < order.index(g.item_id)


async def test_notify_keeps_a_grouped_camera_under_its_group(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    """An UPDATE NOTIFY carries the same ParentID/BusinessGroupID as the catalog did."""
    await client.app[GB_DEVICES].apply_catalog(NVR, items(), complete=True)
    upper = await UpperPlatform(tmp_path, scenario="upper_subscribe_update.xml").start()
    up = make_client(client, upstream_settings(upper.port, notify_interval_s=0.2))
    await up.start()
    try:
        await wait_for(lambda: up.subscription is not None, what="subscribed")
        await asyncio.sleep(0.4)  # the notifier has taken its starting marks
        headers = await auth("admin")
        row = await client.app[POOL].fetchrow(
            "SELECT id, version FROM cameras WHERE gb_id = $1", CHANNEL
        )
        resp = await client.patch(
            f"/api/v1/cameras/{row['id']}",
            json={"address": "坞城路与学府街口"},
            headers={**headers, "If-Match": f'"{row["version"]}"'},
        )
        assert resp.status == 200, await resp.text()
        await wait_for(lambda: b"NOTIFY sip:" in upper.trace(), what="NOTIFY received")
    finally:
        await up.stop()
        await upper.stop()
    assert "Failed regexp" not in upper.errors(), upper.errors()
    notify = upper.trace().split(b"NOTIFY sip:")[1].decode("gb18030", "replace")
    item = re.search(rf"<Item><DeviceID>{CHANNEL}</DeviceID>.*?</Item>", notify, re.S)
    assert item is not None, notify
    assert f"<ParentID>{VO2}</ParentID><BusinessGroupID>{BG}</BusinessGroupID>" in item.group(0)
