"""Ledger imports over HTTP: upload, then follow the job (progress, every bad row).

An upload may hold a 密码 column, so it is written 0600 in a 0700 directory, named after its
job, and removed when the job ends; after a crash, the next server removes the uploads of jobs
that are no longer live (`uploads_ctx`). A job proves its own progress to its heartbeat and is
failed with a clear message, freeing its slot, when it stops moving (issue 17).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from api import params
from api.auth import WRITERS
from api.responses import json_response
from api.routes import FLAG, UUID, Param, RouteTable, caller, enum, integer
from api.state import BACKGROUND, BOX, IMPORT_SLOTS, JOBS, METRICS, POOL, SETTINGS
from camera_registry.actor import Actor
from camera_registry.errors import BadRequest, FieldError
from camera_registry.importer import ImportWatch
from camera_registry.store.bulk import ImportConnectionLost
from camera_registry.store.heartbeats import heartbeat
from geo.crs import normalise_crs
from geo.errors import UnknownCRS
from ingest.ledger.aside import import_aside
from ingest.ledger.source import import_ledger

ROUTES = RouteTable()

log = logging.getLogger(__name__)
CRS = enum("wgs84", "gcj02", "bd09")
_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".geojson", ".json")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


_PARTIAL = ".upload"  # an upload still arriving, before its job exists


def _upload_dir(app: web.Application) -> Path:
    path: Path = app[SETTINGS].data_dir / "uploads"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _open_private(dest: Path) -> int:
    return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


async def _save_upload(part: BodyPartReader, dest: Path, limit: int) -> int:
    size = 0
    fd = await asyncio.to_thread(_open_private, dest)
    with os.fdopen(fd, "wb") as fh:
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            await asyncio.to_thread(fh.write, chunk)
    return size


async def _receive(
    reader: MultipartReader, upload_dir: Path, limit: int
) -> tuple[Path | None, str]:
    """Save the first 'file' part into `upload_dir`; (None, "") when there is none."""
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            continue
        filename = os.path.basename(part.filename or "ledger.csv")
        if not filename.lower().endswith(_SUFFIXES):
            raise BadRequest(
                f"cannot import {filename!r}",
                [FieldError("file", "use a .csv, .xlsx or .geojson ledger")],
            )
        dest = upload_dir / f"{uuid.uuid4().hex}{_PARTIAL}"  # renamed after its job once it exists
        try:
            await _save_upload(part, dest, limit)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest, filename
    return None, ""


@ROUTES.route(
    "POST",
    "/api/v1/imports",
    "Import a camera ledger (CSV/XLSX/GeoJSON) as a job",
    WRITERS,
    body_content="multipart/form-data",
    params=(
        Param("dry_run", "query", "validate and count, change nothing", FLAG),
        Param("partial", "query", "import the good rows even if some are bad", FLAG),
        Param("crs", "query", "wgs84|gcj02|bd09 for rows without a 坐标系 column", CRS),
    ),
    responses={202: "job accepted; follow Location"},
    tag="imports",
)
async def create_import(request: web.Request) -> web.Response:
    actor = caller(request)
    settings = request.app[SETTINGS]
    q = request.query
    try:
        crs = normalise_crs(q.get("crs", "wgs84"))
    except UnknownCRS as exc:
        raise BadRequest(str(exc), [FieldError("crs", "use wgs84, gcj02 or bd09")]) from None
    if not request.content_type.startswith("multipart/"):
        raise BadRequest(
            "send the ledger as multipart/form-data with a 'file' part",
            [FieldError("file", "missing")],
        )
    upload_dir = await asyncio.to_thread(_upload_dir, request.app)
    try:
        reader = await request.multipart()
        dest, filename = await _receive(reader, upload_dir, settings.max_upload_bytes)
    except (HttpProcessingError, ValueError) as exc:  # aiohttp's multipart parser: bad headers
        raise BadRequest(
            f"the multipart upload is malformed ({exc.__class__.__name__}); send the ledger as "
            "multipart/form-data with one 'file' part, as curl -F file=@ledger.csv does",
            [FieldError("file", "malformed multipart body")],
        ) from None
    if dest is None:
        raise BadRequest("no 'file' part in the upload", [FieldError("file", "missing")])
    jobs = request.app[JOBS]
    dry_run, partial = _flag(q.get("dry_run")), _flag(q.get("partial"))
    try:
        job_id = await jobs.create(actor, filename, dry_run=dry_run, partial=partial, crs=crs)
        # Named after its job, so whoever finds the job ended can find the upload.
        named = upload_dir / f"{job_id}{Path(filename).suffix.lower()}"
        await asyncio.to_thread(dest.rename, named)
    except BaseException:
        await asyncio.to_thread(dest.unlink, missing_ok=True)
        raise
    dest = named
    request.app[BACKGROUND].spawn(
        _run(request.app, actor, job_id, dest, filename, dry_run, partial, crs),
        name=f"import-{job_id}",
    )
    url = f"/api/v1/imports/{job_id}"
    return json_response({"id": job_id, "status": "queued", "url": url}, 202, Location=url)


_LOST = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError,
         asyncpg.PostgresConnectionError,
         asyncpg.exceptions.OperatorInterventionError)  # fmt: skip


async def _run(
    app: web.Application,
    actor: Actor,
    job_id: str,
    path: Path,
    filename: str,
    dry_run: bool,
    partial: bool,
    crs: str,
) -> None:
    jobs = app[JOBS]
    settings = app[SETTINGS]
    stale = settings.job_stale_after_s
    last = 0.0
    watch = ImportWatch()
    queued = True
    stalled = False
    me = asyncio.current_task()

    async def progress(fraction: float, rows: int) -> None:
        """Best effort: with the pool busy (many readers) a progress write is skipped rather
        than queued, so the import itself never waits for it."""
        nonlocal last
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            try:
                await asyncio.wait_for(jobs.progress(job_id, fraction, rows), 2.0)
            except TimeoutError:
                log.info("import %s: progress not recorded (database busy)", job_id)

    class _Queued:
        """While the job waits for its slot it has nothing to prove: it counts as moving."""

        @property
        def backend_pid(self) -> int | None:
            return watch.backend_pid

        def idle_for(self) -> float:
            return 0.0 if queued else watch.idle_for()

    def stall() -> None:
        nonlocal stalled
        stalled = True
        if me is not None:
            me.cancel()

    async def fail(message: str, retry_s: float = 120.0) -> None:
        """Record the failure, retrying while the database comes back (a restart takes
        seconds); the slot is already free. Should the database stay away, the reaper of
        whichever server sees it first closes the job instead."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                await asyncio.wait_for(
                    jobs.finish(job_id, status="failed", rows_total=0, message=message), 10
                )
                break
            except (*_LOST, TimeoutError, asyncpg.PostgresError) as exc:
                if time.monotonic() > deadline:
                    log.warning("could not mark import %s failed: %s", job_id, exc)
                    break
                await asyncio.sleep(1.0)
        app[METRICS].imports.labels("failed").inc()

    try:
        async with (
            heartbeat(app[POOL], "import_jobs", job_id, stale, progress=_Queued(), on_stall=stall),
            app[IMPORT_SLOTS],  # an import takes a core and a connection: queue them
        ):
            queued = False
            watch.step()
            await asyncio.wait_for(jobs.started(job_id), 60)
            # A big ledger is imported by a niced process of its own (`ingest.ledger.aside`):
            # its Python work on this server's loop queued the registry's readers.
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            run = import_aside if size >= settings.import_aside_min_bytes else import_ledger
            report = await run(
                app[POOL],
                app[BOX],
                actor,
                path,
                dry_run=dry_run,
                partial=partial,
                crs=crs,
                chunk_rows=settings.import_chunk_rows,
                import_id=job_id,
                on_progress=progress,
                filename=filename,
                watch=watch,
                statement_timeout_s=settings.import_statement_timeout_s,
            )
        warnings = list(report.warnings)
        if report.errors_truncated:
            warnings.append("only the first bad rows are listed; the file has many more")
        await jobs.finish(
            job_id,
            status=report.status,
            message=report.summary(),
            rows_total=report.rows_total,
            inserted=report.inserted,
            updated=report.updated,
            unchanged=report.unchanged,
            errors=report.errors,
            rows_bad=report.rows_bad,
            warnings=warnings,
        )
        app[METRICS].imports.labels(report.status).inc()
    except asyncio.CancelledError:
        if not stalled:  # the server is stopping: one attempt, shutdown must not wait
            await asyncio.shield(
                fail("the server stopped during the import; run it again", retry_s=0)
            )
            raise
        if me is not None:
            me.uncancel()  # the cancellation was our own watchdog's, and is handled here
        # Our own watchdog: the import stopped moving (its database connection died under
        # it, say). Failing it frees the slot for the next import.
        log.error("import %s made no progress for %.0f s; failed", job_id, stale)
        await fail(
            f"the import made no progress for {stale:.0f} s (the database connection was "
            "probably lost); the registry has all of the file or none of it — run the import "
            "again (re-importing an imported file changes nothing)"
        )
    except ImportConnectionLost as exc:
        log.error("import %s: %s", job_id, exc)
        await fail(str(exc))
    except _LOST as exc:
        log.error("import %s lost its database connection: %s", job_id, exc)
        await fail(
            f"the database connection was lost during the import ({exc.__class__.__name__}: "
            f"{exc}); the registry has all of the file or none of it — run the import again "
            "when the database is back (re-importing an imported file changes nothing)"
        )
    except TimeoutError:
        log.error("import %s timed out waiting for the database", job_id)
        await fail(
            "the database did not answer in time during the import (a statement or COPY "
            "exceeded its limit); nothing was imported — run the import again"
        )
    except Exception as exc:
        log.exception("import %s failed", job_id)
        await fail(f"{exc.__class__.__name__}: {exc}")
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)


def _sweep(entries: list[Path], live: set[str], partials_too: bool) -> list[str]:
    """Remove the uploads of jobs that are not live (and, at startup, unfinished uploads)."""
    removed = []
    for entry in entries:
        stem = entry.name.split(".", 1)[0]
        if entry.name.endswith(_PARTIAL):
            if not partials_too:
                continue
        elif stem in live:
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


async def sweep_uploads(app: web.Application, *, partials_too: bool = False) -> list[str]:
    """One pass: uploads left by a crashed server are removed once their job is no longer
    queued or running (the reaper fails such jobs when their heartbeat goes stale).

    The directory is listed before the live jobs are read: an upload is renamed after its
    job exists, so every upload listed has its job in the answer while that job is live."""
    upload_dir = await asyncio.to_thread(_upload_dir, app)
    entries = await asyncio.to_thread(lambda: list(upload_dir.iterdir()))
    if not entries:
        return []
    rows = await app[POOL].fetch(
        "SELECT id::text FROM import_jobs WHERE status IN ('queued', 'running')", timeout=30
    )
    removed = await asyncio.to_thread(_sweep, entries, {r[0] for r in rows}, partials_too)
    if removed:
        log.warning("removed %d upload(s) of ended import jobs: %s", len(removed), removed)
    return removed


async def uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    """At startup (one server per data dir: every unfinished upload is debris of a crash),
    then as often as the reaper runs."""

    async def loop() -> None:
        first = True
        while True:
            try:
                await sweep_uploads(app, partials_too=first)
                first = False
            except (*_LOST, TimeoutError, asyncpg.PostgresError) as exc:
                log.warning("sweeping old uploads failed: %s", exc)
            await asyncio.sleep(max(app[SETTINGS].job_stale_after_s / 4.0, 0.05))

    task = asyncio.create_task(loop(), name="upload-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


JOB_ID = Param("id", "path", "import job id", UUID, required=True)


@ROUTES.route(
    "GET",
    "/api/v1/imports/{id}",
    "Import job status, progress and the first bad rows",
    WRITERS,
    params=(JOB_ID,),
    responses={200: "the job"},
    tag="imports",
)
async def get_import(request: web.Request) -> web.Response:
    actor = caller(request)
    return json_response(await request.app[JOBS].get(actor, request.match_info["id"]))


@ROUTES.route(
    "GET",
    "/api/v1/imports/{id}/errors",
    "Every bad row of an import, paginated",
    WRITERS,
    params=(
        JOB_ID,
        Param("after", "query", "seq of the last error seen", integer(-1, 2**31 - 1)),
        Param("limit", "query", "page size (1-10000)", integer(1, 10_000)),
    ),
    responses={200: "errors"},
    tag="imports",
)
async def import_errors(request: web.Request) -> web.Response:
    actor = caller(request)
    after = params.integer(request.query, "after", -1, -1, 2**31 - 1)
    limit = params.integer(request.query, "limit", 1000, 1, 10_000)
    items = await request.app[JOBS].errors(
        actor, request.match_info["id"], after=after, limit=limit
    )
    return json_response({"items": items})
