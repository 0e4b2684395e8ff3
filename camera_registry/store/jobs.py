"""Import jobs: status, progress and every bad row, so an API client can follow a long import.

A job row names its owning process and carries a heartbeat (migration 0011,
:mod:`camera_registry.heartbeats`): an import whose server was killed is closed as failed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from camera_registry.actor import Actor, Role
from camera_registry.errors import BadRequest, FieldError, NotFound
from camera_registry.store import heartbeats
from camera_registry.store.db import row_dict

ERRORS_INLINE = 1000


class ImportJobs:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(
        self, actor: Actor, filename: str, *, dry_run: bool, partial: bool, crs: str
    ) -> str:
        job_id = await self.pool.fetchval(
            """INSERT INTO import_jobs (actor, token_id, filename, dry_run, partial, crs, owner,
                   heartbeat_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, now()) RETURNING id""",
            actor.name,
            actor.token_id,
            filename,
            dry_run,
            partial,
            crs,
            heartbeats.OWNER,
        )
        return str(job_id)

    async def started(self, job_id: str) -> None:
        await self.pool.execute(
            "UPDATE import_jobs SET status = 'running', started_at = now() WHERE id = $1",
            uuid.UUID(job_id),
        )

    async def progress(self, job_id: str, fraction: float, rows: int) -> None:
        await self.pool.execute(
            "UPDATE import_jobs SET progress = $2, rows_total = $3 WHERE id = $1",
            uuid.UUID(job_id),
            min(max(fraction, 0.0), 1.0),
            rows,
        )

    async def finish(
        self,
        job_id: str,
        *,
        status: str,
        message: str,
        rows_total: int,
        inserted: int = 0,
        updated: int = 0,
        unchanged: int = 0,
        errors: Sequence[FieldError] = (),
        rows_bad: int = 0,
        warnings: Sequence[str] = (),
    ) -> None:
        jid = uuid.UUID(job_id)
        message, warnings = _storable(message), [_storable(w) for w in warnings]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """UPDATE import_jobs SET status = $2, message = $3, rows_total = $4,
                       inserted = $5, updated = $6, unchanged = $7, rows_bad = $8,
                       warnings = $9, progress = 1, finished_at = now()
                   WHERE id = $1""",
                jid,
                status,
                message,
                rows_total,
                inserted,
                updated,
                unchanged,
                rows_bad,
                list(warnings),
            )
            if errors:
                await conn.copy_records_to_table(
                    "import_errors",
                    records=(
                        (jid, i, e.row, _storable(e.field), _storable(e.message))
                        for i, e in enumerate(errors)
                    ),
                    columns=["job_id", "seq", "row_no", "field", "message"],
                )

    async def get(self, actor: Actor, job_id: str) -> dict[str, Any]:
        rec = await self._own(actor, job_id)
        out = row_dict(rec)
        rows = await self.pool.fetch(
            """SELECT row_no AS row, field, message FROM import_errors WHERE job_id = $1
               ORDER BY seq LIMIT $2""",
            rec["id"],
            ERRORS_INLINE,
        )
        out["errors"] = [dict(r) for r in rows]
        out["error_count"] = await self.pool.fetchval(
            "SELECT count(*) FROM import_errors WHERE job_id = $1", rec["id"]
        )
        return out

    async def errors(
        self, actor: Actor, job_id: str, *, after: int, limit: int
    ) -> list[dict[str, Any]]:
        rec = await self._own(actor, job_id)
        rows = await self.pool.fetch(
            """SELECT seq, row_no AS row, field, message FROM import_errors
               WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
            rec["id"],
            after,
            limit,
        )
        return [dict(r) for r in rows]

    async def _own(self, actor: Actor, job_id: str) -> asyncpg.Record:
        try:
            jid = uuid.UUID(job_id)
        except ValueError:
            raise BadRequest(
                "bad import id", [FieldError("id", "use the id POST /imports returned")]
            ) from None
        rec = await self.pool.fetchrow("SELECT * FROM import_jobs WHERE id = $1", jid)
        if rec is None or (actor.role != Role.ADMIN and str(rec["token_id"]) != actor.token_id):
            raise NotFound(f"no import {job_id} of yours")
        return rec


def _storable(text: str) -> str:
    """`text` as PostgreSQL's text type can hold it: a NUL (which a bad row's cell or a
    mis-decoded header can carry into a message) made the job's final write fail, and the job
    was left 'running' until the reaper called it orphaned."""
    return text.replace("\x00", "\ufffd")
