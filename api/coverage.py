"""Coverage runs over HTTP: start (or reuse) a run, follow it, read its gaps, summary, proposals.

Runs are background tasks owned by :func:`coverage_ctx` (one app cleanup context): at most
``RUNS_AT_ONCE`` compute at a time, on a process pool the context owns, and a shutdown cancels
them, which marks them failed. Each run, queued or computing, keeps a heartbeat on its row, so
a server killed hard leaves runs that any other process closes (camera_registry.heartbeats);
an identical request joins the live run instead of starting another. Handlers translate HTTP
only; the SQL is in :mod:`camera_registry.coverage_run`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api import params
from api.auth import READERS, WRITERS
from api.models import parse_body
from api.responses import json_response
from api.routes import BBOX, UUID, Param, RouteTable, caller, enum, integer, number
from api.state import BACKGROUND, POOL, SETTINGS
from camera_registry.actor import Role
from camera_registry.errors import BadRequest, FieldError, RegistryError
from camera_registry.planning.runs import (
    MAX_PROPOSALS,
    CoverageRuns,
    execute_run,
    process_pool,
    summary_csv,
)
from camera_registry.store.db import CONNECTION_LOST
from camera_registry.store.heartbeats import heartbeat

ROUTES = RouteTable()

log = logging.getLogger(__name__)

# Who may start runs: planners (it is their question: where are we blind?), and the roles that
# change the registry. Commanders read results; a run costs minutes of two cores.
STARTERS: Final = (Role.PLANNER, *WRITERS)
RUNS_AT_ONCE: Final = 1
GEOJSON: Final = "application/geo+json"
KINDS: Final = ("cell", "village", "junction")


@dataclass
class CoverageService:
    runs: CoverageRuns
    executor: ProcessPoolExecutor
    slots: asyncio.Semaphore


COVERAGE = web.AppKey("coverage", CoverageService)


async def coverage_ctx(app: web.Application) -> AsyncIterator[None]:
    """Own the worker processes (the run tasks are the app's `BACKGROUND`, stopped first)."""
    service = CoverageService(
        CoverageRuns(app[POOL], app[SETTINGS].job_stale_after_s),
        process_pool(2),
        asyncio.Semaphore(RUNS_AT_ONCE),
    )
    app[COVERAGE] = service
    try:
        yield
    finally:
        await app[BACKGROUND].stop()  # no run may wait on the pool being shut down
        await asyncio.to_thread(service.executor.shutdown, wait=True, cancel_futures=True)


async def _run(service: CoverageService, run_id: str) -> None:
    runs = service.runs
    try:
        async with (
            heartbeat(runs.pool, "coverage_runs", run_id, runs.stale_after_s),
            service.slots,
        ):
            await execute_run(runs.pool, run_id, executor=service.executor)
    except asyncio.CancelledError:
        # Still queued when the server stopped (a running one marks itself failed).
        await asyncio.shield(
            service.runs.fail_unfinished(
                [run_id], "interrupted: the server stopped before the run finished; ask again"
            )
        )
        raise
    except RegistryError:
        pass  # stored on the run row as its error
    except CONNECTION_LOST:
        pass  # stored on the run row too (execute_run logged it)
    except Exception:
        log.exception("coverage run %s failed", run_id)


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(description="region code or prefix: 14 (province), 1401, 140105")
    policy: dict[str, Any] | None = Field(
        default=None, description="layout policy (as the TOML file); defaults when absent"
    )
    proposals: int = Field(default=200, ge=0, le=MAX_PROPOSALS, description="sites to propose")


RUN_ID = Param("id", "path", "coverage run id", UUID, required=True)


@ROUTES.route(
    "POST",
    "/api/v1/coverage/runs",
    "Start a coverage run for a region (or join the live one, or reuse the finished one, for "
    "unchanged inputs)",
    STARTERS,
    body=RunCreate,
    responses={
        202: "run queued (joined: false), or the queued/running run for the same inputs "
        "(joined: true); follow Location",
        200: "finished run reused (reused: true)",
    },
    tag="coverage",
)
async def create_run(request: web.Request) -> web.Response:
    actor = caller(request)
    body = await parse_body(request, RunCreate)
    service = request.app[COVERAGE]
    run, outcome = await service.runs.request(actor, body.region, body.policy, body.proposals)
    url = f"/api/v1/coverage/runs/{run['id']}"
    if outcome == "reused":
        return json_response(
            {**run, "reused": True, "joined": False, "url": url}, 200, Location=url
        )
    if outcome == "joined":  # its owner (this process or another) runs it
        return json_response(
            {**run, "reused": False, "joined": True, "url": url}, 202, Location=url
        )
    request.app[BACKGROUND].spawn(_run(service, run["id"]), name=f"coverage-{run['id']}")
    return json_response({**run, "reused": False, "joined": False, "url": url}, 202, Location=url)


@ROUTES.route(
    "GET",
    "/api/v1/coverage/runs/{id}",
    "A coverage run: status, progress, summary",
    READERS,
    params=(RUN_ID,),
    responses={200: "the run"},
    tag="coverage",
)
async def get_run(request: web.Request) -> web.Response:
    actor = caller(request)
    return json_response(await request.app[COVERAGE].runs.get(actor, request.match_info["id"]))


@ROUTES.route(
    "GET",
    "/api/v1/coverage/runs/{id}/gaps",
    "Gaps of a run as GeoJSON (merged cells, villages, junctions), highest priority first",
    READERS,
    params=(
        RUN_ID,
        Param("bbox", "query", "minlon,minlat,maxlon,maxlat (WGS-84)", BBOX),
        Param("min_priority", "query", "only gaps at least this important", number(-1e12, 1e12)),
        Param("kind", "query", "cell, village or junction", enum(*KINDS)),
        Param("limit", "query", "at most this many (default 10000)", integer(1, 100_000)),
    ),
    responses={200: "GeoJSON FeatureCollection"},
    tag="coverage",
)
async def run_gaps(request: web.Request) -> web.Response:
    actor = caller(request)
    q = request.query
    bbox = params.floats(q, "bbox", 4)
    if bbox is not None and not (
        -180 <= bbox[0] < bbox[2] <= 180 and -90 <= bbox[1] < bbox[3] <= 90
    ):
        raise BadRequest(
            "bad query parameter bbox",
            [FieldError("bbox", "use minlon,minlat,maxlon,maxlat with min < max")],
        )
    min_priority: float | None = None
    if q.get("min_priority") is not None:
        try:
            min_priority = float(q["min_priority"])
        except ValueError:
            min_priority = math.nan
        if not math.isfinite(min_priority):
            raise BadRequest(
                "bad query parameter min_priority",
                [FieldError("min_priority", "expected a number, e.g. 100")],
            )
    kind = q.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest(
            "bad query parameter kind", [FieldError("kind", "use cell, village or junction")]
        )
    limit = params.integer(q, "limit", 10_000, 1, 100_000)
    text = await request.app[COVERAGE].runs.gaps_geojson(
        actor,
        request.match_info["id"],
        bbox=bbox,  # type: ignore[arg-type]
        min_priority=min_priority,
        kind=kind,
        limit=limit,
    )
    return web.Response(text=text, content_type=GEOJSON)


@ROUTES.route(
    "GET",
    "/api/v1/coverage/runs/{id}/summary",
    "Per-region summary rows of a run (JSON, or CSV with format=csv)",
    READERS,
    params=(RUN_ID, Param("format", "query", "json (default) or csv", enum("json", "csv"))),
    responses={200: "rows per county"},
    tag="coverage",
)
async def run_summary(request: web.Request) -> web.Response:
    actor = caller(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("unknown format", [FieldError("format", "use json or csv")])
    run_id = request.match_info["id"]
    rows = await request.app[COVERAGE].runs.summary_rows(actor, run_id)
    if fmt == "csv":
        return web.Response(
            text=summary_csv(rows),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="coverage-{run_id}.csv"'},
        )
    return json_response({"run_id": run_id, "items": rows})


@ROUTES.route(
    "GET",
    "/api/v1/coverage/runs/{id}/proposals",
    "Proposed camera sites of a run as GeoJSON points, in pick order",
    READERS,
    params=(RUN_ID,),
    responses={200: "GeoJSON FeatureCollection"},
    tag="coverage",
)
async def run_proposals(request: web.Request) -> web.Response:
    actor = caller(request)
    text = await request.app[COVERAGE].runs.proposals_geojson(actor, request.match_info["id"])
    return web.Response(text=text, content_type=GEOJSON)
