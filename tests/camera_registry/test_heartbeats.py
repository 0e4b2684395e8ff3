"""Owners and heartbeats on the real database: stale jobs of every kind are closed in one pass,
live ones are left alone, a heartbeat keeps a job alive past the limit, and a queued coverage
run whose owner died does not keep identical requests from starting a new run."""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio.subprocess import PIPE, STDOUT, Process
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.importer import ImportWatch
from camera_registry.planning.runs import CoverageRuns, execute_run, process_pool
from camera_registry.store import heartbeats
from camera_registry.store.db import create_pool, migrate
from camera_registry.store.inbox import DiscoveryScans
from camera_registry.store.jobs import ImportJobs

from ..conftest import TEST_KEY, schema_dsn
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


async def _beat_age(pool: asyncpg.Pool, job: str) -> float:
    return float(
        await pool.fetchval(
            "SELECT extract(epoch FROM now() - heartbeat_at) FROM import_jobs WHERE id = $1::uuid",
            job,
        )
    )


async def test_a_job_that_stops_moving_stops_beating_and_is_reported_stalled(
    pool: asyncpg.Pool, database_url: str, schema: str
) -> None:
    """Issue 17: the process lived and beat on while the import waited for ever on a dead
    connection. Now the beat needs the job's own progress: a step within the limit, or its
    database session running a statement; an idle session proves nothing."""
    jobs = ImportJobs(pool)
    job = await jobs.create(ADMIN, "d.csv", dry_run=True, partial=False, crs="wgs84")
    session = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    watch = ImportWatch()
    watch.backend_pid = session.get_server_pid()  # idle: no statement running
    stalls: list[float] = []
    try:
        async with heartbeats.heartbeat(
            pool, "import_jobs", job, 1.0, progress=watch, on_stall=lambda: stalls.append(1)
        ):
            await asyncio.sleep(3.0)
            assert await _beat_age(pool, job) > 1.0
            assert stalls == [1]  # once
            await heartbeats.reap(pool, 1.0, ("import_jobs",))
            assert (await jobs.get(ADMIN, job))["status"] == "failed"
    finally:
        await session.close()


async def test_a_job_inside_a_long_statement_keeps_beating_without_stepping(
    pool: asyncpg.Pool, database_url: str, schema: str
) -> None:
    jobs = ImportJobs(pool)
    job = await jobs.create(ADMIN, "e.csv", dry_run=True, partial=False, crs="wgs84")
    session = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    watch = ImportWatch()
    watch.backend_pid = session.get_server_pid()
    stalls: list[float] = []
    try:
        merge = asyncio.create_task(session.execute("SELECT pg_sleep(3.5)"))  # a long merge
        async with heartbeats.heartbeat(
            pool, "import_jobs", job, 1.0, progress=watch, on_stall=lambda: stalls.append(1)
        ):
            await asyncio.sleep(3.0)  # no step all along
            assert await _beat_age(pool, job) < 1.0
            assert stalls == []
        await merge
    finally:
        await session.close()


async def test_a_heartbeat_gets_through_when_the_pool_is_exhausted(pool: asyncpg.Pool) -> None:
    """Issue 13: requests waiting on locks filled the pool, the beats starved and a live import
    was declared dead. The beat has a connection of its own."""
    jobs = ImportJobs(pool)
    job = await jobs.create(ADMIN, "f.csv", dry_run=True, partial=False, crs="wgs84")
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        async with heartbeats.heartbeat(pool, "import_jobs", job, 1.0):
            await asyncio.sleep(2.5)
            age = await held[0].fetchval(
                "SELECT extract(epoch FROM now() - heartbeat_at) FROM import_jobs "
                "WHERE id = $1::uuid",
                job,
            )
            assert age < 1.0
    finally:
        for conn in held:
            await pool.release(conn)


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


async def _cli(
    database_url: str, schema: str, tmp_path: Path, stale_s: str, k: int = 13
) -> Process:
    env = {
        **os.environ,
        "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
        "CAMREG_DATA_DIR": str(tmp_path),
        "CAMREG_SECRET_KEY": TEST_KEY,
        "CAMREG_JOB_STALE_AFTER_S": stale_s,
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-m", "api.cli", "coverage", "--region", "140105"]
    return await asyncio.create_subprocess_exec(
        *cmd, "--proposals", str(k), "-q", env=env, stdout=PIPE, stderr=STDOUT
    )


async def _waiting(proc: Process) -> bytes:
    """The CLI's line saying it waits for a live run (log lines may come first)."""
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        if b"waiting for it" in line:
            return line
    raise AssertionError("the CLI ended without waiting for the live run")


async def test_the_cli_waits_for_the_live_run_of_its_inputs_instead_of_computing_it_again(
    pool: asyncpg.Pool, database_url: str, schema: str, tmp_path: Path
) -> None:
    runs = CoverageRuns(pool)
    run, outcome = await runs.request(ADMIN, "140105", None, 13)
    assert outcome == "new"
    async with heartbeats.heartbeat(pool, "coverage_runs", run["id"], 60):
        proc = await _cli(database_url, schema, tmp_path, "60")
        line = await asyncio.wait_for(_waiting(proc), 60)
        assert run["id"].encode() in line
        with process_pool(1) as executor:
            await execute_run(pool, run["id"], executor=executor)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stdout.decode()
    assert "小店区" in stdout.decode()


async def test_the_cli_stops_waiting_when_the_runs_owner_dies(
    pool: asyncpg.Pool, database_url: str, schema: str, tmp_path: Path
) -> None:
    runs = CoverageRuns(pool)
    run, outcome = await runs.request(ADMIN, "140105", None, 17)
    assert outcome == "new"
    async with heartbeats.heartbeat(pool, "coverage_runs", run["id"], 1.0):
        proc = await _cli(database_url, schema, tmp_path, "1", k=17)
        await asyncio.wait_for(_waiting(proc), 60)
    # The owner stops beating (as if killed): the waiting CLI itself closes the run.
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and heartbeats.ORPHANED in stdout.decode()
    assert (await runs.get(ADMIN, run["id"]))["error"] == heartbeats.ORPHANED
