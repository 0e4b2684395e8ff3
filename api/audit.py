"""The audit trail for admins: filters, cursor pagination, CSV for the province's reviewers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from typing import Any

from aiohttp import web

from api import params
from api.auth import ADMINS
from api.responses import json_response
from api.routes import DATETIME, UUID, Param, RouteTable, caller, enum, integer, text
from api.state import POOL
from camera_registry.errors import BadRequest, FieldError
from camera_registry.store import audit

ROUTES = RouteTable()

_COLUMNS = [
    "id",
    "at",
    "actor",
    "token_id",
    "action",
    "camera_id",
    "region_code",
    "remote_addr",
    "before",
    "after",
    "detail",
]


def _time(query: Any, name: str) -> dt.datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"bad {name}", [FieldError(name, "use ISO 8601, e.g. 2026-11-01T00:00:00+08:00")]
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@ROUTES.route(
    "GET",
    "/api/v1/audit",
    "The audit trail, newest first (JSON or CSV)",
    ADMINS,
    params=(
        Param("actor", "query", "who, e.g. token:规划科", text(200)),
        Param("camera", "query", "camera UUID", UUID),
        Param("action", "query", "e.g. camera.update, token.create, import.commit", text(100)),
        Param("from", "query", "ISO 8601 start (inclusive)", DATETIME),
        Param("to", "query", "ISO 8601 end (exclusive)", DATETIME),
        Param("limit", "query", "page size (1-10000)", integer(1, 10_000)),
        Param("cursor", "query", "next_cursor of the previous page", integer(0, 2**62)),
        Param("format", "query", "json (default) or csv", enum("json", "csv")),
    ),
    responses={200: "audit records"},
    tag="audit",
)
async def list_audit(request: web.Request) -> web.StreamResponse:
    actor = caller(request)
    q = request.query
    camera = None
    if q.get("camera"):
        try:
            camera = uuid.UUID(q["camera"])
        except ValueError:
            raise BadRequest("bad camera", [FieldError("camera", "use a camera UUID")]) from None
    cursor = params.integer(q, "cursor", 0, 0, 2**62) or None
    limit = params.integer(q, "limit", 100, 1, 10_000)
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("bad format", [FieldError("format", "use json or csv")])
    rows = await audit.query(
        request.app[POOL],
        actor,
        who=q.get("actor"),
        camera_id=camera,
        action=q.get("action"),
        since=_time(q, "from"),
        until=_time(q, "to"),
        before_id=cursor,
        limit=limit,
    )
    nxt = str(rows[-1]["id"]) if len(rows) == limit else None
    if fmt == "json":
        return json_response({"items": rows, "next_cursor": nxt})
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(_COLUMNS)
    for r in rows:
        w.writerow(
            [
                json.dumps(r[c], ensure_ascii=False, default=str)
                if isinstance(r[c], dict)
                else ("" if r[c] is None else str(r[c]))
                for c in _COLUMNS
            ]
        )
    headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
    if nxt:
        headers["X-Next-Cursor"] = nxt
    return web.Response(
        body=("\ufeff" + out.getvalue()).encode(),
        headers=headers,
        content_type="text/csv",
        charset="utf-8",
    )
