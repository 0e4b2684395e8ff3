"""Cameras get time-ordered ids (migration 0029): UUIDv7, so inserts fill the right edge of
the primary keys of `cameras` and `camera_health` instead of every page of them."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from ingest.ledger.source import import_ledger

from .test_import import ledger, row

ADMIN = Actor("test:import-ids", Role.ADMIN)


def _ms(u: uuid.UUID) -> int:
    return int.from_bytes(u.bytes[:6], "big")


async def test_imported_cameras_have_uuidv7_ids_in_import_order(
    client: TestClient, tmp_path: Path
) -> None:
    pool = client.app[POOL]
    before = int(time.time() * 1000)
    for part, serials in enumerate((range(1, 6), range(6, 11))):
        path = ledger(tmp_path / f"{part}.csv", [row(n, region="140306") for n in serials])
        report = await import_ledger(pool, client.app[BOX], ADMIN, path)
        assert report.inserted == 5
    after = int(time.time() * 1000)
    rows = await pool.fetch(
        "SELECT id, gb_id FROM cameras WHERE region_code = '140306' ORDER BY gb_id"
    )
    ids = [r["id"] for r in rows]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert all(before - 1000 <= _ms(u) <= after + 1000 for u in ids)  # the clocks are the host's
    # The second file's cameras come after the first's in the primary key.
    assert max(ids[:5]) < min(ids[5:])
    assert len(set(ids)) == 10
