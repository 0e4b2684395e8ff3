"""The embedded default database, started for real in a temporary data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from camera_registry.errors import EmbeddedDatabaseBusy
from camera_registry.store.embedded import EmbeddedPostgres, Postmaster, ServeLock


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        if ";" in sql:
            return await conn.execute(sql)
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_embedded_cluster_is_shared_persists_and_stops_with_its_last_user(tmp_path: Path) -> None:
    first = EmbeddedPostgres(tmp_path / "pg")
    dsn = first.start()
    asyncio.run(_query(dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"))
    second = EmbeddedPostgres(tmp_path / "pg")
    assert second.start() == dsn and not second.started_here
    assert first.stop() is False  # the second user keeps it running
    assert asyncio.run(_query(dsn, "SELECT x FROM kept")) == 42
    assert second.stop() is True
    pm = Postmaster.read(tmp_path / "pg")
    assert pm is None or not pm.alive()
    # A restart finds the data again.
    third = EmbeddedPostgres(tmp_path / "pg")
    dsn = third.start()
    assert asyncio.run(_query(dsn, "SELECT x FROM kept")) == 42
    assert third.stop() is True


def test_second_serve_on_one_data_dir_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    a, b = ServeLock(tmp_path), ServeLock(tmp_path)
    a.acquire()
    with pytest.raises(EmbeddedDatabaseBusy, match="already running"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()
