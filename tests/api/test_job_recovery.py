"""Long jobs across real server processes: a server killed with SIGKILL leaves its coverage run
and discovery scan behind, and another server closes them as failed once their heartbeat is
older than the limit; an identical coverage request then starts afresh; two identical requests
sent at once to two servers sharing the database yield one run.

Real `camreg serve --demo` subprocesses on the test schema (the demo loads Shanxi's region
boundaries and 400 cameras, enough for a coverage run of 太原市). A run is held "running"
without mocking anything: the test holds a SHARE lock on coverage_gaps, which a run clears
for itself after it has been marked running, so the run waits in PostgreSQL until released.
Scans sweep 127.0.12.0/24 at one probe a second towards a port nobody listens on, so they
are still running when the server dies. All traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from camera_registry.store.heartbeats import ORPHANED

from ..conftest import schema_dsn
from ..live import camreg_serve

STALE_S = "3"  # the heartbeat limit the servers run with: small, so the test is quick
RUN = {"region": "1401", "proposals": 2}
GB = "14010500001325009001"  # the camera the interrupted import would have added


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    admin: str
    log: Path

    async def call(
        self, method: str, path: str, json: Any = None, expect: tuple[int, ...] = (200,)
    ) -> Any:
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                method,
                self.base + path,
                json=json,
                headers={"Authorization": f"Bearer {self.admin}"},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as resp,
        ):
            body = await resp.json()
            assert resp.status in expect, f"{method} {path}: {resp.status} {body}"
            return body

    def kill(self) -> None:
        """What a power loss does: no cleanup, no final UPDATE of the job rows."""
        self.proc.kill()
        self.proc.wait(15)


@contextlib.contextmanager
def _serve(dsn: str, data: Path) -> Iterator[Server]:
    with camreg_serve(dsn, data, {"CAMREG_JOB_STALE_AFTER_S": STALE_S}) as live:
        yield Server(live.proc, live.base, live.admin, live.log)


@pytest.fixture(scope="module")
def dsn(database_url: str, schema: str) -> str:
    return schema_dsn(database_url, schema)


@pytest.fixture
def spawn(dsn: str, tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """Start servers by name (each its own data dir); all are stopped at the end."""
    stack = contextlib.ExitStack()

    def start(name: str) -> Server:
        return stack.enter_context(_serve(dsn, tmp_path / name))

    with stack:
        yield start


@contextlib.asynccontextmanager
async def _runs_held(dsn: str) -> AsyncIterator[None]:
    """Runs that start meanwhile stay 'running': they wait for this lock in PostgreSQL."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("LOCK TABLE coverage_gaps IN SHARE MODE")
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


async def _until(
    read: Callable[[], Awaitable[dict[str, Any]]],
    done: Callable[[dict[str, Any]], bool],
    within_s: float,
) -> dict[str, Any]:
    """Poll until `done` (an upper bound on the wait, not a performance assertion)."""
    async with asyncio.timeout(within_s):
        while True:
            row = await read()
            if done(row):
                return row
            await asyncio.sleep(0.2)


async def test_a_killed_servers_coverage_run_fails_and_an_identical_request_starts_afresh(
    spawn: Callable[[str], Server], dsn: str
) -> None:
    a = spawn("a")
    async with _runs_held(dsn):
        first = await a.call("POST", "/api/v1/coverage/runs", RUN, expect=(202,))
        assert first["joined"] is False and first["reused"] is False
        url = first["url"]
        await _until(lambda: a.call("GET", url), lambda r: r["status"] == "running", 60)
        # Meanwhile an identical request joins it.
        again = await a.call("POST", "/api/v1/coverage/runs", RUN, expect=(202,))
        assert again["id"] == first["id"] and again["joined"] is True
        a.kill()
    b = spawn("b")
    # Within the limit plus the reaper's period (bounded generously for a loaded machine).
    failed = await _until(lambda: b.call("GET", url), lambda r: r["status"] != "running", 60)
    assert failed["status"] == "failed", failed
    assert failed["error"] == ORPHANED and failed["finished_at"] is not None
    fresh = await b.call("POST", "/api/v1/coverage/runs", RUN, expect=(202,))
    assert fresh["id"] != first["id"] and fresh["joined"] is False
    assert fresh["inputs_version"] == first["inputs_version"]
    done = await _until(
        lambda: b.call("GET", fresh["url"]), lambda r: r["status"] in ("done", "failed"), 180
    )
    assert done["status"] == "done", done
    assert done["summary"]["counties"] >= 1


async def test_two_identical_requests_at_once_on_two_servers_make_one_run(
    spawn: Callable[[str], Server], dsn: str
) -> None:
    a, b = spawn("a"), spawn("b")
    body = {**RUN, "proposals": 1}  # inputs no earlier test has run
    async with _runs_held(dsn):
        answers = await asyncio.gather(
            a.call("POST", "/api/v1/coverage/runs", body, expect=(202,)),
            b.call("POST", "/api/v1/coverage/runs", body, expect=(202,)),
        )
        assert answers[0]["id"] == answers[1]["id"]
        assert sorted(r["joined"] for r in answers) == [False, True]
    url = answers[0]["url"]
    done = await _until(
        lambda: b.call("GET", url), lambda r: r["status"] in ("done", "failed"), 180
    )
    assert done["status"] == "done", done
    conn = await asyncpg.connect(dsn)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM coverage_runs WHERE inputs_version = $1",
            done["inputs_version"],
        )
    finally:
        await conn.close()
    assert n == 1


async def test_a_killed_servers_discovery_scan_fails_with_its_credentials_dropped(
    spawn: Callable[[str], Server],
) -> None:
    a = spawn("a")
    body = {"cidrs": ["127.0.12.0/24"], "rate": 1, "password": "never-logged"}
    scan = await a.call("POST", "/api/v1/discovery/scans", body, expect=(202,))
    url = f"/api/v1/discovery/scans/{scan['id']}"
    running = await _until(lambda: a.call("GET", url), lambda r: r["status"] == "running", 60)
    assert running["has_credentials"] is True
    a.kill()
    b = spawn("b")
    failed = await _until(lambda: b.call("GET", url), lambda r: r["status"] != "running", 60)
    assert failed["status"] == "failed", failed
    assert failed["error"] == ORPHANED and failed["has_credentials"] is False
    # The same scan asked again starts afresh on the live server.
    fresh = await b.call("POST", "/api/v1/discovery/scans", body, expect=(202,))
    assert fresh["id"] != scan["id"]
    again = f"/api/v1/discovery/scans/{fresh['id']}"
    await _until(lambda: b.call("GET", again), lambda r: r["status"] == "running", 60)


async def test_a_killed_servers_import_job_fails(
    spawn: Callable[[str], Server],
    dsn: str,
) -> None:
    a = spawn("a")
    ledger = "国标编码,点位名称,点位类型,经度,纬度\n" + f"{GB},恢复测试,二类,112.56,37.81\n"
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():  # the import's writes wait here, the job 'running'
            await conn.execute("LOCK TABLE cameras IN SHARE MODE")
            form = aiohttp.FormData()
            form.add_field("file", ledger.encode(), filename="ledger.csv")
            async with (
                aiohttp.ClientSession() as s,
                s.post(
                    a.base + "/api/v1/imports",
                    data=form,
                    headers={"Authorization": f"Bearer {a.admin}"},
                ) as resp,
            ):
                assert resp.status == 202, await resp.text()
                job = await resp.json()
            url = job["url"]
            await _until(lambda: a.call("GET", url), lambda r: r["status"] == "running", 60)
            a.kill()
    finally:
        await conn.close()
    b = spawn("b")
    failed = await _until(lambda: b.call("GET", url), lambda r: r["status"] != "running", 60)
    assert (failed["status"], failed["message"]) == ("failed", ORPHANED), failed
    conn = await asyncpg.connect(dsn)
    try:  # the dead server's half-done transaction was rolled back
        assert not await conn.fetchval("SELECT count(*) FROM cameras WHERE gb_id = $1", GB)
    finally:
        await conn.close()
