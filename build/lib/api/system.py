"""Liveness, metrics and the OpenAPI document (no token needed)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from api.responses import json_response
from api.routes import RouteTable
from api.state import METRICS, OPENAPI, POOL
from health import store as health_store
from health.status import STATUSES

ROUTES = RouteTable()


@ROUTES.route(
    "GET",
    "/healthz",
    "Liveness and database reachability",
    None,
    tag="system",
    responses={200: "ok", 503: "database unreachable"},
)
async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[POOL].fetchval("SELECT 1", timeout=2)
    except Exception as exc:
        return json_response({"status": "unhealthy", "database": str(exc)}, 503)
    return json_response({"status": "ok", "database": "ok"})


@ROUTES.route(
    "GET",
    "/metrics",
    "Prometheus metrics",
    None,
    tag="system",
    responses={200: "text exposition format"},
)
async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    pool = request.app[POOL]
    m.pool_size.set(pool.get_size())
    m.pool_idle.set(pool.get_idle_size())
    try:
        leases, by_status = await health_store.gauges(pool)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        pass  # the database is down or slow: /healthz says so; the process metrics still serve
    else:
        m.leases.set(leases)
        for status in STATUSES:  # every status, zeros included, so a series never vanishes
            m.cameras.labels(status).set(by_status.get(status, 0))
    return web.Response(
        body=m.render(), content_type=m.content_type, headers={"Cache-Control": "no-store"}
    )


@ROUTES.route(
    "GET",
    "/api/v1/openapi.json",
    "This document",
    None,
    tag="system",
    responses={200: "OpenAPI 3.1"},
)
async def openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])
