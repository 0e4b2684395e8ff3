"""Token administration over HTTP (admins only); the secret is shown once, at creation."""

from __future__ import annotations

from aiohttp import web

from api.auth import ADMINS
from api.models import TokenCreate, parse_body
from api.responses import json_response
from api.routes import UUID, Param, RouteTable, caller
from api.schemas import TokenCreated, TokenList
from api.state import TOKENS

ROUTES = RouteTable()


@ROUTES.route(
    "POST",
    "/api/v1/tokens",
    "Create an API token (the secret is returned once)",
    ADMINS,
    body=TokenCreate,
    responses={201: "id and token"},
    tag="tokens",
    returns=TokenCreated,
)
async def create_token(request: web.Request) -> web.Response:
    actor = caller(request)
    body = await parse_body(request, TokenCreate)
    rec, secret = await request.app[TOKENS].create(
        actor,
        role=body.role,
        name=body.name,
        region=body.region,
        expires_at=body.expires_at,
        rate_limit_per_min=body.rate_limit_per_min,
    )
    return json_response({**rec, "token": secret}, 201)


@ROUTES.route(
    "GET",
    "/api/v1/tokens",
    "List tokens (never their secrets)",
    ADMINS,
    responses={200: "tokens"},
    tag="tokens",
    returns=TokenList,
)
async def list_tokens(request: web.Request) -> web.Response:
    actor = caller(request)
    return json_response({"items": await request.app[TOKENS].all(actor)})


@ROUTES.route(
    "DELETE",
    "/api/v1/tokens/{id}",
    "Revoke a token (effective immediately)",
    ADMINS,
    params=(Param("id", "path", "token id", UUID, required=True),),
    responses={204: "revoked"},
    tag="tokens",
)
async def revoke_token(request: web.Request) -> web.Response:
    actor = caller(request)
    await request.app[TOKENS].revoke(actor, request.match_info["id"])
    return web.Response(status=204)
