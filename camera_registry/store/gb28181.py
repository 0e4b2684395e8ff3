"""GB/T 28181 devices and their catalogs: the one writer of `gb_devices` and `gb_catalog_items`.

Cameras among the catalog items (types 131/132) are written only through the cameras store
(`Registry.create` / `Registry.update`, validated and audited like any other write), keyed by
their GB ID. An item that fails validation is kept here with its reason and put in the
discovery inbox, never dropped. Re-reading an unchanged catalog changes no camera: only the
fields that differ are patched, so one change is one audited update.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.errors import NotFound, RegistryError
from camera_registry.gbid import CAMERA_TYPES
from camera_registry.store.cameras import Registry, region_range
from camera_registry.store.inbox import Inbox

_PASSWORD_CACHE = 200_000
# China's bounding box: a point outside it (or 0/0) is "no position", not a camera in the sea.
_CHINA = (73.4, 135.1, 18.1, 53.6)
_CAMERA_FIELDS = (
    "name",
    "level",
    "lon",
    "lat",
    "region_code",
    "address",
    "hfov",
    "vfov",
    "max_view_distance",
    "owner",
    "contact",
    "installed_at",
    "record_days",
    "vendor",
    "model",
    "mac",
    "ip",
)


@dataclass(slots=True)
class CatalogOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    to_inbox: int = 0
    tree: int = 0
    removed: int = 0
    problems: dict[str, str] = field(default_factory=dict)


def camera_values(item: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Camera fields from a catalog item (as `CatalogItem` fields), and notes on what was odd."""
    notes: list[str] = []
    gb_id = str(item["device_id"])
    lon, lat = item.get("longitude"), item.get("latitude")
    if lon is not None and lat is not None:
        if not (_CHINA[0] <= lon <= _CHINA[1] and _CHINA[2] <= lat <= _CHINA[3]):
            if not (lon == 0 and lat == 0):
                notes.append(f"position {lon},{lat} is outside China: taken as no position")
            lon = lat = None
    else:
        lon = lat = None
    civil = str(item.get("civil_code") or "")
    region = gb_id[:6]
    if len(civil) >= 6 and civil.isdigit() and civil[:6] != region:
        notes.append(f"CivilCode {civil} does not agree with the ID's region {region}")
    install = str(item.get("install_time") or "")[:10] or None
    values: dict[str, Any] = {
        "gb_id": gb_id,
        "name": item.get("name") or gb_id,
        "level": str(item["po_type"]) if item.get("po_type") is not None else "9",
        "lon": lon,
        "lat": lat,
        "region_code": region,
        "address": item.get("address") or None,
        "hfov": item.get("hfov"),
        "vfov": item.get("vfov"),
        "max_view_distance": item.get("max_view_distance"),
        "owner": item.get("management_unit") or item.get("owner") or None,
        "contact": item.get("contact_info") or None,
        "installed_at": install,
        "record_days": item.get("record_save_days"),
        "vendor": item.get("manufacturer") or None,
        "model": item.get("model") or None,
        "mac": item.get("mac") or None,
        "ip": item.get("ip_address") or None,
    }
    return values, notes


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(float(a) - float(b)) < 1e-4
    return str(a) == str(b)


class GbDevices:
    def __init__(self, pool: asyncpg.Pool, box: CredentialBox, registry: Registry, inbox: Inbox):
        self.pool = pool
        self.box = box
        self.registry = registry
        self.inbox = inbox
        self._passwords: dict[str, tuple[float, str | None]] = {}

    # -- devices -----------------------------------------------------------------------------
    async def password(self, device_id: str) -> str | None:
        """The device's own password (sealed at rest), or None to use the default.

        Cached for a minute in a bounded map (every REGISTER asks, twice with the challenge;
        a registration storm must not queue on the database); `set_password` through this
        store clears the entry, so a change is effective at once in this process.
        """
        now = time.monotonic()
        hit = self._passwords.get(device_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        sealed = await self.pool.fetchval(
            "SELECT password FROM gb_devices WHERE device_id = $1", device_id
        )
        value = None if sealed is None else self.box.open(sealed)[1]
        if len(self._passwords) >= _PASSWORD_CACHE:
            self._passwords.clear()  # crude but bounded; refilled by the next registrations
        self._passwords[device_id] = (now + 60.0, value)
        return value

    async def set_password(self, actor: Actor, device_id: str, password: str | None) -> None:
        self._passwords.pop(device_id, None)
        pair = self.box.seal(None, password) if password else None
        sealed = pair[0] if pair else None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO gb_devices (device_id, type_code, region_code, password)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (device_id) DO UPDATE SET password = $4, updated_at = now()""",
                device_id,
                device_id[10:13],
                device_id[:6],
                sealed,
            )
            from camera_registry.store import audit

            await audit.record(
                conn,
                actor,
                "gb28181.password",
                region_code=device_id[:6],
                detail={"device_id": device_id, "set": sealed is not None},
            )

    async def registered(
        self,
        device_id: str,
        *,
        transport: str,
        source_host: str,
        source_port: int,
        contact: str,
        user_agent: str,
        expires_s: int,
    ) -> None:
        await self.pool.execute(
            """INSERT INTO gb_devices (device_id, type_code, region_code, transport, source_host,
                   source_port, contact, user_agent, registered_at, expires_at, online)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), now() + make_interval(secs => $9),
                       true)
               ON CONFLICT (device_id) DO UPDATE SET transport = $4, source_host = $5,
                   source_port = $6, contact = $7, user_agent = $8, registered_at = now(),
                   expires_at = now() + make_interval(secs => $9), online = true,
                   updated_at = now()""",
            device_id,
            device_id[10:13],
            device_id[:6],
            transport,
            source_host,
            source_port,
            contact,
            user_agent,
            float(expires_s),
        )

    async def offline(self, device_id: str) -> None:
        await self.pool.execute(
            "UPDATE gb_devices SET online = false, updated_at = now() WHERE device_id = $1",
            device_id,
        )

    async def keepalive_many(self, device_ids: Sequence[str]) -> None:
        """Keepalives of many devices in one statement (the bridge batches them per second)."""
        await self.pool.execute(
            """UPDATE gb_devices SET last_keepalive = now(), online = true
               WHERE device_id = ANY($1::text[])""",
            list(device_ids),
        )

    async def device_info(self, device_id: str, info: Mapping[str, str]) -> None:
        channels = info.get("Channel", "")
        await self.pool.execute(
            """UPDATE gb_devices SET name = $2, manufacturer = $3, model = $4, firmware = $5,
                   channel_count = $6, updated_at = now() WHERE device_id = $1""",
            device_id,
            info.get("DeviceName") or None,
            info.get("Manufacturer") or None,
            info.get("Model") or None,
            info.get("Firmware") or None,
            int(channels) if channels.isdigit() else None,
        )

    # -- catalog -----------------------------------------------------------------------------
    async def apply_catalog(
        self,
        device_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        complete: bool,
        charset: str | None = None,
    ) -> CatalogOutcome:
        """Store the tree, create or patch the cameras, mark channels gone from a complete catalog.

        New cameras are created together (`Registry.create_many`: one validation pass, one
        transaction); existing ones are patched one by one, and only when a field changed. A
        partial catalog never marks anything removed: a channel that did not arrive may still
        exist.
        """
        out = CatalogOutcome()
        actor = Actor(name=f"gb28181:{device_id}", role=Role.ADMIN)
        camera_of: dict[str, uuid.UUID] = {}
        problem_of: dict[str, str] = {}
        prepared: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for item in items:
            item_id = str(item["device_id"])
            if item_id[10:13] not in CAMERA_TYPES or len(item_id) != 20:
                out.tree += 1
                continue
            values, notes = camera_values(item)
            mismatch = [n for n in notes if n.startswith("CivilCode")]
            if mismatch:
                problem_of[item_id] = mismatch[0]
            else:
                prepared.append((item, values))
        existing = {
            r["gb_id"]: r
            for r in await self.pool.fetch(
                "SELECT id, version, gb_id FROM cameras WHERE gb_id = ANY($1::text[])",
                [v["gb_id"] for _, v in prepared],
            )
        }
        new = [(i, v) for i, v in prepared if v["gb_id"] not in existing]
        created, refused = await self.registry.create_many(actor, [v for _, v in new])
        later: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for pos, (item, values) in enumerate(new):
            item_id = str(item["device_id"])
            if pos in created:
                camera_of[item_id] = uuid.UUID(created[pos]["id"])
                out.created += 1
                continue
            errs = refused.get(pos, [])
            if any(e.field == "gb_id" and "exists" in e.message for e in errs):
                later.append((item, values))  # created meanwhile (another device lists it)
            else:
                problem_of[item_id] = "; ".join(f"{e.field}: {e.message}" for e in errs)
        for item, values in [(i, v) for i, v in prepared if v["gb_id"] in existing] + later:
            item_id = str(item["device_id"])
            camera_id, problem, change = await self._camera(actor, values)
            if problem is not None:
                problem_of[item_id] = problem
            else:
                assert camera_id is not None
                camera_of[item_id] = camera_id
                if change == "updated":
                    out.updated += 1
                else:
                    out.unchanged += 1
        out.problems = problem_of
        out.to_inbox = len(problem_of)
        if problem_of:
            await self._to_inbox(
                actor, device_id, [i for i in items if str(i["device_id"]) in problem_of],
                problem_of,
            )  # fmt: skip
        await self.pool.executemany(
            """INSERT INTO gb_catalog_items (device_id, item_id, parent_id, type_code, name,
                   civil_code, status, item, camera_id, problem, removed)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false)
               ON CONFLICT (device_id, item_id) DO UPDATE SET parent_id = $3, type_code = $4,
                   name = $5, civil_code = $6, status = $7, item = $8,
                   camera_id = COALESCE($9, gb_catalog_items.camera_id), problem = $10,
                   removed = false, updated_at = now()""",
            [
                (
                    device_id,
                    str(item["device_id"]),
                    item.get("parent_id") or None,
                    str(item["device_id"])[10:13],
                    item.get("name") or None,
                    item.get("civil_code") or None,
                    item.get("status") or None,
                    json.dumps(dict(item), ensure_ascii=False, default=str),
                    camera_of.get(str(item["device_id"])),
                    problem_of.get(str(item["device_id"])),
                )
                for item in items
            ],
        )
        if complete:
            seen = [str(i["device_id"]) for i in items]
            status = await self.pool.execute(
                """UPDATE gb_catalog_items SET removed = true, updated_at = now()
                   WHERE device_id = $1 AND NOT removed AND NOT (item_id = ANY($2::text[]))""",
                device_id,
                seen,
            )
            out.removed = int(status.split()[-1])
        await self.pool.execute(
            """UPDATE gb_devices SET catalog_at = now(), catalog_complete = $2, catalog_items = $3,
                   charset = COALESCE($4, charset), updated_at = now() WHERE device_id = $1""",
            device_id,
            complete,
            len(items),
            charset,
        )
        return out

    async def remove_items(self, device_id: str, item_ids: Sequence[str]) -> int:
        """NOTIFY DEL: mark removed, never delete."""
        status = await self.pool.execute(
            """UPDATE gb_catalog_items SET removed = true, updated_at = now()
               WHERE device_id = $1 AND item_id = ANY($2::text[])""",
            device_id,
            list(item_ids),
        )
        return int(status.split()[-1])

    async def set_item_status(self, device_id: str, item_id: str, status: str) -> None:
        await self.pool.execute(
            """UPDATE gb_catalog_items SET status = $3, updated_at = now()
               WHERE device_id = $1 AND item_id = $2""",
            device_id,
            item_id,
            status,
        )

    async def _camera(
        self, actor: Actor, values: dict[str, Any]
    ) -> tuple[uuid.UUID | None, str | None, str]:
        """Patch an existing camera with what changed; (id, problem, "updated"|"unchanged")."""
        cur = await self.pool.fetchrow(
            "SELECT id, version FROM cameras WHERE gb_id = $1", values["gb_id"]
        )
        if cur is None:
            return None, "the camera vanished while its catalog was applied; query again", "none"
        try:
            current = await self.registry.get(actor, str(cur["id"]))
            # compare as stored: the validator normalises (MAC separators, dates, levels)
            batch = self.registry.validate_one(actor, values)
            patch = {
                k: values[k]
                for k in _CAMERA_FIELDS
                if not _same(_comparable(k, current.get(k)), _comparable(k, batch.cols[k][0]))
            }
            if not patch:
                return cur["id"], None, "unchanged"
            await self.registry.update(actor, str(cur["id"]), cur["version"], patch)
            return cur["id"], None, "updated"
        except RegistryError as exc:
            return None, _reasons(exc), "none"

    async def _to_inbox(
        self,
        actor: Actor,
        device_id: str,
        items: Sequence[Mapping[str, Any]],
        problems: Mapping[str, str],
    ) -> None:
        src = await self.pool.fetchrow(
            "SELECT source_host, source_port FROM gb_devices WHERE device_id = $1", device_id
        )
        host = src["source_host"] if src else ""
        port = (src["source_port"] if src else 0) or 0
        await self.inbox.upsert(
            actor,
            [
                {
                    "endpoint": f"gb28181:{item['device_id']}",
                    "address": item.get("ip_address") or host,
                    "port": item.get("port") or port,
                    "vendor": item.get("manufacturer") or None,
                    "model": item.get("model") or None,
                    "mac": item.get("mac") or None,
                    "failure": "gb28181_invalid",
                    "detail": f"{item.get('name') or ''} ({item['device_id']}): "
                    f"{problems[str(item['device_id'])]}",
                }
                for item in items
            ],
        )

    async def channel_cameras(self, device_id: str) -> list[tuple[uuid.UUID, str]]:
        """(camera id, the device's last Status word) of the device's live camera channels."""
        rows = await self.pool.fetch(
            """SELECT camera_id, coalesce(status, '') AS status FROM gb_catalog_items
               WHERE device_id = $1 AND camera_id IS NOT NULL AND NOT removed""",
            device_id,
        )
        return [(r["camera_id"], r["status"]) for r in rows]

    async def channels_of(self, device_ids: Sequence[str]) -> list[tuple[uuid.UUID, str]]:
        """(camera id, last Status word) of the live camera channels of all these devices."""
        rows = await self.pool.fetch(
            """SELECT camera_id, coalesce(status, '') AS status FROM gb_catalog_items
               WHERE device_id = ANY($1::text[]) AND camera_id IS NOT NULL AND NOT removed""",
            list(device_ids),
        )
        return [(r["camera_id"], r["status"]) for r in rows]

    async def item_cameras(self, device_id: str, item_ids: Sequence[str]) -> dict[str, uuid.UUID]:
        rows = await self.pool.fetch(
            """SELECT item_id, camera_id FROM gb_catalog_items
               WHERE device_id = $1 AND item_id = ANY($2::text[]) AND camera_id IS NOT NULL""",
            device_id,
            list(item_ids),
        )
        return {r["item_id"]: r["camera_id"] for r in rows}

    async def channel_of_camera(self, camera_id: str) -> tuple[str, str, str] | None:
        """(device ID, channel ID, camera GB ID) when the camera is a live GB/T 28181 channel."""
        try:
            cid = uuid.UUID(camera_id)
        except ValueError:
            return None
        rec = await self.pool.fetchrow(
            """SELECT i.device_id, i.item_id, c.gb_id FROM gb_catalog_items i
               JOIN cameras c ON c.id = i.camera_id
               WHERE i.camera_id = $1 AND NOT i.removed ORDER BY i.updated_at DESC LIMIT 1""",
            cid,
        )
        return (rec["device_id"], rec["item_id"], rec["gb_id"]) if rec else None

    # -- reads -------------------------------------------------------------------------------
    async def page(
        self, actor: Actor, *, region: str | None = None, online: bool | None = None,
        limit: int = 100, after: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
        prefix = region or actor.scope or ""
        if actor.scope and not prefix.startswith(actor.scope):
            prefix = actor.scope
        low, high = region_range(prefix) if prefix else ("", "\uffff")
        rows = await self.pool.fetch(
            f"""SELECT {_DEVICE_COLUMNS} FROM gb_devices
               WHERE region_code >= $1 AND region_code < $2
                 AND ($3::boolean IS NULL OR online = $3)
                 AND ($4::text IS NULL OR device_id > $4)
               ORDER BY device_id LIMIT $5""",
            low,
            high,
            online,
            after,
            limit + 1,
        )
        nxt = rows[limit - 1]["device_id"] if len(rows) > limit else None
        return [_row(r) for r in rows[:limit]], nxt

    async def get(self, actor: Actor, device_id: str) -> dict[str, Any]:
        rec = await self.pool.fetchrow(
            f"SELECT {_DEVICE_COLUMNS} FROM gb_devices WHERE device_id = $1", device_id
        )
        if rec is None or not actor.covers(rec["region_code"]):
            raise NotFound(f"no GB/T 28181 device {device_id} in your region scope")
        out = _row(rec)
        items = await self.pool.fetch(
            """SELECT item_id, parent_id, type_code, name, civil_code, status, camera_id,
                      problem, removed, updated_at FROM gb_catalog_items
               WHERE device_id = $1 ORDER BY item_id""",
            device_id,
        )
        out["channels"] = [_row(r) for r in items]
        return out


_DEVICE_COLUMNS = (
    "device_id, type_code, region_code, transport, source_host, source_port, contact, "
    "user_agent, charset, registered_at, expires_at, last_keepalive, online, name, manufacturer, "
    "model, firmware, channel_count, catalog_at, catalog_complete, catalog_items, "
    "(password IS NOT NULL) AS own_password"
)


def _reasons(exc: RegistryError) -> str:
    return "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail


def _comparable(key: str, value: Any) -> Any:
    if key == "level" and value is not None:
        return str(value)
    if key == "installed_at" and value is not None:
        return str(value)[:10]
    return value


def _row(rec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, uuid.UUID):
            v = str(v)
        elif isinstance(v, dt.datetime | dt.date):
            v = v.isoformat()
        out[k] = v
    return out
