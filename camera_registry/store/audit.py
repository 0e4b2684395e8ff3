"""The append-only audit trail (a trigger refuses UPDATE/DELETE/TRUNCATE on `audit_log`).

Writes that change something take the caller's connection, so the record commits or rolls
back with the change. Records that are the only write of a request (stream links, relay hook
verdicts) go through `GroupCommit`: durable before the caller answers, but many concurrent
requests' records share one transaction and one WAL flush.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from camera_registry.actor import Actor

log = logging.getLogger(__name__)

_SECRET_KEYS = frozenset(
    {"credentials", "credentials_mac", "password", "username", "token", "secret_hash"}
)


def scrub(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: v for k, v in values.items() if k not in _SECRET_KEYS}


async def record(
    conn: asyncpg.Connection,
    actor: Actor,
    action: str,
    *,
    camera_id: Any = None,
    region_code: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO audit_log (actor, token_id, action, camera_id, region_code, remote_addr,
                                  before, after, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        actor.name,
        actor.token_id,
        action,
        camera_id,
        region_code,
        actor.remote_addr,
        scrub(before),
        scrub(after),
        detail,
    )


async def query(
    pool: asyncpg.Pool,
    actor: Actor,
    *,
    who: str | None = None,
    camera_id: Any = None,
    action: str | None = None,
    since: Any = None,
    until: Any = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first; `before_id` is the cursor. A scoped admin sees its region's records."""
    where, args = ["TRUE"], []

    def add(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.format(f"${len(args)}"))

    if actor.scope is not None:
        add("region_code LIKE {}", actor.scope + "%")
    if who:
        add("actor = {}", who)
    if camera_id is not None:
        add("camera_id = {}", camera_id)
    if action:
        add("action = {}", action)
    if since is not None:
        add("at >= {}", since)
    if until is not None:
        add("at < {}", until)
    if before_id is not None:
        add("id < {}", before_id)
    args.append(limit)
    rows = await pool.fetch(
        f"""SELECT id, at, actor, token_id, action, camera_id, region_code, remote_addr,
                   before, after, detail
            FROM audit_log WHERE {" AND ".join(where)} ORDER BY id DESC LIMIT ${len(args)}""",
        *args,
    )
    return [
        {
            k: (str(v) if k in ("token_id", "camera_id") and v is not None else v)
            for k, v in r.items()
        }
        for r in rows
    ]


def _text(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, default=str, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Row:
    actor: str
    token_id: str | None
    action: str
    camera_id: str | None
    region_code: str | None
    remote_addr: str | None
    detail: str | None


# The audit row's columns, for statements that write their audit rows themselves (a stream
# link's camera look-up and its audit row are one statement: store/streams.py).
INSERT_COLUMNS = (
    "INSERT INTO audit_log (actor, token_id, action, camera_id, region_code, remote_addr, detail)"
)
_INSERT_MANY = f"""
{INSERT_COLUMNS}
SELECT a, t::uuid, x, c::uuid, r, ra, d::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS u(a, t, x, c, r, ra, d)
"""


class GroupCommit:
    """Audit records committed in groups: `record` returns once its row is durable.

    A flush starts at once when none is running, so a lone request waits for exactly one
    commit (nothing is added at low load); records that arrive while a flush is in flight
    wait for it and then go together in the next one (up to `max_batch` rows, one INSERT of
    arrays, one commit). A video wall of 64 links costs a couple of WAL flushes, not 64.
    `max_pending` bounds the records waiting; beyond it callers wait for room.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 512,
        max_pending: int = 8192,
        timeout_s: float = 30.0,
    ) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._room = asyncio.Semaphore(max_pending)
        self._pending: list[tuple[_Row, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.flushes = 0  # commits made, for tests and /metrics
        self.rows = 0

    async def record(
        self,
        actor: Actor,
        action: str,
        *,
        camera_id: Any = None,
        region_code: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        row = _Row(
            actor.name,
            actor.token_id,
            action,
            None if camera_id is None else str(camera_id),
            region_code,
            actor.remote_addr,
            _text(detail),
        )
        async with self._room:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending.append((row, done))
            if self._flusher is None:
                self._flusher = asyncio.create_task(self._flush_all(), name="audit-group-commit")
            # shielded: a caller that gives up must not cancel the batch others wait on
            await asyncio.shield(done)

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    await self._insert([row for row, _ in batch])
                except Exception as exc:  # every waiter of this batch learns it failed
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._flusher = None

    async def _insert(self, rows: list[_Row]) -> None:
        cols = list(zip(*((r.actor, r.token_id, r.action, r.camera_id, r.region_code,
                            r.remote_addr, r.detail) for r in rows), strict=True))  # fmt: skip
        async with self.pool.acquire(timeout=self.timeout_s) as conn:
            await conn.execute(_INSERT_MANY, *cols, timeout=self.timeout_s)
        self.flushes += 1
        self.rows += len(rows)

    async def close(self) -> None:
        """Wait for the records already taken (the app stops after its handlers)."""
        flusher = self._flusher
        if flusher is not None:
            await asyncio.wait_for(asyncio.shield(flusher), self.timeout_s)
