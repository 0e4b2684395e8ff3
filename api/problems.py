"""RFC 9457 problem+json responses, mapped from the packages' error hierarchies."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from camera_registry.errors import FieldError, RegistryError, TooManyRequests
from ingest.errors import IngestError

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    except RegistryError as exc:
        resp = problem(exc.status, exc.title, exc.detail, exc.errors)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="camreg"'
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = exc.retry_after
        return resp
    except IngestError as exc:
        return problem(422, "Unreadable ledger", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_problem(exc)
