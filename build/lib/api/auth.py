"""Bearer-token authentication and role checks.

The middleware only identifies the caller; each route declares the roles it admits and
`api.routes` checks them before the handler runs; the store applies the region scope in its SQL.
"""

from __future__ import annotations

from aiohttp import web

from api.problems import Handler
from api.ratelimit import RateLimiter
from api.state import LIMITER, TOKENS
from camera_registry.actor import Actor, Role
from camera_registry.errors import TooManyRequests, Unauthorized

ACTOR = web.RequestKey("actor", Actor)
PUBLIC_PATHS = frozenset({"/", "/healthz", "/metrics", "/api/v1/openapi.json"})
# Media relays authenticate with their own secret, checked by those handlers.
RELAY_PREFIXES = ("/api/v1/hooks/", "/api/v1/relay/")

READERS = (Role.TECHNICIAN, Role.PLANNER, Role.COMMANDER, Role.ADMIN)
WRITERS = (Role.TECHNICIAN, Role.ADMIN)
ADMINS = (Role.ADMIN,)
STREAMERS = (Role.COMMANDER, Role.ADMIN)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.path in PUBLIC_PATHS
        or not request.path.startswith("/api/")
        or request.path.startswith(RELAY_PREFIXES)
    ):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized(
            "send an API token as 'Authorization: Bearer <token>' "
            "(create one with `camreg token create --role ROLE`)"
        )
    actor = await request.app[TOKENS].authenticate(secret.strip(), request.remote)
    if actor.rate_limit is not None and actor.token_id is not None:
        wait = request.app[LIMITER].take(actor.token_id, actor.rate_limit)
        if wait > 0:
            raise TooManyRequests(
                f"token {actor.name} is limited to {actor.rate_limit} requests a minute; "
                f"retry in {RateLimiter.retry_after(wait)} s",
                retry_after=RateLimiter.retry_after(wait),
            )
    request[ACTOR] = actor
    return await handler(request)
