"""JSON answers of every handler, one shape for all (problem+json lives in `api.problems`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.problems import dumps


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, **more: str
) -> web.Response:
    return web.Response(
        text=dumps(data),
        status=status,
        content_type="application/json",
        headers={**(headers or {}), **more},
    )


def json_text_response(text: str | bytes, status: int = 200, **headers: str) -> web.Response:
    """An answer whose JSON was built elsewhere (by PostgreSQL): sent as it is (UTF-8)."""
    body = text if isinstance(text, bytes) else text.encode()
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)
