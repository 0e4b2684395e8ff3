"""RFC 9457 problem+json responses, mapped from the packages' error hierarchies."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from api.models import InvalidBody
from camera_registry.demo.geodata import DemoDataError
from camera_registry.errors import (
    BadRequest,
    ConfigError,
    DatabaseUnavailable,
    DuplicateCamera,
    EmbeddedDatabaseBusy,
    FieldError,
    Forbidden,
    NotFound,
    PreconditionRequired,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
    VersionConflict,
)
from camera_registry.planning.coverage_policy import PolicyInvalid
from camera_registry.planning.policy_model import PolicyError
from camera_registry.planning.runs import EmptyRegion, RunFailed
from camera_registry.store.upstreams import DuplicateUpstream
from geo.errors import GeoError
from health.errors import DiagnosisUnavailable, HealthError
from ingest.errors import IngestError
from ingest.gb28181.errors import (
    DeviceNotRegistered,
    Gb28181Error,
    RequestRefused,
    TransactionTimeout,
)

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Every package's error base, and the specific classes that answer otherwise: the one place
# where domain errors meet HTTP. An error answers with the entry of its nearest class.
STATUS: dict[type[Exception], tuple[int, str]] = {
    RegistryError: (500, "Registry error"),
    ValidationFailed: (422, "Invalid camera data"),
    InvalidBody: (422, "Invalid request body"),
    BadRequest: (400, "Bad request"),
    NotFound: (404, "Not found"),
    Forbidden: (403, "Forbidden"),
    Unauthorized: (401, "Unauthorized"),
    TooManyRequests: (429, "Too many requests"),
    DuplicateCamera: (409, "Duplicate camera"),
    DuplicateUpstream: (409, "Duplicate upstream"),
    VersionConflict: (412, "Version conflict"),
    PreconditionRequired: (428, "Precondition required"),
    ConfigError: (500, "Configuration error"),
    DatabaseUnavailable: (503, "Database unavailable"),
    EmbeddedDatabaseBusy: (503, "Embedded database already in use"),
    PolicyError: (422, "Invalid layout policy"),
    PolicyInvalid: (422, "Invalid layout policy"),
    EmptyRegion: (422, "Nothing to measure"),
    RunFailed: (500, "Coverage run failed"),
    DemoDataError: (400, "No demo data"),
    IngestError: (422, "Unreadable ledger"),
    Gb28181Error: (502, "GB/T 28181 device error"),
    DeviceNotRegistered: (409, "Device not registered"),
    TransactionTimeout: (504, "Device did not answer"),
    RequestRefused: (502, "Device refused the request"),
    GeoError: (422, "Invalid coordinates or geometry"),
    DiagnosisUnavailable: (503, "Frame diagnosis unavailable"),
    HealthError: (422, "Invalid health input"),
}
DOMAIN_ERRORS = (RegistryError, IngestError, GeoError, HealthError)


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and title of a domain error (its nearest class in `STATUS`)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500, "Internal error"


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def problem(
    status: int, title: str, detail: str, errors: Iterable[FieldError] = (), **extra: Any
) -> web.Response:
    body: dict[str, Any] = {
        "type": f"https://camera-registry.example/problems/{status}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [e.as_dict() for e in errors],
    }
    body.update(extra)
    return web.Response(status=status, text=dumps(body), content_type=PROBLEM)


def _http_problem(exc: web.HTTPException) -> web.Response:
    detail = {
        404: "no such endpoint; see /api/v1/openapi.json for the routes",
        405: f"method not allowed here; allowed: {', '.join(getattr(exc, 'allowed_methods', ()))}",
        413: "the request body is too large; send a smaller one "
        "(ledgers go to POST /api/v1/imports)",
    }.get(exc.status, exc.text or exc.reason)
    resp = problem(exc.status, exc.reason, detail)
    for key in ("Allow", "Retry-After", "WWW-Authenticate"):
        if key in exc.headers:
            resp.headers[key] = exc.headers[key]
    return resp


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DOMAIN_ERRORS as exc:
        status, title = status_of(exc)
        if isinstance(exc, RegistryError):
            resp = problem(status, title, exc.detail, exc.errors)
        else:
            resp = problem(status, title, str(exc))
        if isinstance(exc, Unauthorized):
            resp.headers["WWW-Authenticate"] = 'Bearer realm="camreg"'
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = exc.retry_after
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_problem(exc)
