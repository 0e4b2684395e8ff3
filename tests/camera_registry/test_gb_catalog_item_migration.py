"""Catalog items stored before migration 0023 were JSON strings holding the item (encoded by
hand, then again by the jsonb codec); the migration turns them back into objects, which the
cascade's group query reads."""

from __future__ import annotations

import json

from camera_registry.store import upstreams
from camera_registry.store.db import _migrations, create_pool, migrate

DEVICE = "14010500001180000001"
GROUP = {
    "device_id": "14010500002160000001",
    "name": "虚拟组织",
    "business_group_id": "1401050000215",
}
CHANNEL = {"device_id": "14010500001320000001", "name": "通道1", "po_type": 3}


async def test_items_stored_as_json_strings_become_objects(database_url: str, schema: str) -> None:
    [(version, name)] = [(v, n) for v, n, _ in _migrations() if n.startswith("0023_")]
    pool = await create_pool(database_url, schema=schema, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute("DELETE FROM schema_migrations WHERE version = $1", version)
            await conn.execute(
                "INSERT INTO gb_devices (device_id, type_code, region_code) VALUES ($1, '118', "
                "'140105')",
                DEVICE,
            )
            await conn.executemany(
                """INSERT INTO gb_catalog_items (device_id, item_id, type_code, name, item)
                   VALUES ($1, $2, $3, $4, $5)""",
                [
                    # as written before: a str through the codec is a JSON string
                    (DEVICE, GROUP["device_id"], "216", GROUP["name"], json.dumps(GROUP)),
                    (DEVICE, CHANNEL["device_id"], "132", CHANNEL["name"], CHANNEL),
                ],
            )
            shapes = "SELECT item_id, jsonb_typeof(item) FROM gb_catalog_items ORDER BY item_id"
            assert [tuple(r) for r in await conn.fetch(shapes)] == [
                (CHANNEL["device_id"], "object"),
                (GROUP["device_id"], "string"),
            ]
            assert await migrate(conn) == [name]
            assert {r[1] for r in await conn.fetch(shapes)} == {"object"}
            items = {
                r["item_id"]: r["item"] for r in await conn.fetch("SELECT * FROM gb_catalog_items")
            }
            assert items == {GROUP["device_id"]: GROUP, CHANNEL["device_id"]: CHANNEL}
            [group] = await upstreams.catalog_groups(conn, ["1401"])
            assert group["business_group_id"] == GROUP["business_group_id"]
    finally:
        await pool.close()
