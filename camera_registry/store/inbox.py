"""The discovery inbox and discovery scans: SQL for devices found but not yet registered.

A device is one row however often it is found and wherever it moves: it is matched by its
WS-Discovery endpoint UUID, then MAC, then serial, so a camera that got a new DHCP lease is
the same row with a new address, and the cameras registered from it follow (audited) instead
of a duplicate appearing in the inbox.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from camera_registry.actor import Actor
from camera_registry.crypto import CredentialBox
from camera_registry.errors import BadRequest, FieldError, NotFound
from camera_registry.store import audit, cameras, heartbeats
from camera_registry.store.db import row_dict

INBOX_STATUSES = ("new", "registered", "ignored")
FAILURE_CATEGORIES = (
    "unreachable",
    "not_onvif",
    "auth_failed",
    "clock_skew",
    "no_media_profile",
    "malformed_response",
    "timeout",
    "gb28181_invalid",  # a GB/T 28181 catalog item that cannot become a camera as sent
)

_COLUMNS = """id, endpoint, address, port, xaddrs, vendor, model, firmware, serial, mac, profiles,
    failure, detail, clock_skew_s, ptz, geo_lon, geo_lat, geo_elevation, geo_flag, status,
    credentials IS NOT NULL AS has_credentials,
    found_scope, found_by, first_seen, last_seen, camera_id,
    coalesce((SELECT array_agg(c.camera_id::text ORDER BY c.channel, c.camera_id)
              FROM discovered_device_cameras c WHERE c.device_id = discovered_devices.id),
             '{}') AS camera_ids"""


def _is_ip(address: str) -> bool:
    """Only a move to an IP address moves cameras (a GB/T 28181 channel's address is its
    `gb28181:` identity, not a place to send packets)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {what} {value}") from None


class Inbox:
    def __init__(self, pool: asyncpg.Pool, box: CredentialBox) -> None:
        self.pool = pool
        self.box = box

    async def upsert(
        self, actor: Actor, devices: Sequence[dict[str, Any]], *, scan_id: str | None = None
    ) -> int:
        """Record found devices; a device seen again is refreshed, not duplicated.

        Identity: endpoint UUID, then MAC, then serial (a device found only by an HTTP sweep
        has an http:// endpoint, which names its address, so MAC and serial carry it across
        an IP change). Credentials are kept only when they worked; a GeoLocation is kept until
        a later scan reads another (a scan that could not read it is no news). When a known
        device turns up at a new address, its registered cameras get the new ip and stream
        URIs (audited).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            for d in devices:
                await self._upsert_one(conn, actor, d, scan_id)
            await audit.record(
                conn,
                actor,
                "discovery.scan",
                detail={"devices": len(devices), "scan": scan_id},
            )
        return len(devices)

    async def _upsert_one(
        self, conn: asyncpg.Connection, actor: Actor, d: Mapping[str, Any], scan_id: str | None
    ) -> None:
        sealed = None
        if d.get("failure") is None and (d.get("username") or d.get("password")):
            pair = self.box.seal(d.get("username"), d.get("password"))
            sealed = pair[0] if pair else None
        for _attempt in range(2):
            device_id = await self._store(conn, actor, d, sealed)
            if device_id is not None:
                break
        else:  # pragma: no cover - a second concurrent insert of the same endpoint is absurd
            raise RuntimeError(f"could not store discovered device {d['endpoint']}")
        if scan_id is not None:
            await conn.execute(
                """INSERT INTO discovery_scan_devices (scan_id, device_id)
                   VALUES ($1::uuid, $2) ON CONFLICT DO NOTHING""",
                scan_id,
                device_id,
            )

    async def _store(
        self, conn: asyncpg.Connection, actor: Actor, d: Mapping[str, Any], sealed: bytes | None
    ) -> Any:
        """Match and update, or insert; None when a concurrent scan inserted it first (the
        caller then matches again and finds that row)."""
        mac, serial = d.get("mac"), d.get("serial")
        cur = await conn.fetchrow(
            """SELECT id, address, endpoint FROM discovered_devices
               WHERE endpoint = $1 OR ($2::text IS NOT NULL AND mac = $2)
                  OR ($3::text IS NOT NULL AND serial = $3)
               ORDER BY (endpoint = $1) DESC, (mac IS NOT DISTINCT FROM $2) DESC, first_seen
               LIMIT 1 FOR UPDATE""",
            d["endpoint"],
            mac,
            serial,
        )
        values = (
            d["address"],
            d["port"],
            list(d.get("xaddrs", [])),
            d.get("vendor"),
            d.get("model"),
            d.get("firmware"),
            serial,
            mac,
            list(d.get("profiles", [])),
            d.get("failure"),
            d.get("detail"),
            sealed,
            d.get("clock_skew_s"),
            d.get("ptz"),
            d.get("geo_lon"),
            d.get("geo_lat"),
            d.get("geo_elevation"),
            d.get("geo_flag"),
        )
        if cur is None:
            return await conn.fetchval(
                """INSERT INTO discovered_devices (address, port, xaddrs, vendor, model,
                       firmware, serial, mac, profiles, failure, detail, credentials,
                       clock_skew_s, ptz, geo_lon, geo_lat, geo_elevation, geo_flag, endpoint,
                       found_scope, found_by)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                           $16, $17, $18, $19, $20, $21)
                   ON CONFLICT (endpoint) DO NOTHING
                   RETURNING id""",
                *values,
                d["endpoint"],
                actor.scope,
                actor.name,
            )
        else:
            device_id = cur["id"]
            # A WS-Discovery endpoint UUID outranks an address-derived http:// key.
            endpoint = cur["endpoint"]
            if not d["endpoint"].startswith("http") or endpoint.startswith("http"):
                endpoint = d["endpoint"]
            await conn.execute(
                """UPDATE discovered_devices SET
                       address = $2, port = $3, xaddrs = $4,
                       vendor = coalesce($5, vendor), model = coalesce($6, model),
                       firmware = coalesce($7, firmware), serial = coalesce($8, serial),
                       mac = coalesce($9, mac),
                       profiles = CASE WHEN $10::jsonb = '[]'::jsonb THEN profiles
                                  ELSE $10::jsonb END,
                       failure = $11, detail = $12,
                       credentials = coalesce($13, credentials),
                       clock_skew_s = $14, ptz = coalesce($15, ptz),
                       geo_lon = CASE WHEN $16::float8 IS NULL THEN geo_lon ELSE $16 END,
                       geo_lat = CASE WHEN $16::float8 IS NULL THEN geo_lat ELSE $17 END,
                       geo_elevation = CASE WHEN $16::float8 IS NULL THEN geo_elevation
                                       ELSE $18 END,
                       geo_flag = CASE WHEN $16::float8 IS NULL THEN geo_flag ELSE $19 END,
                       endpoint = $20, last_seen = now()
                   WHERE id = $1""",
                device_id,
                *values,
                endpoint,
            )
            if cur["address"] != d["address"] and _is_ip(d["address"]):
                await self._follow_address(conn, actor, device_id, cur["address"], d["address"])
        return device_id

    async def _follow_address(
        self, conn: asyncpg.Connection, actor: Actor, device_id: Any, old: str, new: str
    ) -> None:
        """The device moved from `old` to `new`: move its registered cameras with it."""
        ids = await conn.fetch(
            "SELECT camera_id FROM discovered_device_cameras WHERE device_id = $1", device_id
        )
        await cameras.move_address(
            conn,
            actor,
            [r["camera_id"] for r in ids],
            old,
            new,
            reason="discovery: device changed address",
        )

    def _visible(self, actor: Actor, args: list[Any]) -> str:
        if actor.scope is None:
            return "TRUE"
        args.append(actor.scope + "%")
        return f"found_scope LIKE ${len(args)}"

    async def list(
        self,
        actor: Actor,
        *,
        pending_only: bool = True,
        status: str | None = None,
        scan: str | None = None,
        category: str | None = None,
    ) -> list[dict[str, Any]]:
        """Inbox rows visible to `actor`; by default those not registered yet."""
        args: list[Any] = []
        where = [self._visible(actor, args)]
        if status is not None:
            if status not in INBOX_STATUSES:
                raise BadRequest(
                    f"unknown status {status!r}",
                    [FieldError("status", f"one of {', '.join(INBOX_STATUSES)}")],
                )
            args.append(status)
            where.append(f"status = ${len(args)}")
        elif pending_only:
            where.append("status <> 'registered'")
        if category is not None:
            if category not in (*FAILURE_CATEGORIES, "ok"):
                raise BadRequest(
                    f"unknown failure category {category!r}",
                    [FieldError("category", f"ok or one of {', '.join(FAILURE_CATEGORIES)}")],
                )
            if category == "ok":
                where.append("failure IS NULL")
            else:
                args.append(category)
                where.append(f"failure = ${len(args)}")
        if scan is not None:
            try:
                args.append(uuid.UUID(scan))
            except ValueError:
                raise BadRequest(
                    f"scan {scan!r} is not a scan id", [FieldError("scan", "a scan's UUID")]
                ) from None
            where.append(
                f"id IN (SELECT device_id FROM discovery_scan_devices WHERE scan_id = ${len(args)})"
            )
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM discovered_devices WHERE {' AND '.join(where)} "
            "ORDER BY last_seen DESC, id",
            *args,
        )
        return [row_dict(r) for r in rows]

    async def get(self, actor: Actor, device_id: str) -> dict[str, Any]:
        """One inbox device, with its sealed credentials opened (for registration only)."""
        did = _uuid(device_id, "discovered device")
        args: list[Any] = [did]
        where = self._visible(actor, args)
        rec = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, credentials FROM discovered_devices WHERE id = $1 AND {where}",
            *args,
        )
        if rec is None:
            raise NotFound(f"no discovered device {device_id} in your scope")
        out = row_dict(rec)
        sealed = out.pop("credentials")
        out["username"], out["password"] = self.box.open(sealed) if sealed else (None, None)
        return out

    async def set_status(self, actor: Actor, device_id: str, status: str) -> dict[str, Any]:
        """Ignore a device (or put an ignored one back to `new`); registering sets the rest."""
        if status not in ("new", "ignored"):
            raise BadRequest(
                f"status {status!r} cannot be set by hand",
                [FieldError("status", "new or ignored (register to make it registered)")],
            )
        did = _uuid(device_id, "discovered device")
        args: list[Any] = [did]
        where = self._visible(actor, args)
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval(
                f"SELECT status FROM discovered_devices WHERE id = $1 AND {where} FOR UPDATE",
                *args,
            )
            if current is None:
                raise NotFound(f"no discovered device {device_id} in your scope")
            if current == "registered":
                raise BadRequest(
                    "the device is registered already",
                    [FieldError("status", "delete its cameras first")],
                )
            await conn.execute(
                "UPDATE discovered_devices SET status = $2 WHERE id = $1", did, status
            )
            await audit.record(conn, actor, f"discovery.{status}", detail={"device": str(did)})
        return await self.get_public(actor, device_id)

    async def get_public(self, actor: Actor, device_id: str) -> dict[str, Any]:
        out = await self.get(actor, device_id)
        out.pop("username")
        out.pop("password")
        return out

    async def mark_registered(
        self,
        actor: Actor,
        device_id: str,
        camera_id: str,
        channels: Sequence[tuple[str, str]] = (),
        *,
        location: Mapping[str, Any] | None = None,
    ) -> None:
        """Link the device to the camera(s) made from it; `channels` is (channel, camera id).

        The audit record says where the cameras' place came from (`location`: the
        technician's lon/lat, or the device's own GeoLocation), since a place taken from the
        device rather than typed in on site is worth knowing when it later turns out wrong.
        """
        links = list(channels) or [("", camera_id)]
        async with self.pool.acquire() as conn, conn.transaction():
            await audit.record(
                conn,
                actor,
                "discovery.register",
                camera_id=uuid.UUID(camera_id),
                detail={
                    "device": device_id,
                    "cameras": [cam for _, cam in links],
                    "location": dict(location or {"source": "request"}),
                },
            )
            await conn.execute(
                """UPDATE discovered_devices SET camera_id = $2::uuid, status = 'registered'
                   WHERE id = $1::uuid""",
                device_id,
                camera_id,
            )
            await conn.executemany(
                """INSERT INTO discovered_device_cameras (device_id, camera_id, channel)
                   VALUES ($1::uuid, $2::uuid, $3) ON CONFLICT DO NOTHING""",
                [(device_id, cam, channel) for channel, cam in links],
            )


class DiscoveryScans:
    """Scan jobs started over the API: request, sealed credentials, progress and counts.

    The creating process owns the scan and keeps its heartbeat (migration 0011); a scan whose
    server was killed is closed as failed by any other process (:mod:`.heartbeats`).
    """

    def __init__(self, pool: asyncpg.Pool, box: CredentialBox) -> None:
        self.pool = pool
        self.box = box

    async def create(
        self,
        actor: Actor,
        request: Mapping[str, Any],
        username: str | None,
        password: str | None,
        addresses: int,
    ) -> dict[str, Any]:
        sealed = None
        if username or password:
            pair = self.box.seal(username, password)
            sealed = pair[0] if pair else None
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await conn.fetchrow(
                """INSERT INTO discovery_scans (request, credentials, addresses, scope,
                       created_by, owner, heartbeat_at)
                   VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING *""",
                dict(request),
                sealed,
                addresses,
                actor.scope,
                actor.name,
                heartbeats.OWNER,
            )
            assert rec is not None
            await audit.record(
                conn, actor, "discovery.scan.create", detail={"scan": str(rec["id"]), **request}
            )
        return self._public(rec)

    async def credentials(self, scan_id: str) -> tuple[str | None, str | None]:
        sealed = await self.pool.fetchval(
            "SELECT credentials FROM discovery_scans WHERE id = $1::uuid", scan_id
        )
        return self.box.open(sealed) if sealed else (None, None)

    async def started(self, scan_id: str) -> None:
        await self.pool.execute(
            """UPDATE discovery_scans SET status = 'running', started_at = now()
               WHERE id = $1::uuid AND status = 'queued'""",
            scan_id,
        )

    async def progress(self, scan_id: str, **counts: int) -> None:
        """Set any of probed / found / interrogated."""
        if not counts:
            return
        cols = [c for c in ("probed", "found", "interrogated") if c in counts]
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        await self.pool.execute(
            f"UPDATE discovery_scans SET {sets} WHERE id = $1::uuid",
            scan_id,
            *[counts[c] for c in cols],
        )

    async def finish(
        self,
        scan_id: str,
        status: str,
        *,
        failed: Mapping[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        """Close the job; the sealed credentials are dropped with it (no longer needed)."""
        await self.pool.execute(
            """UPDATE discovery_scans SET status = $2, failed = coalesce($3, failed),
                   error = $4, credentials = NULL, finished_at = now()
               WHERE id = $1::uuid""",
            scan_id,
            status,
            dict(failed) if failed is not None else None,
            error,
        )

    async def get(self, actor: Actor, scan_id: str) -> dict[str, Any]:
        sid = _uuid(scan_id, "scan")
        rec = await self.pool.fetchrow("SELECT * FROM discovery_scans WHERE id = $1", sid)
        if rec is None or (
            actor.scope is not None and not (rec["scope"] or "").startswith(actor.scope)
        ):
            raise NotFound(f"no discovery scan {scan_id} in your scope")
        return self._public(rec)

    @staticmethod
    def _public(rec: Mapping[str, Any]) -> dict[str, Any]:
        out = row_dict(rec)
        out.pop("credentials", None)
        out["has_credentials"] = rec["credentials"] is not None
        out["progress"] = round(rec["probed"] / rec["addresses"], 4) if rec["addresses"] else None
        if isinstance(out.get("failed"), str):
            out["failed"] = json.loads(out["failed"])
        return out
