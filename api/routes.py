"""The route table: aiohttp registration and the OpenAPI document come from the same list,
so the spec cannot drift from the routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from camera_registry.actor import Role

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


ROUTES: list[Route] = []


def route(
    method: str, path: str, summary: str, roles: tuple[Role, ...] | None, **kw: object
) -> Callable[[Handler], Handler]:
    def deco(handler: Handler) -> Handler:
        ROUTES.append(Route(method, path, handler, summary, roles, **kw))  # type: ignore[arg-type]
        return handler

    return deco


def add_routes(app: web.Application) -> None:
    # Fixed paths first, so /cameras/export is not taken for /cameras/{id}.
    for r in sorted(ROUTES, key=lambda r: "{" in r.path):
        app.router.add_route(r.method, r.path, r.handler)
