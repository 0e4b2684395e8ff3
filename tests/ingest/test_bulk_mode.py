"""The first big import into an empty registry drops and rebuilds indexes, constraints and the
health-schedule trigger; everything must be back afterwards, or untouched after a rollback."""

from __future__ import annotations

import csv
from pathlib import Path

from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from ingest.ledger.source import import_ledger

from ..conftest import Tok, camera

ADMIN = Actor("test:bulk", Role.ADMIN)
HEADER = ["国标编码", "点位名称", "点位类型", "经度", "纬度"]


def ledger(path: Path, n: int, bad_row: int | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(n):
            lat = "north" if i == bad_row else 37.7 + i * 1e-4
            w.writerow([f"140105000013250{i:05d}", f"批量点位{i}", "三类", 112.5 + i * 1e-4, lat])
    return path


async def _schema_objects(client: TestClient) -> tuple[set[str], set[str], list[str]]:
    pool = client.app[POOL]
    indexes = {
        r["indexname"]
        for r in await pool.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename IN ('cameras', 'camera_health')"
        )
    }
    constraints = {
        r["conname"]
        for r in await pool.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'camera_health'::regclass"
        )
    }
    enabled = [
        f"{r['tgname']}={r['tgenabled']}"
        for r in await pool.fetch(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'cameras'::regclass "
            "AND NOT tgisinternal ORDER BY tgname"
        )
    ]
    return indexes, constraints, enabled


async def _map_grid_is_exact(client: TestClient) -> None:
    """The web map's grid equals a direct count of the cameras, at every tier."""
    diff = await client.app[POOL].fetchval(
        """WITH want AS (
               SELECT t.tier, floor(c.lon / t.size)::int AS cx, floor(c.lat / t.size)::int AS cy,
                      c.region_code, c.level, c.status, count(*)::int AS n
                 FROM cameras c CROSS JOIN map_grid_tiers() t WHERE c.lon IS NOT NULL
                GROUP BY 1, 2, 3, 4, 5, 6)
           SELECT count(*) FROM (
               (SELECT * FROM want EXCEPT
                SELECT tier, cx, cy, region_code, level, status, n FROM map_grid)
               UNION ALL
               (SELECT tier, cx, cy, region_code, level, status, n FROM map_grid EXCEPT
                SELECT * FROM want)) d"""
    )
    assert diff == 0


async def test_rejected_bulk_import_leaves_every_index_and_trigger_in_place(
    client: TestClient, tmp_path: Path
) -> None:
    before = await _schema_objects(client)
    report = await import_ledger(
        client.app[POOL],
        client.app[BOX],
        ADMIN,
        ledger(tmp_path / "bad.csv", 300, bad_row=250),
        bulk_threshold=100,
    )
    assert not report.committed and report.rows_bad == 1
    assert await _schema_objects(client) == before
    assert await client.app[POOL].fetchval("SELECT count(*) FROM cameras") == 0


async def test_bulk_import_rebuilds_indexes_schedule_and_constraints(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    before = await _schema_objects(client)
    assert {"cameras_gb_id", "cameras_geom_gist", "camera_health_due"} <= before[0]
    path = ledger(tmp_path / "big.csv", 300)
    pool = client.app[POOL]
    report = await import_ledger(pool, client.app[BOX], ADMIN, path, bulk_threshold=100)
    assert report.committed and report.inserted == 300
    assert await _schema_objects(client) == before
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == 300
    await _map_grid_is_exact(client)  # rebuilt once, not upserted chunk by chunk
    # The rebuilt unique index still refuses a duplicate, and the trigger schedules new ones.
    h = await auth("technician")
    dup = await client.post("/api/v1/cameras", json=camera(gb_id="14010500001325000007"), headers=h)
    assert dup.status == 409
    new = await client.post("/api/v1/cameras", json=camera(gb_id="14010500001325099999"), headers=h)
    assert new.status == 201
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == 301
    await _map_grid_is_exact(client)  # and its triggers are back on
    near = await (await client.get("/api/v1/cameras?near=112.5,37.7&k=1", headers=h)).json()
    assert near["items"][0]["gb_id"] == "14010500001325000000"
    again = await import_ledger(pool, client.app[BOX], ADMIN, path, bulk_threshold=100)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 300)
