"""The catalog item PostgreSQL builds (catalog push) and the one Python builds (NOTIFY) agree
byte for byte, and both read back, through our own MANSCDP parser, as the camera that was
registered; an upper platform (SIPp) receives exactly those bytes, whatever the names hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from api.cascade import catalog
from api.state import POOL
from camera_registry.store import upstreams as store
from ingest.gb28181 import manscdp
from tests.api.cascade.peers import (
    LOCAL_ID,
    UpperPlatform,
    make_client,
    upstream_settings,
    wait_for,
)
from tests.conftest import Tok, camera

FULL = camera(
    gb_id="14010500001320000777",
    name="坞城路 & <学府街>",
    level=1,
    record_days=90,
    installed_at="2024-05-01",
    owner="小店分局",
    contact="0351-1234567",
    vendor="海康威视",
    model="DS-2CD",
    mac="aa:bb:cc:dd:ee:ff",
    ip="10.1.2.3",
    onvif_port=80,
    hfov=62.5,
    vfov=35,
    max_view_distance=120,
)
BARE = camera(gb_id="14010500001320000778", name="无坐标", level=3, lon=None, lat=None)
MARKUP = camera(
    gb_id="14010500001320000779",
    name="""迎泽大街 & <"东口"> 'A&B'""",
    level=3,
    address="""小店区 <坞城路> & "学府街" 'B座'""",
    contact="张三 <0351-7654321> & '值班'",
    vendor="大华 & Co",
    mac="aa:bb:cc:dd:ee:01",
)
# What xmlforest wrote for MARKUP (content escapes & < > only; quotes stay): the push's bytes
# must not change with the way they are built.
MARKUP_ITEM = (
    "<Item><DeviceID>14010500001320000779</DeviceID>"
    "<Name>迎泽大街 &amp; &lt;\"东口\"&gt; 'A&amp;B'</Name>"
    "<Manufacturer>大华 &amp; Co</Manufacturer>"
    "<Model></Model><Owner></Owner><CivilCode>140105</CivilCode>"
    "<Address>小店区 &lt;坞城路&gt; &amp; \"学府街\" 'B座'</Address><Parental>0</Parental>"
    "<ParentID>14010000002000000001</ParentID><SafetyWay>0</SafetyWay><RegisterWay>1</RegisterWay>"
    "<Secrecy>0</Secrecy><Status>OFF</Status><Longitude>112.565000</Longitude>"
    "<Latitude>37.812000</Latitude><Info><PoType>3</PoType>"
    "<ContactInfo>张三 &lt;0351-7654321&gt; &amp; '值班'</ContactInfo>"
    "<HorizontalFieldAngle>62</HorizontalFieldAngle><MaxViewDistance>80</MaxViewDistance>"
    "<MAC>aa:bb:cc:dd:ee:01</MAC></Info></Item>"
)


def parse(items: list[str], charset: str) -> dict[str, manscdp.CatalogItem]:
    extra = f'<SumNum>{len(items)}</SumNum>\r\n<DeviceList Num="{len(items)}">\r\n'
    extra += "".join(items) + "</DeviceList>\r\n"
    body = manscdp.build("Response", "Catalog", 1, "14010000002000000001", extra, charset=charset)
    msg = manscdp.parse_manscdp(body)
    return {i.device_id: i for i in msg.items}


async def test_sql_and_python_items_agree_and_carry_2016_and_2022_fields(
    client: TestClient, auth: Tok
) -> None:
    headers = await auth("admin")
    for body in (FULL, BARE, MARKUP):
        resp = await client.post("/api/v1/cameras", json=body, headers=headers)
        assert resp.status == 201, await resp.text()
    pool = client.app[POOL]
    ids = [FULL["gb_id"], BARE["gb_id"], MARKUP["gb_id"]]
    regions = ["14010500001320000"]  # a prefix narrow enough for these two
    async with pool.acquire() as conn, conn.transaction():
        sql_items = [x async for x in store.catalog_items(conn, regions, "14010000002000000001")]
        rows = [r async for r in store.catalog_rows(conn, regions)]
    py_items = [catalog.camera_item(r, "14010000002000000001") for r in rows if r["gb_id"] in ids]
    sql_items = [x for x in sql_items if any(i in x for i in ids)]
    assert [x + "\r\n" for x in sql_items] == py_items  # byte for byte
    assert MARKUP_ITEM in sql_items
    for charset in ("GB2312", "UTF-8"):
        from_sql = parse(sql_items, charset)
        from_py = parse(py_items, charset)
        assert from_sql == from_py
        full: Any = from_sql[FULL["gb_id"]]
        assert full.name == "坞城路 & <学府街>"
        assert (full.civil_code, full.parent_id, full.status) == (
            "140105",
            "14010000002000000001",
            "OFF",
        )
        assert (full.longitude, full.latitude) == (FULL["lon"], FULL["lat"])
        assert (full.po_type, full.record_save_days, full.install_time) == (
            1,
            90,
            "2024-05-01T00:00:00",
        )
        assert (full.management_unit, full.contact_info) == ("小店分局", "0351-1234567")
        assert (full.hfov, full.vfov, full.max_view_distance) == (62.5, 35.0, 120.0)
        assert (full.manufacturer, full.model, full.mac) == (
            "海康威视",
            "DS-2CD",
            "aa:bb:cc:dd:ee:ff",
        )
        assert (full.ip_address, full.port) == ("10.1.2.3", 80)
        bare: Any = from_sql[BARE["gb_id"]]
        assert bare.longitude is None and bare.latitude is None and bare.po_type == 3
        assert not bare.problems and not full.problems
        markup: Any = from_sql[MARKUP["gb_id"]]
        assert (markup.name, markup.address, markup.contact_info, markup.manufacturer) == (
            MARKUP["name"],
            MARKUP["address"],
            MARKUP["contact"],
            MARKUP["vendor"],
        )


def test_control_characters_xml_cannot_carry_are_dropped_and_cr_kept() -> None:
    item = catalog.camera_item(
        {**FULL, "name": "a\x01b\x1fc\rd\te", "status": "online", "region_code": "140105",
         "ip": None, "onvif_port": None},
        LOCAL_ID,
    )  # fmt: skip
    assert "<Name>abc&#x0d;d\te</Name>" in item


async def test_sql_escape_drops_the_same_control_characters(client: TestClient) -> None:
    text = "a\x01b\x1fc\rd\te & <f> \"g\" 'h' 迎泽"
    escaped = await client.app[POOL].fetchval(f"SELECT {store.xml_text('$1::text')}", text)
    assert escaped == "abc&#x0d;d\te &amp; &lt;f&gt; \"g\" 'h' 迎泽"
    assert f"<Name>{escaped}</Name>" in catalog.camera_item(
        {**FULL, "name": text, "status": "online", "region_code": "140105", "ip": None,
         "onvif_port": None},
        LOCAL_ID,
    )  # fmt: skip


async def test_upper_platform_receives_names_with_markup_and_cjk_exactly(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    """On any PostgreSQL build (the embedded one has no XML functions): the catalog answer
    reaches SIPp, and the item's bytes are those the Python builder makes for a NOTIFY."""
    headers = await auth("admin")
    resp = await client.post("/api/v1/cameras", json=MARKUP, headers=headers)
    assert resp.status in (201, 409), await resp.text()
    upper = await UpperPlatform(tmp_path, charset="UTF-8").start()
    up = make_client(client, upstream_settings(upper.port, charset="UTF-8", regions=["140105"]))
    await up.start()
    try:
        await wait_for(lambda: up.counters["catalog_pushes"] >= 1, what="catalog pushed")
    finally:
        await up.stop()
        await upper.stop()
    assert up.last_error is None, up.last_error
    _, ids, _ = upper.received_catalog()
    assert MARKUP["gb_id"] in ids, upper.errors()
    trace = upper.trace().decode()
    got = re.search(rf"<Item><DeviceID>{MARKUP['gb_id']}</DeviceID>.*?</Item>", trace, re.S)
    assert got is not None
    async with client.app[POOL].acquire() as conn:
        rec = await conn.fetchrow(
            f"SELECT {store.CATALOG_COLUMNS} FROM cameras WHERE gb_id = $1", MARKUP["gb_id"]
        )
    assert got.group(0) == catalog.camera_item(rec, LOCAL_ID).rstrip("\r\n") == MARKUP_ITEM


def test_civil_code_tree_has_every_level_once_with_parents() -> None:
    nodes = catalog.civil_nodes(["140105", "140106", "140200", "110101"])
    assert nodes == ["11", "14", "1101", "1401", "1402", "110101", "140105", "140106"]
    assert [catalog.civil_parent(n) for n in ("14", "1401", "140105")] == [None, "14", "1401"]
