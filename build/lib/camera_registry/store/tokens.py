"""API tokens: random secrets shown once, stored as SHA-256 digests, revocable at once."""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

import asyncpg

from camera_registry.actor import Actor, Role
from camera_registry.crypto import TOKEN_PREFIX, new_token, token_digest
from camera_registry.errors import BadRequest, FieldError, NotFound, Unauthorized
from camera_registry.gbid import region_code_problem
from camera_registry.store import audit

_COLUMNS = (
    "id, name, role, region_prefix, created_at, created_by, expires_at, revoked_at, "
    "last_used_at, rate_limit_per_min"
)


def _out(rec: asyncpg.Record) -> dict[str, Any]:
    return {
        k: (v.isoformat() if isinstance(v, dt.datetime) else str(v) if k == "id" else v)
        for k, v in rec.items()
    }


def check_scope(region: str | None) -> str | None:
    if region is None or region == "":
        return None
    padded = region.ljust(6, "0")
    if not region.isdigit() or not 2 <= len(region) <= 6 or region_code_problem(padded):
        raise BadRequest(
            f"region scope {region!r} is not a region-code prefix",
            [FieldError("region", "use 2-6 leading digits of a GB/T 2260 code, e.g. 14 or 1401")],
        )
    return region


class Tokens:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self,
        actor: Actor,
        *,
        role: Role,
        name: str,
        region: str | None = None,
        expires_at: dt.datetime | None = None,
        rate_limit_per_min: int | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new token's record and its secret (which is not stored and cannot be shown again)."""
        region = check_scope(region)
        if actor.scope is not None and (region is None or not region.startswith(actor.scope)):
            raise BadRequest(
                "a scoped admin can only create tokens inside its own scope",
                [FieldError("region", f"use {actor.scope} or a longer prefix")],
            )
        secret, digest = new_token()
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await conn.fetchrow(
                f"""INSERT INTO api_tokens (name, role, region_prefix, secret_hash, created_by,
                                            expires_at, rate_limit_per_min)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}""",
                name,
                role.value,
                region,
                digest,
                actor.name,
                expires_at,
                rate_limit_per_min,
            )
            assert rec is not None
            out = _out(rec)
            await audit.record(conn, actor, "token.create", region_code=region, after=out)
        return out, secret

    async def all(self, actor: Actor) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at")
        return [
            _out(r)
            for r in rows
            if actor.scope is None or (r["region_prefix"] or "").startswith(actor.scope)
        ]

    async def revoke(self, actor: Actor, token_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                rec = await conn.fetchrow(
                    f"""UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
                        WHERE id = $1::text::uuid RETURNING {_COLUMNS}""",
                    token_id,
                )
            except asyncpg.DataError:
                rec = None
            if rec is None or (
                actor.scope is not None and not (rec["region_prefix"] or "").startswith(actor.scope)
            ):
                raise NotFound(f"no token {token_id}")
            await audit.record(conn, actor, "token.revoke", after=_out(rec))

    async def authenticate(self, secret: str, remote_addr: str | None = None) -> Actor:
        """The actor for a bearer secret; revoked or expired tokens fail at once."""
        if not secret.startswith(TOKEN_PREFIX):
            raise Unauthorized(
                "the bearer token is malformed; use a token from `camreg token create`"
            )
        digest = token_digest(secret)
        rec = await self.pool.fetchrow(
            """SELECT id, name, role, region_prefix, secret_hash, rate_limit_per_min,
                      last_used_at IS NULL OR last_used_at < now() - interval '1 minute' AS stale
               FROM api_tokens
               WHERE secret_hash = $1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now())""",
            digest,
        )
        if rec is None or not hmac.compare_digest(bytes(rec["secret_hash"]), digest):
            raise Unauthorized("the bearer token is unknown, revoked or expired")
        if rec["stale"]:  # last use is kept to the minute: one write per token per minute
            await self.pool.execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = $1", rec["id"]
            )
        return Actor(
            name=f"token:{rec['name']}",
            role=Role(rec["role"]),
            token_id=str(rec["id"]),
            scope=rec["region_prefix"],
            remote_addr=remote_addr,
            rate_limit=rec["rate_limit_per_min"],
        )
