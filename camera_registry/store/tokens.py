"""API tokens: random secrets shown once, stored as SHA-256 digests, revocable at once.

Verified tokens are cached in-process, because a query per request was the largest cost of
every authenticated read. Revocation stays immediate across processes: `revoke` sends a NOTIFY
on the schema's token channel in its own transaction, and every process listening drops its
cache on delivery. The cache is used only while that LISTEN connection is up (a process that
cannot hear revocations asks the database every time), and a short TTL bounds what a
half-open connection could hide.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from camera_registry.actor import Actor, Role
from camera_registry.crypto import TOKEN_PREFIX, new_token, token_digest
from camera_registry.errors import BadRequest, FieldError, NotFound, Unauthorized
from camera_registry.gbid import region_code_problem
from camera_registry.store import audit
from camera_registry.store.db import schema_channel

log = logging.getLogger(__name__)

TOKEN_CHANNEL = "camreg_tokens"  # noqa: S105 - a NOTIFY channel name, not a secret
CACHE_TTL_S = 10.0  # backstop only: revocation normally arrives by NOTIFY within milliseconds
CACHE_MAX = 10_000  # distinct live tokens a process remembers; beyond it the cache starts over
LAST_USED_EVERY_S = 60.0  # last use is kept to the minute: one write per token per minute

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


@dataclass(slots=True)
class _Verified:
    token_id: str
    name: str
    role: Role
    scope: str | None
    rate_limit: int | None
    expires: float | None  # epoch seconds
    cached_at: float  # monotonic
    used_written: float  # monotonic time of the last `last_used_at` write

    def actor(self, remote_addr: str | None) -> Actor:
        return Actor(
            name=f"token:{self.name}",
            role=self.role,
            token_id=self.token_id,
            scope=self.scope,
            remote_addr=remote_addr,
            rate_limit=self.rate_limit,
        )


class Tokens:
    def __init__(self, pool: asyncpg.Pool, *, cache_ttl_s: float = CACHE_TTL_S) -> None:
        self.pool = pool
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[bytes, _Verified] = {}
        self._listening = False  # cache only while revocations can reach this process
        self._generation = 0  # bumped by every revocation heard: a lookup that raced one is
        # not cached
        self._on_revoke: list[Callable[[str], None]] = []

    def on_revoke(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(token_id)` whenever a token is revoked (here or in another process);
        returns the function that unregisters it."""
        self._on_revoke.append(callback)
        return lambda: self._on_revoke.remove(callback) if callback in self._on_revoke else None

    def _revoked(self, token_id: str) -> None:
        self._generation += 1
        self._cache.clear()
        for cb in list(self._on_revoke):
            try:
                cb(token_id)
            except Exception:  # one listener's bug must not keep a revoked token alive
                log.exception("a revocation listener failed")

    async def listen(self, stop: asyncio.Event, retry_s: float = 1.0) -> None:
        """Hear revocations from every process until `stop`; reconnects after a lost
        connection (the cache is off meanwhile)."""
        while not stop.is_set():
            try:
                async with self.pool.acquire(timeout=10) as conn:
                    await self._listen_on(conn, stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("token revocations: listening failed (%s); retrying", exc)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)

    async def _listen_on(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        schema = await conn.fetchval("SELECT current_schema()", timeout=10)
        channel = schema_channel(TOKEN_CHANNEL, schema)

        def heard(_c: object, _pid: int, _channel: str, payload: str) -> None:
            self._revoked(payload)

        conn.add_termination_listener(lambda _c: lost.set())
        await conn.add_listener(channel, heard)
        self._cache.clear()
        self._listening = True
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            self._listening = False
            self._cache.clear()
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.remove_listener(channel, heard)

    @property
    def listening(self) -> bool:
        """Whether revocations reach this process (and verified tokens are cached)."""
        return self._listening

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
            # delivered on commit to every process listening, this one included
            channel = schema_channel(TOKEN_CHANNEL, await conn.fetchval("SELECT current_schema()"))
            await conn.execute("SELECT pg_notify($1, $2)", channel, str(rec["id"]))
        self._revoked(str(rec["id"]))  # at once here, whether or not the listener is up

    async def authenticate(self, secret: str, remote_addr: str | None = None) -> Actor:
        """The actor for a bearer secret; revoked or expired tokens fail at once."""
        if not secret.startswith(TOKEN_PREFIX):
            raise Unauthorized(
                "the bearer token is malformed; use a token from `camreg token create`"
            )
        digest = token_digest(secret)
        now = time.monotonic()
        hit = self._cache.get(digest) if self._listening else None
        if hit is not None:
            if now - hit.cached_at < self.cache_ttl_s and (
                hit.expires is None or time.time() < hit.expires
            ):
                if now - hit.used_written >= LAST_USED_EVERY_S:
                    hit.used_written = now
                    await self.pool.execute(
                        "UPDATE api_tokens SET last_used_at = now() WHERE id = $1::uuid",
                        hit.token_id,
                    )
                return hit.actor(remote_addr)
            self._cache.pop(digest, None)
        generation = self._generation
        rec = await self.pool.fetchrow(
            """SELECT id, name, role, region_prefix, secret_hash, rate_limit_per_min,
                      extract(epoch FROM expires_at)::float8 AS expires,
                      last_used_at IS NULL OR last_used_at < now() - interval '1 minute' AS stale
               FROM api_tokens
               WHERE secret_hash = $1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > now())""",
            digest,
        )
        if rec is None or not hmac.compare_digest(bytes(rec["secret_hash"]), digest):
            raise Unauthorized("the bearer token is unknown, revoked or expired")
        if rec["stale"]:
            await self.pool.execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = $1", rec["id"]
            )
        verified = _Verified(
            token_id=str(rec["id"]),
            name=rec["name"],
            role=Role(rec["role"]),
            scope=rec["region_prefix"],
            rate_limit=rec["rate_limit_per_min"],
            expires=rec["expires"],
            cached_at=now,
            used_written=now,
        )
        # Not cached when a revocation was heard while the query ran: its answer may predate it.
        if self._listening and generation == self._generation:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = verified
        return verified.actor(remote_addr)
