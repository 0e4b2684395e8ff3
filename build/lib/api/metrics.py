"""Prometheus metrics: one registry per app, so tests can run several apps in one process."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.problems import Handler


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "camreg_http_requests",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "camreg_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.pool_size = Gauge(
            "camreg_db_pool_size", "database connections open", registry=self.registry
        )
        self.pool_idle = Gauge(
            "camreg_db_pool_idle", "database connections idle", registry=self.registry
        )
        self.probes = Counter(
            "camreg_probes", "stream probes by result", ["result"], registry=self.registry
        )
        self.probe_seconds = Histogram(
            "camreg_probe_duration_seconds",
            "stream probe duration (connect to DESCRIBE)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
            registry=self.registry,
        )
        self.leases = Gauge(
            "camreg_leases_outstanding",
            "cameras leased to probe workers right now (all workers)",
            registry=self.registry,
        )
        self.cameras = Gauge(
            "camreg_cameras", "registered cameras by status", ["status"], registry=self.registry
        )
        self.imports = Counter(
            "camreg_imports", "ledger imports finished", ["status"], registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST.split(";")[0]


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - start)

    return middleware
