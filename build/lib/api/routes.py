"""Route tables: aiohttp registration, role checks and the OpenAPI document come from the same
declarations, so the spec cannot drift from the routes and a handler cannot forget its roles.

Each handler module owns one `RouteTable`; `api/app.py` lists the tables it serves, so what the
app serves is read in one place rather than filled in by import side effects.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from api.auth import ACTOR
from camera_registry.actor import Actor, Role
from camera_registry.errors import Forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" | "path" | "header"
    description: str
    schema: dict[str, object] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


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
            served = handler
            if roles is not None:

                @functools.wraps(handler)
                async def checked(request: web.Request) -> web.StreamResponse:
                    require(request, roles)
                    return await handler(request)

                served = checked
            self.append(Route(method, path, served, summary, roles, **kw))  # type: ignore[arg-type]
            return handler

        return deco


def add_routes(app: web.Application, tables: Iterable[RouteTable]) -> list[Route]:
    """Register every table's routes; fixed paths first, so /cameras/export is not taken for
    /cameras/{id}. Returns the routes in that order (the OpenAPI document lists them)."""
    routes = sorted((r for t in tables for r in t), key=lambda r: "{" in r.path)
    for r in routes:
        app.router.add_route(r.method, r.path, r.handler)
    return routes
