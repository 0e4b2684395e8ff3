"""Owners and heartbeats on the real database: stale jobs of every kind are closed in one pass,
live ones are left alone, a heartbeat keeps a job alive past the limit, and a queued coverage
run whose owner died does not keep identical requests from starting a new run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from camera_registry import heartbeats
from camera_registry.actor import Actor, Role
from camera_registry.coverage_run import CoverageRuns
from camera_registry.crypto import CredentialBox
from camera_registry.db import create_pool, migrate
from camera_registry.inbox import DiscoveryScans
from camera_registry.jobs import ImportJobs

from .coverage_fixtures import build_world

ADMIN = Actor("test", Role.ADMIN)


@pytest.fixture(scope="module")
async def pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, schema=schema, min_size=1, max_size=4)
    async with p.acquire() as conn:
        await migrate(conn)
        await build_world(conn)
    yield p
    await p.close()


async def _age(pool: asyncpg.Pool, table: str, job_id: str, seconds: float) -> None:
    """What a dead owner leaves: a heartbeat that stopped `seconds` ago."""
    await pool.execute(
        f"UPDATE {table} SET heartbeat_at = now() - make_interval(secs => $2), "
        "owner = 'gone:1:dead' WHERE id = $1::uuid",
        job_id,
        seconds,
    )


async def test_reap_closes_stale_jobs_of_every_kind_and_spares_live_ones(
    pool: asyncpg.Pool,
) -> None:
    runs = CoverageRuns(pool)
    run, outcome = await runs.request(ADMIN, "1401", None, 7)
    assert outcome == "new" and run["owner"] == heartbeats.OWNER
    scans = DiscoveryScans(pool, CredentialBox(b"k" * 32))
    scan = await scans.create(ADMIN, {"cidrs": ["127.0.12.0/30"]}, "u", "p", 2)
    jobs = ImportJobs(pool)
    stale_job = await jobs.create(ADMIN, "a.csv", dry_run=True, partial=False, crs="wgs84")
    live_job = await jobs.create(ADMIN, "b.csv", dry_run=True, partial=False, crs="wgs84")
    await _age(pool, "coverage_runs", run["id"], 120)
    await _age(pool, "discovery_scans", scan["id"], 120)
    await _age(pool, "import_jobs", stale_job, 120)

    closed = await heartbeats.reap(pool, 60)
    assert closed == {"coverage_runs": 1, "discovery_scans": 1, "import_jobs": 1}
    assert (await runs.get(ADMIN, run["id"]))["error"] == heartbeats.ORPHANED
    s = await scans.get(ADMIN, scan["id"])
    assert (s["status"], s["error"], s["has_credentials"]) == ("failed", heartbeats.ORPHANED, False)
    j = await jobs.get(ADMIN, stale_job)
    assert (j["status"], j["message"]) == ("failed", heartbeats.ORPHANED)
    assert (await jobs.get(ADMIN, live_job))["status"] == "queued"
    assert await heartbeats.reap(pool, 60) == dict.fromkeys(heartbeats.TABLES, 0)  # idempotent


async def test_a_heartbeat_keeps_a_job_alive_past_the_limit(pool: asyncpg.Pool) -> None:
    jobs = ImportJobs(pool)
    job = await jobs.create(ADMIN, "c.csv", dry_run=True, partial=False, crs="wgs84")
    async with heartbeats.heartbeat(pool, "import_jobs", job, 2.0):  # a beat every 1/3 s
        for _ in range(6):  # 3.6 s: well past the limit
            await asyncio.sleep(0.6)
            await heartbeats.reap(pool, 2.0, ("import_jobs",))
        assert (await jobs.get(ADMIN, job))["status"] == "queued"
    # Its process stops beating (as if killed): the next reap after the limit closes it.
    await asyncio.sleep(2.2)
    await heartbeats.reap(pool, 2.0, ("import_jobs",))
    assert (await jobs.get(ADMIN, job))["status"] == "failed"


async def test_a_queued_run_whose_owner_died_does_not_block_identical_requests(
    pool: asyncpg.Pool,
) -> None:
    runs = CoverageRuns(pool, stale_after_s=60)
    first, outcome = await runs.request(ADMIN, "1401", None, 9)
    assert outcome == "new"
    joined, outcome = await runs.request(ADMIN, "1401", None, 9)
    assert outcome == "joined" and joined["id"] == first["id"]
    await _age(pool, "coverage_runs", first["id"], 61)
    fresh, outcome = await runs.request(ADMIN, "1401", None, 9)
    assert outcome == "new" and fresh["id"] != first["id"]
    assert (await runs.get(ADMIN, first["id"]))["error"] == heartbeats.ORPHANED


async def test_the_database_refuses_a_second_live_run_of_the_same_inputs(
    pool: asyncpg.Pool,
) -> None:
    """The backstop under the advisory lock: the partial unique index of migration 0011."""
    runs = CoverageRuns(pool)
    run, _ = await runs.request(ADMIN, "1401", None, 11)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            """INSERT INTO coverage_runs (region, policy, proposals, inputs_version, created_by)
               SELECT region, policy, proposals, inputs_version, 'twin' FROM coverage_runs
               WHERE id = $1::uuid""",
            run["id"],
        )
