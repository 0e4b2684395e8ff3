"""A big import runs beside live traffic: it never drops an index, disables a trigger or takes a
lock that blocks readers of `cameras`; indexes, constraints, the health schedule and the map
grid are exact afterwards, and untouched after a rollback."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import os
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from camera_registry.importer import IMPORT_NICENESS, ImportWatch
from camera_registry.store import bulk, db
from camera_registry.store.db import create_pool, lower_backend_priority
from ingest.ledger.source import import_ledger

from ..conftest import Tok, camera

ADMIN = Actor("test:bulk", Role.ADMIN)
HEADER = ["国标编码", "点位名称", "点位类型", "经度", "纬度"]


def ledger(path: Path, n: int, bad_row: int | None = None, series: int = 0) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(n):
            lat = "north" if i == bad_row else 37.7 + i * 1e-4
            gb_id = f"14010500001325{series}{i:05d}"
            w.writerow([gb_id, f"批量点位{series}-{i}", "三类", 112.5 + i * 1e-4, lat])
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
    )
    assert not report.committed and report.rows_bad == 1
    assert await _schema_objects(client) == before
    assert await client.app[POOL].fetchval("SELECT count(*) FROM cameras") == 0


async def test_big_import_keeps_indexes_schedule_and_constraints_exact(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    before = await _schema_objects(client)
    assert {"cameras_gb_id", "cameras_geom_gist", "camera_health_due"} <= before[0]
    path = ledger(tmp_path / "big.csv", 300)
    pool = client.app[POOL]
    report = await import_ledger(pool, client.app[BOX], ADMIN, path, chunk_rows=100)
    assert report.committed and report.inserted == 300
    assert await _schema_objects(client) == before
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == 300
    await _map_grid_is_exact(client)
    # The unique index still refuses a duplicate, and the trigger schedules new ones.
    h = await auth("technician")
    dup = await client.post("/api/v1/cameras", json=camera(gb_id="14010500001325000007"), headers=h)
    assert dup.status == 409
    new = await client.post("/api/v1/cameras", json=camera(gb_id="14010500001325099999"), headers=h)
    assert new.status == 201
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == 301
    await _map_grid_is_exact(client)  # and its triggers stayed on
    near = await (await client.get("/api/v1/cameras?near=112.5,37.7&k=1", headers=h)).json()
    assert near["items"][0]["gb_id"] == "14010500001325000000"
    again = await import_ledger(pool, client.app[BOX], ADMIN, path, chunk_rows=100)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 300)


_HARMLESS = {"AccessShareLock", "RowShareLock", "RowExclusiveLock"}  # never block a reader


async def test_import_waiting_in_its_merge_blocks_no_reader_and_takes_only_row_locks(
    client: TestClient, auth: Tok, database_url: str, schema: str, tmp_path: Path
) -> None:
    """A writer holds one camera the import updates, so the import waits inside its merge
    transaction (the longest it can hold anything): meanwhile the API still reads that camera
    and /healthz answers, a reader takes its table lock without waiting, and the import's
    session never held more than row-level locks on the registry's tables."""
    pool = client.app[POOL]
    base = ledger(tmp_path / "base.csv", 300)
    assert (await import_ledger(pool, client.app[BOX], ADMIN, base)).committed
    cam = await pool.fetchrow("SELECT id, name FROM cameras WHERE gb_id = '14010500001325000007'")
    with (tmp_path / "more.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerow(["14010500001325000007", "改名点位", "三类", 112.5007, 37.7007])
        for i in range(300, 2300):
            w.writerow([f"140105000013250{i:05d}", f"批量点位{i}", "三类", 112.5 + i * 1e-4, 37.7])
    seen: set[tuple[str, str]] = set()
    watch = ImportWatch()
    blocker = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    spy = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT 1 FROM cameras WHERE id = $1 FOR UPDATE", cam["id"])
        job = asyncio.create_task(
            import_ledger(pool, client.app[BOX], ADMIN, tmp_path / "more.csv", watch=watch)
        )

        async def waiting_on_lock() -> bool:
            locks = await spy.fetch(
                """SELECT l.relation::regclass::text AS rel, l.mode, l.granted
                     FROM pg_locks l WHERE l.pid = $1 AND l.locktype = 'relation'""",
                watch.backend_pid or 0,
            )
            for r in locks:
                if r["rel"] in ("cameras", "camera_health", "map_grid") and r["granted"]:
                    seen.add((r["rel"], r["mode"]))
            return bool(
                await spy.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    watch.backend_pid or 0,
                )
            )

        async with asyncio.timeout(60):  # a bound for a loaded machine, not a measurement
            while not await waiting_on_lock():
                assert not job.done(), job.result()
                await asyncio.sleep(0.02)
        # The import is inside its merge, waiting: readers are not.
        async with asyncio.timeout(10):
            async with spy.transaction():
                await spy.execute("LOCK TABLE cameras IN ACCESS SHARE MODE NOWAIT")
                await spy.execute("LOCK TABLE camera_health IN ACCESS SHARE MODE NOWAIT")
            h = await auth("planner")
            got = await client.get(f"/api/v1/cameras/{cam['id']}", headers=h)
            assert got.status == 200 and (await got.json())["name"] == cam["name"]
            assert (await client.get("/healthz")).status == 200
        await waiting_on_lock()
        await tx.rollback()
        report = await asyncio.wait_for(job, 60)
    finally:
        await blocker.close()
        await spy.close()
    assert report.committed and (report.inserted, report.updated) == (2000, 1)
    assert seen and {mode for _, mode in seen} <= _HARMLESS, seen
    assert await pool.fetchval("SELECT count(*) FROM cameras") == 2301  # + the API's one
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == 2301
    await _map_grid_is_exact(client)


async def test_a_merge_longer_than_the_pools_request_timeout_completes(
    client: TestClient, database_url: str, schema: str, tmp_path: Path
) -> None:
    """The pool's command timeout bounds requests (a minute by default); a province's merge
    runs for minutes, under the import's own bound. Here the pool allows 0.3 s and the merge
    waits 1.5 s for a row another writer holds."""
    pool = await create_pool(
        database_url, schema=schema, min_size=1, max_size=2, command_timeout=0.3
    )
    blocker = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    path = tmp_path / "slow.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerow(["14010500001325000003", "慢合并点位", "三类", 112.5003, 37.7003])
    try:
        async with blocker.transaction():
            await blocker.execute(
                "SELECT 1 FROM cameras WHERE gb_id = '14010500001325000003' FOR UPDATE"
            )
            job = asyncio.create_task(import_ledger(pool, client.app[BOX], ADMIN, path))
            await asyncio.sleep(1.5)
        report = await asyncio.wait_for(job, 60)
    finally:
        await blocker.close()
        await pool.close()
    assert report.committed and report.updated == 1


async def test_merge_in_slices_schedules_every_camera_once_and_a_delete_unschedules_it(
    client: TestClient, auth: Tok, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge inserts the stage a slice of pages at a time (here ~2 rows a slice): every
    camera is inserted once, scheduled once within the first five minutes, and counted once on
    the map; deleting cameras (one by the API, several in one statement) removes their schedule
    rows, as the foreign key's cascade did."""
    monkeypatch.setattr(bulk, "_MERGE_PAGES", 1)
    pool = client.app[POOL]
    report = await import_ledger(
        pool, client.app[BOX], ADMIN, ledger(tmp_path / "s.csv", 300, series=7)
    )
    assert report.committed and report.inserted == 300
    before = await pool.fetchval("SELECT count(*) FROM camera_health") - 300
    rows = await pool.fetch(
        """SELECT c.id, h.next_probe_at - c.created_at AS due_in
             FROM cameras c JOIN camera_health h ON h.camera_id = c.id
            WHERE c.gb_id LIKE '140105000013257%'"""
    )
    assert len(rows) == 300  # (schedule rows of the module's earlier tests' cameras aside)
    assert all(dt.timedelta(0) <= r["due_in"] <= dt.timedelta(minutes=5, seconds=1) for r in rows)
    await _map_grid_is_exact(client)
    h = await auth("admin")
    gone = await client.delete(f"/api/v1/cameras/{rows[0]['id']}", headers=h)
    assert gone.status == 204
    await pool.execute(
        "DELETE FROM cameras WHERE id = ANY($1::uuid[])", [r["id"] for r in rows[1:11]]
    )
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == before + 289
    assert not await pool.fetchval(
        "SELECT count(*) FROM camera_health h WHERE NOT EXISTS "
        "(SELECT 1 FROM cameras c WHERE c.id = h.camera_id)"
    )
    again = await import_ledger(pool, client.app[BOX], ADMIN, tmp_path / "s.csv")
    assert (again.inserted, again.updated, again.unchanged) == (11, 0, 289)
    assert await pool.fetchval("SELECT count(*) FROM camera_health") == before + 300
    await _map_grid_is_exact(client)


async def test_a_bad_row_in_a_later_chunk_undoes_the_early_merges(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks before the bad row were already inserted (inside the import's transaction):
    without --partial nothing of them stays, and every bad row is still reported; with
    --partial the good rows of every chunk are in."""
    monkeypatch.setattr(bulk, "_EARLY_MERGE_ROWS", 100)  # merge after every chunk
    pool = client.app[POOL]
    count = "SELECT count(*) FROM cameras WHERE gb_id LIKE '140105000013256%'"
    path = ledger(tmp_path / "late.csv", 300, bad_row=250, series=6)
    report = await import_ledger(pool, client.app[BOX], ADMIN, path, chunk_rows=100)
    assert not report.committed and report.rows_bad == 1
    assert [(e.row, e.field) for e in report.errors] == [(252, "lat")]
    assert await pool.fetchval(count) == 0
    dry = await import_ledger(
        pool, client.app[BOX], ADMIN, path, chunk_rows=100, dry_run=True, partial=True
    )
    assert (dry.inserted, dry.committed) == (299, False)
    assert await pool.fetchval(count) == 0
    part = await import_ledger(pool, client.app[BOX], ADMIN, path, chunk_rows=100, partial=True)
    assert part.committed and (part.inserted, part.rows_bad) == (299, 1)
    assert await pool.fetchval(count) == 299
    await _map_grid_is_exact(client)


async def test_rows_without_gb_id_beside_early_merged_ones_keep_their_meaning(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row without 国标编码 is matched by (region, name) only to cameras registered before
    the import, not to a camera an earlier chunk of the same file just inserted: it gets a
    generated ID, as when the whole file was merged at the end; a registered camera's row
    in a later chunk is updated, and the report counts each once."""
    monkeypatch.setattr(bulk, "_EARLY_MERGE_ROWS", 100)  # merge after every chunk
    pool = client.app[POOL]
    h = ["国标编码", "点位名称", "点位类型", "经度", "纬度", "行政区划"]
    first = tmp_path / "first.csv"
    with first.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(h)
        w.writerow(["14010500001325500001", "老点位", "三类", 112.51, 37.71, "140105"])
    assert (await import_ledger(pool, client.app[BOX], ADMIN, first)).committed
    mixed = tmp_path / "mixed.csv"
    with mixed.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(h)
        for i in range(150):  # chunk 1 and 2: new cameras with IDs
            w.writerow([f"140105000013255{i + 100:05d}", f"新点位{i}", "三类", 112.5, 37.7, ""])
        w.writerow(["", "新点位3", "三类", 112.52, 37.72, "140105"])  # same name as row 5
        w.writerow(["", "老点位", "二类", 112.51, 37.71, "140105"])  # the registered camera
    report = await import_ledger(pool, client.app[BOX], ADMIN, mixed, chunk_rows=100)
    assert report.committed, report.summary()
    assert (report.inserted, report.updated, report.unchanged) == (151, 1, 0)
    named = await pool.fetch(
        "SELECT gb_id FROM cameras WHERE name = '新点位3' AND region_code = '140105' ORDER BY 1"
    )
    assert len(named) == 2 and named[0]["gb_id"] == "14010500001325500103"
    assert (
        await pool.fetchval("SELECT level FROM cameras WHERE gb_id = '14010500001325500001'") == 2
    )
    again = await import_ledger(pool, client.app[BOX], ADMIN, mixed, chunk_rows=100)
    # Two cameras now carry that name: the unnamed row is ambiguous, so it is new again.
    assert (again.inserted, again.updated, again.unchanged) == (1, 0, 151)
    await _map_grid_is_exact(client)


async def test_a_re_import_with_new_rows_at_its_end_stages_them_for_the_final_merge(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once an early merge finds mostly registered cameras, later chunks go straight to the
    stage; their new cameras are still inserted (by the final merge) and counted once."""
    monkeypatch.setattr(bulk, "_EARLY_MERGE_ROWS", 100)
    pool = client.app[POOL]
    count = "SELECT count(*) FROM cameras WHERE gb_id LIKE '140105000013254%'"
    base = ledger(tmp_path / "base.csv", 200, series=4)
    assert (await import_ledger(pool, client.app[BOX], ADMIN, base, chunk_rows=100)).committed
    grown = ledger(tmp_path / "grown.csv", 350, series=4)
    report = await import_ledger(pool, client.app[BOX], ADMIN, grown, chunk_rows=100)
    assert report.committed
    assert (report.inserted, report.updated, report.unchanged) == (150, 0, 200)
    assert await pool.fetchval(count) == 350
    await _map_grid_is_exact(client)


class _NicenessWatch(ImportWatch):
    """Records the import's database backend's niceness at every step of the import."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def step(self) -> None:
        super().step()
        if self.backend_pid is not None:
            with contextlib.suppress(OSError):
                self.seen.append(os.getpriority(os.PRIO_PROCESS, self.backend_pid))


def _may_renice(pid: int) -> bool:
    """Raising another process's niceness takes root or owning it (no CAP_SYS_NICE here)."""
    return os.geteuid() == 0 or os.stat(f"/proc/{pid}").st_uid == os.geteuid()


async def test_an_import_runs_its_database_backend_at_low_priority_and_never_returns_it(
    client: TestClient, tmp_path: Path
) -> None:
    """The merge into `cameras` keeps a backend on a core for seconds: it runs niced, so the
    registry's readers keep their latency (bench/bench_import_reads.py), and that backend is
    not handed to the pool's next user (an unprivileged server could not lower it again)."""
    pool = client.app[POOL]
    watch = _NicenessWatch()
    report = await import_ledger(
        pool, client.app[BOX], ADMIN, ledger(tmp_path / "nice.csv", 300, series=8), watch=watch
    )
    assert report.committed and report.inserted == 300
    pid = watch.backend_pid
    assert pid is not None and watch.seen
    if _may_renice(pid):
        assert set(watch.seen) == {IMPORT_NICENESS}, watch.seen
        async with asyncio.timeout(10):  # terminated, not released: its process ends
            while Path(f"/proc/{pid}").exists():  # noqa: ASYNC110, ASYNC240 - procfs, polled
                await asyncio.sleep(0.05)
    else:  # the system's cluster, another user's processes, no privilege: normal priority
        assert set(watch.seen) == {0}, watch.seen
    for _ in range(pool.get_size() + 1):
        async with pool.acquire() as conn:
            assert os.getpriority(os.PRIO_PROCESS, conn.get_server_pid()) == 0


async def test_only_this_sessions_own_backend_is_reniced(database_url: str, schema: str) -> None:
    """The process of the backend's pid must be that very session: a database in a container
    or on another host has pids that mean nothing here (the title check), and the call is
    refused without privilege rather than failing the import."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        pid = conn.get_server_pid()
        port = await conn.fetchval("SELECT inet_client_port()")
        title = db._process_title(pid)
        assert db._is_backend_title(title, port)
        assert not db._is_backend_title(title, (port or 0) + 1 if port else 1)
        assert not db._is_backend_title(db._process_title(os.getpid()), port)
        assert not db._is_backend_title("", port)
        assert await lower_backend_priority(conn, 5) is _may_renice(pid)
        assert os.getpriority(os.PRIO_PROCESS, pid) == (5 if _may_renice(pid) else 0)
    finally:
        await conn.close()
