"""The catalog item PostgreSQL builds (catalog push) and the one Python builds (NOTIFY) agree,
and both read back, through our own MANSCDP parser, as the camera that was registered."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from api.cascade import catalog
from api.state import POOL
from camera_registry.store import upstreams as store
from ingest.gb28181 import manscdp
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
    for body in (FULL, BARE):
        resp = await client.post("/api/v1/cameras", json=body, headers=headers)
        assert resp.status == 201, await resp.text()
    pool = client.app[POOL]
    ids = [FULL["gb_id"], BARE["gb_id"]]
    regions = ["14010500001320000"]  # a prefix narrow enough for these two
    async with pool.acquire() as conn, conn.transaction():
        sql_items = [x async for x in store.catalog_items(conn, regions, "14010000002000000001")]
        rows = [r async for r in store.catalog_rows(conn, regions)]
    py_items = [catalog.camera_item(r, "14010000002000000001") for r in rows if r["gb_id"] in ids]
    sql_items = [x for x in sql_items if any(i in x for i in ids)]
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


def test_civil_code_tree_has_every_level_once_with_parents() -> None:
    nodes = catalog.civil_nodes(["140105", "140106", "140200", "110101"])
    assert nodes == ["11", "14", "1101", "1401", "1402", "110101", "140105", "140106"]
    assert [catalog.civil_parent(n) for n in ("14", "1401", "140105")] == [None, "14", "1401"]
