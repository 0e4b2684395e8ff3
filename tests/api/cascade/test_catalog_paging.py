"""A catalog push pages by key in short statements yet sends exactly what it counted: a camera
added mid-push waits for the next query, one deleted mid-push is still one item, and no
transaction stays open between pages (VACUUM's horizon is not held for the whole push)."""

from __future__ import annotations

import contextlib

from aiohttp.test_utils import TestClient

from api.cascade import catalog
from api.state import POOL
from tests.conftest import Tok, camera

ROOT = "14010000002000000001"
REGION = "1402"  # a region of its own: the module's other tests seed 1401


async def test_paged_push_sends_what_it_counted_once_while_cameras_come_and_go(
    client: TestClient, auth: Tok
) -> None:
    headers = await auth("admin")
    made = {}
    for i in range(7):
        body = camera(gb_id=f"1402020000132000{i:04d}", name=f"太原{i}", lon=112.5, lat=37.8)
        resp = await client.post("/api/v1/cameras", json=body, headers=headers)
        assert resp.status == 201, await resp.text()
        made[body["gb_id"]] = await resp.json()
    pool = client.app[POOL]
    sent: list[str] = []
    sums: set[int] = set()
    states: list[str] = []
    async with pool.acquire() as conn:
        push = catalog.catalog_batches(conn, [REGION], ROOT, 2, page=3)
        async with contextlib.aclosing(push) as batches:
            async for total, batch in batches:
                sums.add(total)
                sent += batch
                states.append(
                    await pool.fetchval(
                        "SELECT state FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
                    )
                )
                if len(states) == 1:  # mid-push: one camera deleted, one added
                    gone = made["14020200001320000005"]
                    resp = await client.delete(
                        f"/api/v1/cameras/{gone['id']}",
                        headers={**headers, "If-Match": f'"{gone["version"]}"'},
                    )
                    assert resp.status == 204, await resp.text()
                    late = camera(gb_id="14020200001320000099", name="新来", lon=112.5, lat=37.8)
                    resp = await client.post("/api/v1/cameras", json=late, headers=headers)
                    assert resp.status == 201, await resp.text()
        # the temporary table went with the push
        assert await conn.fetchval("SELECT to_regclass('pg_temp.catalog_push_keys')") is None
    ids = [item.split("<DeviceID>")[1].split("<")[0] for item in sent]
    nodes = ["14", "1402", "140202"]
    assert ids == nodes + sorted(made)  # every counted camera once, in key order
    assert sums == {len(nodes) + 7}  # SumNum exact: what was counted is what was sent
    assert "14020200001320000099" not in ids
    deleted = next(x for x in sent if "14020200001320000005" in x)
    assert "<Status>OFF</Status>" in deleted and "<Name>" not in deleted
    assert "idle in transaction" not in states  # nothing held open between pages
