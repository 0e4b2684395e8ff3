"""Ledger imports over HTTP: upload, then follow the job (progress, every bad row)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from api import params
from api.auth import WRITERS
from api.responses import json_response
from api.routes import FLAG, UUID, Param, RouteTable, caller, enum, integer
from api.state import BACKGROUND, BOX, IMPORT_SLOTS, JOBS, METRICS, POOL, SETTINGS
from camera_registry.actor import Actor
from camera_registry.errors import BadRequest, FieldError
from camera_registry.store.heartbeats import heartbeat
from geo.crs import normalise_crs
from geo.errors import UnknownCRS
from ingest.ledger.source import import_ledger

ROUTES = RouteTable()

log = logging.getLogger(__name__)
CRS = enum("wgs84", "gcj02", "bd09")
_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".geojson", ".json")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


async def _save_upload(part: BodyPartReader, dest: Path, limit: int) -> int:
    size = 0
    with dest.open("wb") as fh:
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
        dest = upload_dir / f"{uuid.uuid4().hex}{Path(filename).suffix.lower()}"
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
    upload_dir = settings.data_dir / "uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
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
    job_id = await jobs.create(actor, filename, dry_run=dry_run, partial=partial, crs=crs)
    request.app[BACKGROUND].spawn(
        _run(request.app, actor, job_id, dest, filename, dry_run, partial, crs),
        name=f"import-{job_id}",
    )
    url = f"/api/v1/imports/{job_id}"
    return json_response({"id": job_id, "status": "queued", "url": url}, 202, Location=url)


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
    last = 0.0

    async def progress(fraction: float, rows: int) -> None:
        nonlocal last
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            await jobs.progress(job_id, fraction, rows)

    try:
        async with (
            heartbeat(app[POOL], "import_jobs", job_id, app[SETTINGS].job_stale_after_s),
            app[IMPORT_SLOTS],  # an import takes a core and a connection: queue them
        ):
            await jobs.started(job_id)
            report = await import_ledger(
                app[POOL],
                app[BOX],
                actor,
                path,
                dry_run=dry_run,
                partial=partial,
                crs=crs,
                chunk_rows=app[SETTINGS].import_chunk_rows,
                import_id=job_id,
                on_progress=progress,
                filename=filename,
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
        await asyncio.shield(
            jobs.finish(
                job_id,
                status="failed",
                rows_total=0,
                message="the server stopped during the import; run it again",
            )
        )
        raise
    except Exception as exc:
        log.exception("import %s failed", job_id)
        await jobs.finish(
            job_id, status="failed", rows_total=0, message=f"{exc.__class__.__name__}: {exc}"
        )
        app[METRICS].imports.labels("failed").inc()
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)


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
