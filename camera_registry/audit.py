"""The append-only audit trail (a trigger refuses UPDATE/DELETE/TRUNCATE on `audit_log`).

Writes take the caller's connection so the record commits or rolls back with the change.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from .actor import Actor

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
