"""Route tables: aiohttp registration, role checks and the OpenAPI document come from the same
declarations, so the spec cannot drift from the routes and a handler cannot forget its roles.

Each handler module owns one `RouteTable`; `api/app.py` lists the tables it serves, so what the
app serves is read in one place rather than filled in by import side effects.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from api.auth import ACTOR
from camera_registry.actor import Actor, Role
from camera_registry.errors import BadRequest, FieldError, Forbidden, NotFound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# Parameter schemas shared by the routes: the OpenAPI document shows them and `Param.problem`
# enforces them before the handler runs, so what the spec says is refused is refused.
UUID = {"type": "string", "format": "uuid"}
REGION_PREFIX = {"type": "string", "pattern": "^[0-9]{2,6}$"}
NUMBER = r"-?[0-9]+(\.[0-9]+)?"
BBOX = {"type": "string", "pattern": f"^{NUMBER}(,{NUMBER}){{3}}$"}
LONLAT = {"type": "string", "pattern": f"^{NUMBER},{NUMBER}$"}
LEVELS = {"type": "string", "pattern": "^[1239](,[1239])*$"}
FLAG = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no", "on", "off"]}
DATE = {"type": "string", "format": "date"}
DATETIME = {"type": "string", "format": "date-time"}


def enum(*values: str) -> dict[str, object]:
    return {"type": "string", "enum": list(values)}


def listed(*values: str) -> dict[str, object]:
    """A comma-separated list drawn from `values`."""
    one = "|".join(re.escape(v) for v in values)
    return {"type": "string", "pattern": f"^({one})(,({one}))*$"}


def integer(low: int, high: int) -> dict[str, object]:
    return {"type": "integer", "minimum": low, "maximum": high}


def number(low: float, high: float) -> dict[str, object]:
    return {"type": "number", "minimum": low, "maximum": high}


def text(max_length: int) -> dict[str, object]:
    return {"type": "string", "maxLength": max_length}


def _violation(schema: dict[str, Any], raw: str) -> str | None:
    """What is wrong with `raw` under `schema` (the subset of JSON Schema our params use)."""
    kind = schema.get("type", "string")
    value: float
    if kind in ("integer", "number"):
        try:
            value = int(raw) if kind == "integer" else float(raw)
        except ValueError:
            return "expected a whole number" if kind == "integer" else "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be {low}–{high}"
        if "enum" in schema and value not in schema["enum"]:
            return f"use one of {', '.join(map(str, schema['enum']))}"
        return None
    if kind == "boolean":
        return None if raw in ("true", "false") else "use true or false"
    if "enum" in schema and raw not in schema["enum"]:
        return f"use one of {', '.join(schema['enum'])}"
    if len(raw) > schema.get("maxLength", 10_000):
        return f"at most {schema['maxLength']} characters"
    if "pattern" in schema and not re.search(schema["pattern"], raw):
        return f"does not match {schema['pattern']}"
    fmt = schema.get("format")
    try:
        if fmt == "uuid":
            uuid_ok = re.fullmatch(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}", raw)
            if not uuid_ok:
                return "expected a UUID"
        elif fmt == "date":
            dt.date.fromisoformat(raw)
        elif fmt == "date-time":
            dt.datetime.fromisoformat(raw)
    except ValueError:
        return f"expected an ISO 8601 {fmt}"
    return None


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "path" | "header"
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False

    def check(self, request: web.Request) -> None:
        """Refuse a value the schema refuses: a path that names nothing is a 404, any other
        parameter a 400 naming it."""
        source: Any = {"path": request.match_info, "query": request.query}.get(
            self.where, request.headers
        )
        raw = source.get(self.name)
        if raw is None:
            if self.required and self.where == "query":
                raise BadRequest(
                    f"query parameter {self.name} is required",
                    [FieldError(self.name, "is required")],
                )
            return  # a missing header is the handler's to answer (428 for If-Match)
        if self.where == "query" and len(request.query.getall(self.name)) > 1:
            raise BadRequest(
                f"query parameter {self.name} is given more than once",
                [FieldError(self.name, "give it once")],
            )
        problem = _violation(dict(self.schema), raw)
        if problem is None:
            return
        if self.where == "path":
            raise NotFound(f"no such {self.description}: {self.name} {problem}")
        raise BadRequest(
            f"bad {self.where} parameter {self.name}: {problem}", [FieldError(self.name, problem)]
        )


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    roles: tuple[Role, ...] | None  # None = no token needed
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_content: str = "application/json"
    responses: dict[int, str] = field(default_factory=dict)
    tag: str = "cameras"
    returns: type[BaseModel] | None = None  # the JSON body of its 2xx answer


def require(request: web.Request, roles: tuple[Role, ...]) -> Actor:
    """The caller, if its role is one of `roles` (the auth middleware identified it)."""
    actor: Actor = request[ACTOR]
    if actor.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"role {actor.role.value} may not do this; it needs one of: {allowed}")
    return actor


def caller(request: web.Request) -> Actor:
    """The caller of a route whose roles `RouteTable.route` has already checked."""
    actor: Actor = request[ACTOR]
    return actor


class RouteTable(list[Route]):
    """One module's routes, declared with `@table.route(...)`."""

    def route(
        self, method: str, path: str, summary: str, roles: tuple[Role, ...] | None, **kw: object
    ) -> Callable[[Handler], Handler]:
        def deco(handler: Handler) -> Handler:
            params: tuple[Param, ...] = kw.get("params", ())  # type: ignore[assignment]

            @functools.wraps(handler)
            async def checked(request: web.Request) -> web.StreamResponse:
                if roles is not None:
                    require(request, roles)
                for p in params:
                    p.check(request)
                return await handler(request)

            self.append(Route(method, path, checked, summary, roles, **kw))  # type: ignore[arg-type]
            return handler

        return deco


def add_routes(app: web.Application, tables: Iterable[RouteTable]) -> list[Route]:
    """Register every table's routes; fixed paths first, so /cameras/export is not taken for
    /cameras/{id}. Returns the routes in that order (the OpenAPI document lists them)."""
    routes = sorted((r for t in tables for r in t), key=lambda r: "{" in r.path)
    paths = {r.path for r in routes}
    for r in routes:
        app.router.add_route(r.method, _router_path(r.path, paths), r.handler)
    return routes


def _router_path(path: str, paths: set[str]) -> str:
    """`path` for aiohttp's router: a `{name}` segment that shares its place with fixed
    segments (`/cameras/{id}` beside `/cameras/export`) does not match them, so a request
    for `/cameras/export` is answered (405 and its Allow header included) by that route only."""
    parts = path.split("/")
    for i, seg in enumerate(parts):
        if not seg.startswith("{") or ":" in seg:
            continue
        fixed = sorted(
            {
                q.split("/")[i]
                for q in paths
                if q.split("/")[:i] == parts[:i]
                and len(q.split("/")) > i
                and not q.split("/")[i].startswith("{")
            }
        )
        if fixed:
            taken = "|".join(re.escape(f) for f in fixed)
            parts[i] = f"{{{seg[1:-1]}:(?!(?:{taken})$)[^{{}}/]+}}"
    return "/".join(parts)
