"""The append-only audit trail (a trigger refuses UPDATE/DELETE/TRUNCATE on `audit_log`).

Writes take the caller's connection so the record commits or rolls back with the change.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from camera_registry.actor import Actor

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
