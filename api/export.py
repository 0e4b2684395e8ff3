"""Ledger export, streamed: the same columns the importer reads, so exports re-import unchanged."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

import ingest.ledger.write as ledger_write
from api import params
from api.auth import READERS
from api.cameras import FILTERS
from api.routes import Param, RouteTable, caller, enum
from api.state import REGISTRY
from camera_registry.errors import BadRequest, FieldError
from camera_registry.fields import FIELDS, SECRET_FIELDS

ROUTES = RouteTable()

EXPORT_FIELDS = [f.name for f in FIELDS if f.name not in SECRET_FIELDS and f.name != "crs"]
XLSX_MAX_ROWS = 1_048_575  # Excel's sheet limit, less the header
_BATCH = 2000


def _record(cam: dict[str, Any]) -> dict[str, Any]:
    streams = cam.get("streams") or {}
    cam["stream_main"], cam["stream_sub"] = streams.get("main"), streams.get("sub")
    cam["snapshot"] = streams.get("snapshot")
    return cam


async def batches(it: AsyncIterator[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    async for cam in it:
        batch.append(_record(cam))
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@ROUTES.route(
    "GET",
    "/api/v1/cameras/export",
    "Export cameras as a ledger (csv, xlsx, geojson)",
    READERS,
    params=(
        *FILTERS,
        Param("format", "query", "csv (default), xlsx or geojson", enum("csv", "xlsx", "geojson")),
    ),
    responses={200: "the ledger file"},
)
async def export_cameras(request: web.Request) -> web.StreamResponse:
    actor = caller(request)
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "xlsx", "geojson"):
        raise BadRequest(
            "unknown export format", [FieldError("format", "use csv, xlsx or geojson")]
        )
    f = params.camera_filter(request.query)
    cameras = request.app[REGISTRY].iterate(actor, f)
    name = f"cameras-{f.region or 'all'}.{fmt}"
    if fmt == "xlsx":
        return await _xlsx(request, cameras, name)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/geo+json",
            "Content-Disposition": f'attachment; filename="{name}"',
        }
    )
    await resp.prepare(request)
    if fmt == "csv":
        await resp.write(ledger_write.csv_header(EXPORT_FIELDS))
        async for batch in batches(cameras):
            await resp.write(ledger_write.csv_rows(batch, EXPORT_FIELDS))
    else:
        await resp.write(ledger_write.geojson_prefix())
        first = True
        async for batch in batches(cameras):
            await resp.write(ledger_write.geojson_features(batch, EXPORT_FIELDS, first=first))
            first = False
        await resp.write(ledger_write.geojson_suffix())
    await resp.write_eof()
    return resp


async def _xlsx(
    request: web.Request, cameras: AsyncIterator[dict[str, Any]], name: str
) -> web.StreamResponse:
    rows: list[dict[str, Any]] = []
    async for batch in batches(cameras):
        rows.extend(batch)
        if len(rows) > XLSX_MAX_ROWS:
            raise BadRequest(
                "too many cameras for one Excel sheet",
                [FieldError("format", "use format=csv, or narrow the filters")],
            )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        await asyncio.to_thread(ledger_write.write_xlsx, path, rows, EXPORT_FIELDS)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "Content-Disposition": f'attachment; filename="{name}"',
            }
        )
        await resp.prepare(request)
        with path.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, 1 << 20):
                await resp.write(chunk)
        await resp.write_eof()
        return resp
