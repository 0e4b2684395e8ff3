"""The aiohttp application: resources owned by `cleanup_ctx`, stopped in reverse order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from api import (
    audit,
    cameras,
    coverage,
    discovery,
    events,
    export,
    gb28181,
    geodata,
    health,
    imports,
    index,
    map,
    streams,
    system,
    tokens,
)
from api.auth import auth_middleware
from api.cascade import admin as cascade_admin
from api.cascade.manager import cascade_ctx
from api.discovery import discovery_ctx
from api.events import events_ctx
from api.gbmetrics import gb28181_metrics_ctx
from api.logs import quiet_unreadable_requests
from api.metrics import Metrics, metrics_middleware
from api.openapi import build_spec
from api.problems import problem_middleware
from api.ptz import onvif_ptz_mover
from api.ratelimit import RateLimiter
from api.routes import add_routes
from api.state import (
    BACKGROUND,
    BOX,
    GB_DEVICES,
    GB_PLAYER,
    IMPORT_SLOTS,
    INBOX,
    JOBS,
    LIMITER,
    MAPGRID,
    METRICS,
    OPENAPI,
    POOL,
    REGISTRY,
    SETTINGS,
    STREAMS,
    THRESHOLDS,
    TOKENS,
    WORKER,
)
from api.tasks import BackgroundTasks, cancel_and_wait
from camera_registry.config import Settings
from camera_registry.store.cameras import Registry
from camera_registry.store.gb28181 import GbDevices
from camera_registry.store.heartbeats import reap_forever
from camera_registry.store.inbox import Inbox
from camera_registry.store.jobs import ImportJobs
from camera_registry.store.mapgrid import MapGrid
from camera_registry.store.runtime import open_database
from camera_registry.store.streams import StreamLinks
from camera_registry.store.tokens import Tokens
from health.frames import FrameSampler
from health.rtsp import ProbeResult
from health.settings import health_runtime
from health.worker import Worker

log = logging.getLogger(__name__)

Startup = Callable[[web.Application], AsyncIterator[None]]
# Every module whose routes the app serves (and the OpenAPI document lists).
ROUTE_MODULES = (
    audit,
    cameras,
    cascade_admin,
    coverage,
    discovery,
    events,
    export,
    gb28181,
    geodata,
    health,
    imports,
    index,
    map,
    streams,
    system,
    tokens,
)


@dataclass(frozen=True)
class Database:
    """Where the app's pool connects; `schema` isolates test modules."""

    dsn: str | None = None  # None: settings.database_url, else the embedded cluster
    schema: str | None = None


def _database_ctx(db: Database) -> Startup:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_database(app[SETTINGS], dsn=db.dsn, schema=db.schema) as opened:
            app[POOL] = opened.pool
            app[BOX] = opened.box
            app[REGISTRY] = Registry(opened.pool, opened.box)
            app[TOKENS] = Tokens(opened.pool)
            app[JOBS] = ImportJobs(opened.pool)
            app[INBOX] = Inbox(opened.pool, opened.box)
            app[GB_DEVICES] = GbDevices(opened.pool, opened.box, app[REGISTRY], app[INBOX])
            app[MAPGRID] = MapGrid(opened.pool)
            app[STREAMS] = StreamLinks(opened.pool, opened.box, app[SETTINGS])
            metrics = app[METRICS]

            def count(result: ProbeResult, seconds: float) -> None:
                metrics.probes.labels(result.failure or "ok").inc()
                metrics.probe_seconds.observe(seconds)

            health = health_runtime(app[SETTINGS].health)
            app[WORKER] = Worker(
                opened.pool, opened.box, health.worker, policy=health.policy, on_probe=count
            )
            app[THRESHOLDS] = health.thresholds
            yield
            await app[STREAMS].audit.close()  # audit rows already taken commit before the pool

    return ctx


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    """Imports, scans and coverage runs: stopped before the contexts they use close."""
    app[BACKGROUND] = BackgroundTasks()
    app[IMPORT_SLOTS] = asyncio.Semaphore(app[SETTINGS].max_concurrent_imports)
    yield
    await app[BACKGROUND].stop()


async def _token_revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """Hear token revocations from every process, so cached verifications drop at once."""
    stop = asyncio.Event()
    task = asyncio.create_task(app[TOKENS].listen(stop), name="token-revocations")
    yield
    stop.set()
    await cancel_and_wait([task])


async def _reaper_ctx(app: web.Application) -> AsyncIterator[None]:
    """Close jobs orphaned by servers that stopped hard: at startup, then periodically."""
    task = asyncio.create_task(
        reap_forever(app[POOL], app[SETTINGS].job_stale_after_s), name="job-reaper"
    )
    yield
    await cancel_and_wait([task])


async def _health_ctx(app: web.Application) -> AsyncIterator[None]:
    """The in-process probe scheduler of `camreg serve` (off with --no-health)."""
    stop = asyncio.Event()
    worker = app[WORKER]
    # frame diagnosis on the rotating daily sample, with the deployment's thresholds
    worker.sampler = FrameSampler(processes=1, thresholds=app[THRESHOLDS])
    # GB/T 28181 channels are diagnosed through the media server: health gets an opener
    player = app.get(GB_PLAYER)
    worker.media_opener = player.opener(app[STREAMS].signer) if player is not None else None
    # 云台失控 checks move PTZ cameras over ONVIF (only with health.diagnosis.ptz_check)
    worker.ptz_mover = onvif_ptz_mover(app[POOL], app[BOX])
    task = asyncio.create_task(worker.run(stop), name="health-worker")
    try:
        yield
    finally:
        stop.set()
        await cancel_and_wait([task])
        worker.sampler.close()
        worker.sampler = None
        worker.media_opener = None
        worker.ptz_mover = None


def create_app(
    settings: Settings,
    db: Database | None = None,
    extra_startup: tuple[Startup, ...] = (),
    *,
    run_health: bool = False,
    run_sip: bool = False,
) -> web.Application:
    quiet_unreadable_requests()
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[metrics_middleware(metrics), problem_middleware, auth_middleware],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LIMITER] = RateLimiter()
    app.cleanup_ctx.append(_database_ctx(db or Database()))
    app.cleanup_ctx.append(_token_revocations_ctx)
    app.cleanup_ctx.append(_background_ctx)
    app.cleanup_ctx.append(_reaper_ctx)
    app.cleanup_ctx.append(imports.uploads_ctx)
    app.cleanup_ctx.append(discovery_ctx)
    app.cleanup_ctx.append(coverage.coverage_ctx)
    app.cleanup_ctx.append(events_ctx)
    app.on_shutdown.append(events.end_streams)
    if run_sip and settings.gb28181.enabled:
        app.cleanup_ctx.append(gb28181.gb28181_ctx)
        app.cleanup_ctx.append(gb28181_metrics_ctx)
    app.cleanup_ctx.append(cascade_ctx)
    if run_health:
        app.cleanup_ctx.append(_health_ctx)
    app.cleanup_ctx.extend(extra_startup)
    app[OPENAPI] = build_spec(add_routes(app, (t.ROUTES for t in ROUTE_MODULES)))
    return app
