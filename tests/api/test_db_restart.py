"""PostgreSQL restarts under a discovery scan and a coverage run (issue 17, fault suite).

The database here is a private cluster this module starts in a temporary directory (the
embedded manager, as `make run` uses it), never the machine's server, so it can be stopped and
started at will. After each restart: no job is left `running` without progress, its slot is
free (the next job of the kind runs), and the job says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.coverage import COVERAGE
from api.discovery import SCAN_CONFIG, SCAN_SLOTS, SCAN_SLOTS_N
from api.state import POOL, TOKENS
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings
from camera_registry.store.embedded import EmbeddedPostgres

from ..camera_registry.coverage_fixtures import build_world
from ..conftest import TEST_KEY

STALE_S = 3.0


class PrivatePG:
    """A cluster of this module's own; its DSN (a Unix socket) stays the same across restarts."""

    def __init__(self, root: Path) -> None:
        self.pg = EmbeddedPostgres(root / "pg")
        self.dsn = self.pg.start()

    def restart(self) -> None:
        """Stop (fast shutdown: every session is cut) and start again."""
        assert self.pg.stop() is True
        assert self.pg.start() == self.dsn


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePG]:
    # Not under pytest's own temp root: a concurrent pytest session resets that to 0700, and
    # the database user (PostgreSQL refuses to run as root) must reach the cluster to restart it.
    root = Path(tempfile.mkdtemp(prefix="camreg-faults-"))
    try:
        pg = PrivatePG(root)
        yield pg
        pg.pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def _app(pg: PrivatePG, tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path, secret_key=TEST_KEY, job_stale_after_s=STALE_S, db_command_timeout_s=10
    )
    app = create_app(settings, Database(dsn=pg.dsn))
    async with TestClient(TestServer(app)) as client:
        yield client


async def _token(client: TestClient, role: Role = Role.ADMIN) -> dict[str, str]:
    for _ in range(50):  # the first request after a restart may find the pool reconnecting
        try:
            _, secret = await client.app[TOKENS].create(
                Actor("test", Role.ADMIN), role=role, name=f"faults-{role.value}"
            )
            return {"Authorization": f"Bearer {secret}"}
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(0.2)
    raise AssertionError("the database did not come back")


async def _get(client: TestClient, url: str, h: dict[str, str]) -> dict[str, Any]:
    resp = await client.get(url, headers=h)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def _until(
    client: TestClient, url: str, h: dict[str, str], done: Any, within_s: float
) -> dict[str, Any]:
    async with asyncio.timeout(within_s):
        while True:
            body = await _get(client, url, h)
            if done(body):
                return body
            await asyncio.sleep(0.1)


async def test_scan_survives_a_database_restart_and_its_slot_is_free_afterwards(
    private_pg: PrivatePG, tmp_path: Path
) -> None:
    async with _app(private_pg, tmp_path) as client:
        client.app[SCAN_CONFIG].discovery_port = 9  # discard: nobody answers
        h = await _token(client)
        # 30 loopback addresses at 8 probes/s towards a closed port: ~4 s of scanning
        body = {"cidrs": ["127.0.13.0/27"], "ports": [9], "rate": 8, "password": "kept-secret"}
        resp = await client.post("/api/v1/discovery/scans", json=body, headers=h)
        assert resp.status == 202, await resp.text()
        url = f"/api/v1/discovery/scans/{(await resp.json())['id']}"
        await _until(client, url, h, lambda s: s["status"] == "running", 10)

        await asyncio.to_thread(private_pg.restart)

        h = await _token(client)
        scan = await _until(
            client, url, h, lambda s: s["status"] not in ("queued", "running"), STALE_S * 4 + 10
        )
        # the scan went on after the restart: every address probed, the end recorded
        assert scan["status"] == "done", scan
        assert scan["probed"] == 30, scan
        assert scan["has_credentials"] is False
        assert client.app[SCAN_SLOTS]._value == SCAN_SLOTS_N  # the slot is back
        # and the next scan runs
        resp = await client.post(
            "/api/v1/discovery/scans", json={**body, "cidrs": ["127.0.13.0/30"]}, headers=h
        )
        url = f"/api/v1/discovery/scans/{(await resp.json())['id']}"
        scan = await _until(client, url, h, lambda s: s["status"] == "done", 20)
        assert scan["probed"] == 2


@contextlib.asynccontextmanager
async def _runs_held(dsn: str) -> AsyncIterator[None]:
    """Runs that start meanwhile stay `running`: they wait for this lock inside PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE coverage_gaps IN SHARE MODE")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await tx.rollback()
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await conn.close()


async def test_coverage_run_cut_by_a_database_restart_fails_clearly_and_the_next_one_runs(
    private_pg: PrivatePG, tmp_path: Path
) -> None:
    async with _app(private_pg, tmp_path) as client:
        async with client.app[POOL].acquire() as conn:
            await build_world(conn)
        h = await _token(client)
        body = {"region": "1401", "proposals": 3}
        async with _runs_held(private_pg.dsn):
            resp = await client.post("/api/v1/coverage/runs", json=body, headers=h)
            assert resp.status == 202, await resp.text()
            url = f"/api/v1/coverage/runs/{(await resp.json())['id']}"
            await _until(client, url, h, lambda r: r["status"] == "running", 20)
            await asyncio.to_thread(private_pg.restart)  # cuts the held lock's session too

        h = await _token(client)
        run = await _until(
            client, url, h, lambda r: r["status"] not in ("queued", "running"), STALE_S * 4 + 20
        )
        assert run["status"] == "failed", run
        assert "database" in run["error"].lower(), run
        assert client.app[COVERAGE].slots._value == 1  # the slot is back
        # asking again starts a fresh run (it does not join the dead one) and it finishes
        resp = await client.post("/api/v1/coverage/runs", json=body, headers=h)
        assert resp.status == 202, await resp.text()
        again = await resp.json()
        assert again["id"] != run["id"] and again["joined"] is False
        done = await _until(
            client,
            f"/api/v1/coverage/runs/{again['id']}",
            h,
            lambda r: r["status"] in ("done", "failed"),
            60,
        )
        assert done["status"] == "done", done
