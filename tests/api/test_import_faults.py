"""Imports under faults (issue 17 items 1 and 2): a PostgreSQL restart in the middle of an
import, and `kill -9` of the server in the middle of an import.

The restarts happen to a private cluster this module starts in a temporary directory (never
the machine's server): afterwards no job is stuck 'running', the import slot is free (the
next import runs and succeeds), and the registry holds all of the file or none of it. The
SIGKILL test runs a real `camreg serve` and checks that its reader process dies with it, that
the upload was private while it lived, and that the next server removes it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import SETTINGS
from camera_registry.config import Settings
from camera_registry.store.embedded import EmbeddedPostgres

from ..conftest import TEST_KEY, Tok, schema_dsn
from ..live import camreg_serve

HEADER = ["国标编码", "点位名称", "点位类型", "经度", "纬度", "安装地址"]
ADDRESS = "山西省太原市小店区长风街与体育路交叉口东北角人行道旁的监控立杆"


def ledger(path: Path, first: int, n: int, rename: int | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(first, first + n):
            name = f"故障点位{i}" if i != rename else "改名后的点位"
            lon, lat = 112.5 + (i % 1000) * 1e-4, 37.7 + (i // 1000) * 1e-4
            w.writerow([f"140105000013250{i:05d}", name, "三类", lon, lat, ADDRESS])
    return path


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedPostgres]:
    """This module's own PostgreSQL, which its tests may stop and start at will.

    Not under pytest's temporary root: as root the server runs as another user, and every
    pytest session on the machine resets that root to 0700, locking the server out."""
    root = Path(tempfile.mkdtemp(prefix="camreg-faults-"))
    pg = EmbeddedPostgres(root / "pg")
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["in the server", "aside"])
async def app_client(
    cluster: EmbeddedPostgres,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> AsyncIterator[TestClient]:
    """The server, importing in its own process or — as it does big ledgers — in a niced
    process of its own (`ingest.ledger.aside`), forced here for every size."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("faults"),
        secret_key=TEST_KEY,
        job_stale_after_s=3,
        import_chunk_rows=500,
        import_aside_min_bytes=0 if request.param == "aside" else 1 << 40,
    )
    dsn = cluster.start()  # the handle is the module's: start() just returns the DSN
    app = create_app(settings, Database(dsn=dsn))
    async with TestClient(TestServer(app)) as c:
        conn = await asyncpg.connect(dsn)
        try:  # each server starts from an empty registry (the cluster is the module's)
            await conn.execute("DELETE FROM cameras")
        finally:
            await conn.close()
        yield c


async def _restart(cluster: EmbeddedPostgres) -> None:
    """`pg_ctl stop -m fast` (every session is terminated) and start again."""
    await asyncio.to_thread(cluster.stop)
    await asyncio.to_thread(cluster.start)


async def _call(client: TestClient, method: str, url: str, h: dict[str, str], **kw: Any) -> Any:
    """The API's answer, retried while the database is coming back (a 5xx or a dropped
    connection during the restart is not what these tests judge)."""
    async with asyncio.timeout(60):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                resp = await client.request(method, url, headers=h, **kw)
                if resp.status < 500:
                    return resp.status, await resp.json()
            await asyncio.sleep(0.2)


async def _post(client: TestClient, path: Path, h: dict[str, str]) -> str:
    form = FormData()
    form.add_field("file", await asyncio.to_thread(path.read_bytes), filename=path.name)
    status, body = await _call(client, "POST", "/api/v1/imports", h, data=form)
    assert status == 202, body
    return str(body["url"])


async def _until_done(client: TestClient, url: str, h: dict[str, str]) -> dict[str, Any]:
    """Poll the job until it leaves queued/running (a bound for a loaded machine)."""
    async with asyncio.timeout(120):
        while True:
            status, job = await _call(client, "GET", url, h)
            assert status == 200, job
            if job["status"] not in ("queued", "running"):
                return dict(job)
            await asyncio.sleep(0.2)


async def _db(cluster: EmbeddedPostgres) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(cluster.start())
    return conn


async def _registry(cluster: EmbeddedPostgres) -> tuple[int, int]:
    conn = await _db(cluster)
    try:
        n = await conn.fetchval("SELECT count(*) FROM cameras")
        renamed = await conn.fetchval("SELECT count(*) FROM cameras WHERE name = '改名后的点位'")
        return int(n), int(renamed)
    finally:
        await conn.close()


async def test_restart_during_the_merge_fails_the_import_clearly_frees_the_slot_and_changes_nothing(
    app_client: TestClient, cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    h = await Tok(app_client)("technician")
    base = await _until_done(
        app_client, await _post(app_client, ledger(tmp_path / "base.csv", 0, 500), h), h
    )
    assert base["status"] == "succeeded" and base["inserted"] == 500
    before = await _registry(cluster)
    more = ledger(tmp_path / "more.csv", 0, 3000, rename=7)  # 2,500 new, camera 7 renamed
    # Another writer holds camera 7: the import stages the file and then waits in its merge.
    blocker, spy = await _db(cluster), await _db(cluster)
    try:
        await blocker.execute(
            "BEGIN; SELECT 1 FROM cameras WHERE gb_id = '14010500001325000007' FOR UPDATE"
        )
        url = await _post(app_client, more, h)
        async with asyncio.timeout(120):
            while True:
                waiting = await spy.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.1)
        await _restart(cluster)
    finally:
        blocker.terminate()
        spy.terminate()
    job = await _until_done(app_client, url, h)
    assert job["status"] == "failed", job
    assert "connection was lost" in job["message"] or "no progress" in job["message"], job
    assert "run the import again" in job["message"]
    assert await _registry(cluster) == before  # none of the file
    # The slot is free: the same file imports now, all of it.
    again = await _until_done(app_client, await _post(app_client, more, h), h)
    assert again["status"] == "succeeded", again
    assert (again["inserted"], again["updated"]) == (2500, 1)
    assert await _registry(cluster) == (before[0] + 2500, 1)
    assert _uploads(app_client.app[SETTINGS].data_dir) == []  # each removed as its job ended


async def test_restart_while_the_file_is_staged_leaves_no_job_stuck_and_all_or_nothing(
    app_client: TestClient, cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    h = await Tok(app_client)("technician")
    before = await _registry(cluster)
    path = ledger(tmp_path / "big.csv", 20_000, 40_000)
    url = await _post(app_client, path, h)
    async with asyncio.timeout(120):  # restart once the import has staged some chunks
        while True:
            _, job = await _call(app_client, "GET", url, h)
            if job["status"] == "running" and job["rows_total"]:
                break
            assert job["status"] in ("queued", "running"), job
            await asyncio.sleep(0.05)
    await _restart(cluster)
    job = await _until_done(app_client, url, h)
    after = await _registry(cluster)
    if job["status"] == "failed":  # the usual case: the restart hit the staging
        assert "run the import again" in job["message"], job
        assert after == before
    else:  # it had reached its commit: then all of it
        assert job["status"] == "succeeded" and after[0] == before[0] + 40_000, job
    again = await _until_done(app_client, await _post(app_client, path, h), h)
    assert again["status"] == "succeeded", again
    assert await _registry(cluster) == (before[0] + 40_000, before[1])
    assert _uploads(app_client.app[SETTINGS].data_dir) == []


async def test_a_big_ledger_imports_in_a_niced_process_of_its_own_with_progress(
    app_client: TestClient, cluster: EmbeddedPostgres, tmp_path: Path
) -> None:
    """Aside, the import runs in a process of the server's at niceness 19 (its Python work
    no longer queues the server's readers) and reports progress and its result as in the
    server; in the server, no such process exists."""
    aside = app_client.app[SETTINGS].import_aside_min_bytes == 0
    h = await Tok(app_client)("technician")
    before = await _registry(cluster)
    # Big enough for the reader and the digest pass to get processes of their own (inside the
    # import's process, when aside).
    path = tmp_path / "nice.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(110_000):
            lon, lat = 112.4 + (i % 1000) * 1e-4, 37.6 + (i // 1000) * 1e-4
            w.writerow([f"14010500001326{i:06d}", f"大点位{i}", "三类", lon, lat, ADDRESS])
    assert path.stat().st_size > 16 * 1024 * 1024
    url = await _post(app_client, path, h)
    niced: dict[int, int] = {}  # pid: parent pid
    seen_progress = 0.0
    async with asyncio.timeout(120):
        while True:
            _, job = await _call(app_client, "GET", url, h)
            if job["status"] not in ("queued", "running"):
                break
            seen_progress = max(seen_progress, float(job.get("progress") or 0.0))
            niced.update(_niced_helpers(os.getpid()))
            await asyncio.sleep(0.05)
    assert job["status"] == "succeeded" and job["inserted"] == 110_000, job
    assert await _registry(cluster) == (before[0] + 110_000, before[1])
    assert seen_progress > 0, job  # progress reached the job while it ran
    # The reader and the digest pass run in niced processes either way; aside, they are the
    # children of the niced import process, not of the server.
    me = os.getpid()
    assert niced, "no niced helper process"
    if aside:
        assert any(parent != me for parent in niced.values()), niced
        assert any(niced.get(parent) == me for parent in niced.values()), niced
    else:
        assert all(parent == me for parent in niced.values()), niced
    assert not [k for k in niced if _alive(k)], "a helper process outlived its job"


async def test_a_ledger_that_cannot_be_read_fails_its_job_in_the_same_words_either_way(
    app_client: TestClient, tmp_path: Path
) -> None:
    """A failure inside the import process reaches the job as the server's own would: the
    same class named, the same words, nothing wrapped around them."""
    h = await Tok(app_client)("technician")
    path = tmp_path / "broken.csv"
    path.write_text("点位名称,备注\n一号,二号\n", encoding="utf-8")
    job = await _until_done(app_client, await _post(app_client, path, h), h)
    assert job["status"] == "failed", job
    assert job["message"].startswith("LedgerFormatError: "), job["message"]
    assert "broken.csv line 1: no column for 经度/lon and 纬度/lat" in job["message"], job
    assert "IngestError" not in job["message"] and "Relayed" not in job["message"]


async def test_a_utf32_ledger_or_a_nul_in_a_message_fails_the_job_clearly(
    app_client: TestClient, tmp_path: Path
) -> None:
    """UTF-32 starts like UTF-16 and was read as it, NULs between the characters; and a NUL
    in a message made the job's final write fail, leaving it to the reaper ('the server
    running it stopped'). Both now end the job with a message that says what to do."""
    h = await Tok(app_client)("technician")
    wide = tmp_path / "wide.csv"
    wide.write_bytes(codecs.BOM_UTF32_LE + "国标编码,点位名称,经度,纬度\n".encode("utf-32-le"))
    job = await _until_done(app_client, await _post(app_client, wide, h), h)
    assert job["status"] == "failed", job
    assert "UTF-32" in job["message"] and "UTF-8" in job["message"], job["message"]
    nul = tmp_path / "nul.csv"
    nul.write_text("点位\x00名称,备注\n一号,二号\n", encoding="utf-8")
    job = await _until_done(app_client, await _post(app_client, nul, h), h)
    assert job["status"] == "failed", job
    assert "no column for 经度/lon" in job["message"] and "\ufffd" in job["message"], job


def _niced_helpers(pid: int) -> dict[int, int]:
    """Descendants of `pid` at niceness 19 and their parents, PostgreSQL's processes left out
    (an embedded cluster started by this process is its descendant; an import's backend is
    niced)."""
    out = {}
    for kid in _children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            title = Path(f"/proc/{kid}/cmdline").read_bytes()
            if not title.startswith(b"postgres") and os.getpriority(os.PRIO_PROCESS, kid) == 19:
                stat = Path(f"/proc/{kid}/stat").read_text()
                out[kid] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _children(pid: int) -> set[int]:
    """Every descendant of `pid`, from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.update(kids)
        todo.extend(kids)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has died; only its exit status waits to be collected


def _uploads(data: Path) -> list[Path]:
    d = data / "uploads"
    return sorted(d.iterdir()) if d.exists() else []


async def test_kill_9_of_the_server_mid_import_leaves_no_reader_process_and_no_upload(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    dsn = schema_dsn(database_url, schema)
    data = tmp_path / "data"
    # Above the size at which the reader runs in a process of its own; small chunks keep it
    # busy (its queue holds two), so it is alive when the server dies.
    path = ledger(tmp_path / "big.csv", 0, 150_000)
    assert path.stat().st_size > 16 * 1024 * 1024
    env = {"CAMREG_JOB_STALE_AFTER_S": "3", "CAMREG_IMPORT_CHUNK_ROWS": "200"}
    with camreg_serve(dsn, data, env) as a:
        form = aiohttp.FormData()
        form.add_field("file", await asyncio.to_thread(path.read_bytes), filename="big.csv")
        auth = {"Authorization": f"Bearer {a.admin}"}
        async with aiohttp.ClientSession() as s:
            async with s.post(a.base + "/api/v1/imports", data=form, headers=auth) as resp:
                assert resp.status == 202, await resp.text()
                url = a.base + (await resp.json())["url"]
            async with asyncio.timeout(60):
                while True:
                    async with s.get(url, headers=auth) as resp:
                        job = await resp.json()
                    kids = _children(a.proc.pid)
                    if job["status"] == "running" and kids:
                        break
                    assert job["status"] in ("queued", "running"), job
                    await asyncio.sleep(0.05)
        (upload,) = _uploads(data)
        assert stat.S_IMODE(upload.stat().st_mode) == 0o600
        assert stat.S_IMODE(upload.parent.stat().st_mode) == 0o700
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not any(_alive(k) for k in kids):
                break
            await asyncio.sleep(0.1)
        assert not [k for k in kids if _alive(k)], "the server's children outlived it"
    # The next server on the data dir: the job is failed once its heartbeat is stale, and its
    # upload is removed.
    with camreg_serve(dsn, data, env) as b:
        auth = {"Authorization": f"Bearer {b.admin}"}
        url = b.base + url.split(a.base, 1)[1]
        async with aiohttp.ClientSession() as s, asyncio.timeout(60):
            while True:
                async with s.get(url, headers=auth) as resp:
                    job = await resp.json()
                if job["status"] == "failed" and not _uploads(data):
                    break
                assert job["status"] in ("queued", "running", "failed"), job
                await asyncio.sleep(0.2)
