"""The discovery inbox: SQL for devices found but not yet registered."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from . import audit
from .actor import Actor
from .crypto import CredentialBox
from .errors import NotFound

_COLUMNS = """id, endpoint, address, port, xaddrs, vendor, model, firmware, serial, mac, profiles,
    failure, detail, credentials IS NOT NULL AS has_credentials, found_scope, found_by,
    first_seen, last_seen, camera_id"""


def _out(rec: asyncpg.Record) -> dict[str, Any]:
    return {
        k: (
            v.isoformat()
            if isinstance(v, dt.datetime)
            else str(v)
            if isinstance(v, uuid.UUID)
            else v
        )
        for k, v in rec.items()
    }


class Inbox:
    def __init__(self, pool: asyncpg.Pool, box: CredentialBox) -> None:
        self.pool = pool
        self.box = box

    async def upsert(self, actor: Actor, devices: Sequence[dict[str, Any]]) -> int:
        """Record found devices; a device seen again is refreshed, not duplicated.

        Identity is the WS-Discovery endpoint (stable across IP changes); a device found only
        by an HTTP sweep is keyed by its URL. Credentials are kept only when they worked.
        """
        rows = []
        for d in devices:
            sealed = None
            if d.get("failure") is None and (d.get("username") or d.get("password")):
                pair = self.box.seal(d.get("username"), d.get("password"))
                sealed = pair[0] if pair else None
            rows.append(
                (
                    d["endpoint"],
                    d["address"],
                    d["port"],
                    d.get("xaddrs", []),
                    d.get("vendor"),
                    d.get("model"),
                    d.get("firmware"),
                    d.get("serial"),
                    d.get("mac"),
                    d.get("profiles", []),
                    d.get("failure"),
                    d.get("detail"),
                    sealed,
                    actor.scope,
                    actor.name,
                )
            )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                """INSERT INTO discovered_devices (endpoint, address, port, xaddrs, vendor, model,
                       firmware, serial, mac, profiles, failure, detail, credentials, found_scope,
                       found_by)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                   ON CONFLICT (endpoint) DO UPDATE SET
                       address = EXCLUDED.address, port = EXCLUDED.port,
                       xaddrs = EXCLUDED.xaddrs,
                       vendor = coalesce(EXCLUDED.vendor, discovered_devices.vendor),
                       model = coalesce(EXCLUDED.model, discovered_devices.model),
                       firmware = coalesce(EXCLUDED.firmware, discovered_devices.firmware),
                       serial = coalesce(EXCLUDED.serial, discovered_devices.serial),
                       mac = coalesce(EXCLUDED.mac, discovered_devices.mac),
                       profiles = CASE WHEN EXCLUDED.profiles = '[]'::jsonb
                                  THEN discovered_devices.profiles ELSE EXCLUDED.profiles END,
                       failure = EXCLUDED.failure, detail = EXCLUDED.detail,
                       credentials = coalesce(EXCLUDED.credentials,
                                              discovered_devices.credentials),
                       last_seen = now()""",
                rows,
            )
            await audit.record(conn, actor, "discovery.scan", detail={"devices": len(rows)})
        return len(rows)

    def _visible(self, actor: Actor) -> tuple[str, list[Any]]:
        if actor.scope is None:
            return "TRUE", []
        return "found_scope LIKE $1", [actor.scope + "%"]

    async def list(self, actor: Actor, *, pending_only: bool = True) -> list[dict[str, Any]]:
        where, args = self._visible(actor)
        if pending_only:
            where += " AND camera_id IS NULL"
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM discovered_devices WHERE {where} ORDER BY last_seen DESC, id",
            *args,
        )
        return [_out(r) for r in rows]

    async def get(self, actor: Actor, device_id: str) -> dict[str, Any]:
        """One inbox device, with its sealed credentials (for registration only)."""
        try:
            did = uuid.UUID(device_id)
        except ValueError:
            raise NotFound(f"no discovered device {device_id}") from None
        where, args = self._visible(actor)
        rec = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, credentials FROM discovered_devices "
            f"WHERE id = ${len(args) + 1} AND {where}",
            *args,
            did,
        )
        if rec is None:
            raise NotFound(f"no discovered device {device_id} in your scope")
        out = _out(rec)
        sealed = out.pop("credentials")
        out["username"], out["password"] = self.box.open(sealed) if sealed else (None, None)
        return out

    async def mark_registered(self, device_id: str, camera_id: str) -> None:
        await self.pool.execute(
            "UPDATE discovered_devices SET camera_id = $2::uuid WHERE id = $1::uuid",
            device_id,
            camera_id,
        )
