"""GB/T 28181 devices and their catalogs: the one writer of `gb_devices` and `gb_catalog_items`.

Cameras among the catalog items (types 131/132) are written only through the cameras store
(`Registry.create` / `Registry.update`, validated and audited like any other write), keyed by
their GB ID. An item that fails validation is kept here with its reason and put in the
discovery inbox, never dropped. Re-reading an unchanged catalog changes no camera: only the
fields that differ are patched, so one change is one audited update.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.errors import NotFound, RegistryError
from camera_registry.gbid import CAMERA_TYPES
from camera_registry.store.cameras import PUBLIC_COLUMNS, Registry, camera_out, region_range
from camera_registry.store.db import json_text
from camera_registry.store.inbox import Inbox
from camera_registry.validate import validate_columns

_PASSWORD_CACHE = 200_000
# Whose scope a batch's INSERT of new cameras is checked against (every region: these are the
# devices we accepted); each camera's audit record names the device that listed it.
_BATCH_ACTOR = Actor(name="gb28181:catalog", role=Role.ADMIN)
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


@dataclass(frozen=True, slots=True)
class CatalogInput:
    """One device's catalog as the SIP side assembled it (items as `CatalogItem` fields)."""

    device_id: str
    items: Sequence[Mapping[str, Any]]
    complete: bool
    charset: str | None = None
    generation: int | None = None
    """Set when the catalog comes in several batches: each batch's items are marked with it,
    and at the `final` one the store counts the marked items against `sum_num` to decide
    whether the catalog is complete (and only then marks the unmarked ones removed)."""
    final: bool = True
    sum_num: int | None = None


@dataclass(slots=True)
class CatalogOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    to_inbox: int = 0
    tree: int = 0
    removed: int = 0
    complete: bool | None = None  # a final batch's verdict (None: more batches to come)
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


# camera field ← the catalog item fields that carry it (any one of them present is enough)
_CARRIED_BY: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "level": ("po_type",),
    "address": ("address",),
    "hfov": ("hfov",),
    "vfov": ("vfov",),
    "max_view_distance": ("max_view_distance",),
    "owner": ("management_unit", "owner"),
    "contact": ("contact_info",),
    "installed_at": ("install_time",),
    "record_days": ("record_save_days",),
    "vendor": ("manufacturer",),
    "model": ("model",),
    "mac": ("mac",),
    "ip": ("ip_address",),
}


def carried_fields(item: Mapping[str, Any], values: Mapping[str, Any]) -> frozenset[str]:
    """The camera fields this catalog item actually says something about.

    GB/T 28181 items are often partial (NOTIFY UPDATE, re-sent or trimmed catalogs, platforms
    that omit `<Info>`): a field the item leaves out (or sends empty) is not a request to
    clear what we hold — least of all a position or level a technician completed in the
    inbox. A position counts only when usable (0/0 and points outside China say nothing).
    """
    out = {"region_code"}  # from the item's own ID
    for key, sources in _CARRIED_BY.items():
        if any(item.get(src) not in (None, "") for src in sources):
            out.add(key)
    if values.get("lon") is not None and values.get("lat") is not None:
        out.update(("lon", "lat"))
    return frozenset(out)


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
        """The device's own password (sealed at rest), or None to use the default."""
        return (await self.passwords([device_id]))[device_id]

    async def passwords(self, device_ids: Sequence[str]) -> dict[str, str | None]:
        """Each device's own password (sealed at rest), or None to use the default.

        Cached for a minute in a bounded map (every REGISTER asks, twice with the challenge;
        a registration storm must not queue on the database), and the misses of many devices
        read in one query; `set_password` through this store clears the entry, so a change is
        effective at once in this process.
        """
        now = time.monotonic()
        out: dict[str, str | None] = {}
        missing: list[str] = []
        for device_id in device_ids:
            hit = self._passwords.get(device_id)
            if hit is not None and hit[0] > now:
                out[device_id] = hit[1]
            else:
                missing.append(device_id)
        if not missing:
            return out
        rows = await self.pool.fetch(
            "SELECT device_id, password FROM gb_device_passwords WHERE device_id = ANY($1::text[])",
            missing,
        )
        sealed = {r["device_id"]: r["password"] for r in rows}
        if len(self._passwords) + len(missing) > _PASSWORD_CACHE:
            self._passwords.clear()  # crude but bounded; refilled by the next registrations
        for device_id in missing:
            value = sealed.get(device_id)
            out[device_id] = None if value is None else self.box.open(value)[1]
            self._passwords[device_id] = (now + 60.0, out[device_id])
        return out

    async def set_password(self, actor: Actor, device_id: str, password: str | None) -> None:
        self._passwords.pop(device_id, None)
        pair = self.box.seal(None, password) if password else None
        sealed = pair[0] if pair else None
        async with self.pool.acquire() as conn, conn.transaction():
            # The device is listed (and scoped) before it first registers.
            await conn.execute(
                """INSERT INTO gb_devices (device_id, type_code, region_code) VALUES ($1, $2, $3)
                   ON CONFLICT (device_id) DO UPDATE SET updated_at = now()""",
                device_id,
                device_id[10:13],
                device_id[:6],
            )
            if sealed is None:
                await conn.execute(
                    "DELETE FROM gb_device_passwords WHERE device_id = $1", device_id
                )
            else:
                await conn.execute(
                    """INSERT INTO gb_device_passwords (device_id, password) VALUES ($1, $2)
                       ON CONFLICT (device_id) DO UPDATE SET password = $2, updated_at = now()""",
                    device_id,
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

    async def registered_many(
        self, registrations: Sequence[tuple[str, str, str, int, str, str, int]]
    ) -> None:
        """`registered` for many devices in one pipelined statement: (device ID, transport,
        source host, source port, Contact, User-Agent, expires s)."""
        if not registrations:
            return
        await self.pool.executemany(
            """INSERT INTO gb_devices (device_id, type_code, region_code, transport, source_host,
                   source_port, contact, user_agent, registered_at, expires_at, online)
               VALUES ($1, substr($1, 11, 3), left($1, 6), $2, $3, $4, $5, $6, now(),
                       now() + make_interval(secs => $7), true)
               ON CONFLICT (device_id) DO UPDATE SET transport = $2, source_host = $3,
                   source_port = $4, contact = $5, user_agent = $6, registered_at = now(),
                   expires_at = now() + make_interval(secs => $7), online = true,
                   updated_at = now()""",
            sorted((d, t, h, p, c, u, float(e)) for d, t, h, p, c, u, e in registrations),
        )

    async def set_charsets(self, seen: Sequence[tuple[str, str, str | None, bool]]) -> None:
        """What devices' bodies really are, and what they declared (shown per device), for
        many devices in one statement (one per device was 50,000 round trips at a wave).

        An upsert: the device's first body can be written before its registration's row.
        Rows are written in device order, as `registered_many` writes them (no deadlock)."""
        last = {
            device_id: (charset, (declared or "")[:40] or None, sniffed)
            for device_id, charset, declared, sniffed in seen
        }
        ids = sorted(last)
        if not ids:
            return
        await self.pool.execute(
            """INSERT INTO gb_devices AS g (device_id, type_code, region_code, charset,
                                            charset_declared, charset_sniffed)
               SELECT d, substr(d, 11, 3), left(d, 6), c, dc, sn
               FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[])
                    AS u(d, c, dc, sn)
               ORDER BY d
               ON CONFLICT (device_id) DO UPDATE SET charset = EXCLUDED.charset,
                   charset_declared = EXCLUDED.charset_declared,
                   charset_sniffed = EXCLUDED.charset_sniffed, updated_at = now()""",
            ids,
            [last[d][0] for d in ids],
            [last[d][1] for d in ids],
            [last[d][2] for d in ids],
        )

    @staticmethod
    async def counts(pool: asyncpg.Pool) -> dict[str, int]:
        """Devices whose registration has not expired, and of them those online."""
        rec = await pool.fetchrow(
            """SELECT count(*) FILTER (WHERE expires_at > now()) AS registered,
                      count(*) FILTER (WHERE expires_at > now() AND online) AS online
               FROM gb_devices"""
        )
        assert rec is not None
        return {"registered": rec["registered"], "online": rec["online"]}

    async def offline_many(self, device_ids: Sequence[str]) -> None:
        if not device_ids:
            return
        await self.pool.execute(
            """UPDATE gb_devices SET online = false, updated_at = now()
               WHERE device_id = ANY($1::text[])""",
            list(device_ids),
        )

    async def channel_pages(
        self, device_ids: Sequence[str], size: int = 10_000
    ) -> AsyncIterator[list[tuple[str, uuid.UUID, str]]]:
        """(device ID, camera id, last Status word) of these devices' live camera channels, in
        pages of `size` by key: a lower platform's loss fails millions of channels, which as
        one list (and one transaction) took a gigabyte."""
        after = ("", "")
        while True:
            rows = await self.pool.fetch(
                """SELECT device_id, item_id, camera_id, coalesce(status, '') AS status
                   FROM gb_catalog_items
                   WHERE device_id = ANY($1::text[]) AND (device_id, item_id) > ($2, $3)
                     AND camera_id IS NOT NULL AND NOT removed
                   ORDER BY device_id, item_id LIMIT $4""",
                list(device_ids),
                *after,
                size,
            )
            if rows:
                yield [(r["device_id"], r["camera_id"], r["status"]) for r in rows]
            if len(rows) < size:
                return
            after = (rows[-1]["device_id"], rows[-1]["item_id"])

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
        await self.device_info_many([(device_id, info)])

    async def device_info_many(self, infos: Sequence[tuple[str, Mapping[str, str]]]) -> None:
        """DeviceInfo answers of many devices in one pipelined statement (one per device at a
        registration wave would queue registrations behind them for the pool)."""
        rows = []
        for device_id, info in infos:
            channels = info.get("Channel", "")
            rows.append(
                (
                    device_id,
                    info.get("DeviceName") or None,
                    info.get("Manufacturer") or None,
                    info.get("Model") or None,
                    info.get("Firmware") or None,
                    int(channels) if channels.isdigit() else None,
                )
            )
        if not rows:
            return
        await self.pool.executemany(
            """UPDATE gb_devices SET name = $2, manufacturer = $3, model = $4, firmware = $5,
                   channel_count = $6, updated_at = now() WHERE device_id = $1""",
            sorted(rows, key=lambda r: r[0]),
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
        """One device's catalog: `apply_catalogs` with a batch of one."""
        return (await self.apply_catalogs([CatalogInput(device_id, items, complete, charset)]))[0]

    async def apply_catalogs(self, catalogs: Sequence[CatalogInput]) -> list[CatalogOutcome]:
        """Store the trees, create or patch the cameras, mark channels gone from complete catalogs,
        for many devices' catalogs in one transaction.

        Why a batch: a province's devices register together and their catalogs arrive together;
        applied one by one each costs ~6 commits and per-row statement triggers on `cameras`
        (measured 31 channels/s). Here every step is one set-based statement for the whole
        batch: one read of the cameras already known, one INSERT of the new ones (each with
        its audit record), one upsert of the items, one marking of removed channels, one
        update of the devices. A camera whose fields changed is still patched through
        `Registry.update` (one audited update per changed camera, in a savepoint so that one
        refusal does not undo the batch); an unchanged one is not written at all. A partial
        catalog never marks anything removed: a channel that did not arrive may still exist.
        A device should appear at most once per batch (the bridge keeps a second catalog of
        the same device for the next batch), so that its items are written in arrival order.

        A catalog with a `generation` comes in batches (a city's cascade is too big to hold):
        items are marked with it as they are written, and at its `final` batch the store, which
        alone has seen every batch, counts the marked items: SumNum of them is a complete
        catalog (the device's unmarked items are then marked removed); fewer is partial and
        removes nothing.
        """
        outs = [CatalogOutcome() for _ in catalogs]
        if not catalogs:
            return outs
        actors = [Actor(name=f"gb28181:{c.device_id}", role=Role.ADMIN) for c in catalogs]
        camera_of: list[dict[str, uuid.UUID]] = [{} for _ in catalogs]
        problem_of: list[dict[str, str]] = [{} for _ in catalogs]
        prepared: list[tuple[int, dict[str, Any]]] = []  # (catalog index, camera values)
        said_by: dict[tuple[int, str], Mapping[str, Any]] = {}  # each camera item, for patches
        for n, cat in enumerate(catalogs):
            for item in cat.items:
                item_id = str(item["device_id"])
                if item_id[10:13] not in CAMERA_TYPES or len(item_id) != 20:
                    outs[n].tree += 1
                    continue
                values, notes = camera_values(item)
                mismatch = [m for m in notes if m.startswith("CivilCode")]
                if mismatch:
                    problem_of[n][item_id] = mismatch[0]
                else:
                    prepared.append((n, values))
                    said_by[(n, item_id)] = item
        # The device's registration may still wait in its own batch: its row must exist. In a
        # statement of its own, committed at once: inserted inside the catalog's transaction,
        # the new rows stayed locked while the cameras were written, and a registration batch
        # upserting them (sorted, like the UPDATE at the end) deadlocked with it.
        await self.pool.execute(
            """INSERT INTO gb_devices (device_id, type_code, region_code)
               SELECT d, substr(d, 11, 3), left(d, 6) FROM unnest($1::text[]) AS d
               ORDER BY d ON CONFLICT (device_id) DO NOTHING""",
            sorted({c.device_id for c in catalogs}),
        )
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE gb_id = ANY($1::text[])",
                sorted({v["gb_id"] for _, v in prepared}),
            )
            existing = {r["gb_id"]: camera_out(r) for r in rows}
            known_before = set(existing)
            new = [(n, v) for n, v in prepared if v["gb_id"] not in existing]
            created, refused = await self.registry.create_many(
                _BATCH_ACTOR, [v for _, v in new], conn=conn, record_as=[actors[n] for n, _ in new]
            )
            later: list[tuple[int, dict[str, Any]]] = []
            for pos, (n, values) in enumerate(new):
                if pos in created:
                    camera_of[n][values["gb_id"]] = uuid.UUID(created[pos])
                    outs[n].created += 1
                    continue
                errs = refused.get(pos, [])
                if any(e.field == "gb_id" and "exists" in e.message for e in errs):
                    later.append((n, values))  # listed twice in this batch, or made meanwhile
                else:
                    problem_of[n][values["gb_id"]] = "; ".join(
                        f"{e.field}: {e.message}" for e in errs
                    )
            if later:
                rows = await conn.fetch(
                    f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE gb_id = ANY($1::text[])",
                    sorted({v["gb_id"] for _, v in later}),
                )
                existing.update({r["gb_id"]: camera_out(r) for r in rows})
            again = [(n, v) for n, v in prepared if v["gb_id"] in known_before]
            await self._patch_many(
                conn, actors, again + later, existing, outs, camera_of, problem_of, said_by
            )
            # One statement for the batch's items, not one execution per item (PostgreSQL's
            # per-execution cost was most of the upsert). A device is once per batch and its
            # an item listed twice (a NOTIFY may) is written as its last listing, so no row is
            # affected twice; in key order, as before.
            latest = {
                (cat.device_id, str(item["device_id"])): (
                    cat.device_id,
                    str(item["device_id"]),
                    item.get("parent_id") or None,
                    str(item["device_id"])[10:13],
                    item.get("name") or None,
                    item.get("civil_code") or None,
                    item.get("status") or None,
                    json_text(item),
                    camera_of[n].get(str(item["device_id"])),
                    problem_of[n].get(str(item["device_id"])),
                    cat.generation,
                )
                for n, cat in enumerate(catalogs)
                for item in cat.items
            }
            rows = [latest[key] for key in sorted(latest)]
            columns = [list(col) for col in zip(*rows, strict=True)] if rows else [[]] * 11
            await conn.execute(
                """INSERT INTO gb_catalog_items AS g (device_id, item_id, parent_id, type_code,
                       name, civil_code, status, item, camera_id, problem, removed, catalog_gen)
                   SELECT d, i, p, t, nm, cc, st, it::jsonb, cam, pr, false, gen
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                               $6::text[], $7::text[], $8::text[], $9::uuid[], $10::text[],
                               $11::bigint[])
                        AS u(d, i, p, t, nm, cc, st, it, cam, pr, gen)
                   ON CONFLICT (device_id, item_id) DO UPDATE SET
                       parent_id = EXCLUDED.parent_id, type_code = EXCLUDED.type_code,
                       name = EXCLUDED.name, civil_code = EXCLUDED.civil_code,
                       status = EXCLUDED.status, item = EXCLUDED.item,
                       camera_id = COALESCE(EXCLUDED.camera_id, g.camera_id),
                       problem = EXCLUDED.problem, removed = false,
                       catalog_gen = EXCLUDED.catalog_gen, updated_at = now()""",
                *columns,
            )
            total = {n: len(c.items) for n, c in enumerate(catalogs)}
            complete = {n: c.complete for n, c in enumerate(catalogs) if c.generation is None}
            ends = [(n, c) for n, c in enumerate(catalogs) if c.generation is not None and c.final]
            if ends:
                marked = await conn.fetch(
                    """SELECT f.n, (SELECT count(*) FROM gb_catalog_items g
                                    WHERE g.device_id = f.d AND g.catalog_gen = f.g) AS items
                       FROM unnest($1::int[], $2::text[], $3::bigint[]) AS f(n, d, g)""",
                    [n for n, _ in ends],
                    [c.device_id for _, c in ends],
                    [c.generation for _, c in ends],
                )
                for rec in marked:
                    n, total[n] = rec["n"], rec["items"]
                    complete[n] = catalogs[n].sum_num is not None and (
                        total[n] >= (catalogs[n].sum_num or 0)
                    )
                done = [(n, c) for n, c in ends if complete[n]]
                gone = await conn.fetch(
                    """UPDATE gb_catalog_items g SET removed = true, updated_at = now()
                       FROM unnest($1::text[], $2::bigint[]) AS f(d, g)
                       WHERE g.device_id = f.d AND NOT g.removed
                         AND g.catalog_gen IS DISTINCT FROM f.g
                       RETURNING g.device_id""",
                    [c.device_id for _, c in done],
                    [c.generation for _, c in done],
                )
                index = {c.device_id: n for n, c in done}
                for rec in gone:
                    outs[index[rec["device_id"]]].removed += 1
            for n, verdict in complete.items():
                outs[n].complete = verdict
            whole = [(n, c) for n, c in enumerate(catalogs) if c.complete and c.generation is None]
            if whole:
                gone = await conn.fetch(
                    """WITH seen AS (SELECT * FROM unnest($2::text[], $3::text[]) AS s(d, i))
                       UPDATE gb_catalog_items g SET removed = true, updated_at = now()
                       WHERE g.device_id = ANY($1::text[]) AND NOT g.removed
                         AND NOT EXISTS (SELECT 1 FROM seen WHERE seen.d = g.device_id
                                                              AND seen.i = g.item_id)
                       RETURNING g.device_id""",
                    [c.device_id for _, c in whole],
                    [c.device_id for _, c in whole for _ in c.items],
                    [str(i["device_id"]) for _, c in whole for i in c.items],
                )
                index = {c.device_id: n for n, c in whole}
                for rec in gone:
                    outs[index[rec["device_id"]]].removed += 1
            await conn.executemany(
                """UPDATE gb_devices SET catalog_at = now(), catalog_complete = $2,
                       catalog_items = $3, charset = COALESCE($4, charset), updated_at = now()
                   WHERE device_id = $1""",
                sorted(
                    (c.device_id, complete[n], total[n], c.charset)
                    for n, c in enumerate(catalogs)
                    if n in complete  # a batch with more to come leaves the device as it was
                ),
            )
        for n, cat in enumerate(catalogs):
            outs[n].problems = problem_of[n]
            outs[n].to_inbox = len(problem_of[n])
            if problem_of[n]:
                await self._to_inbox(
                    actors[n], cat.device_id,
                    [i for i in cat.items if str(i["device_id"]) in problem_of[n]],
                    problem_of[n],
                )  # fmt: skip
        return outs

    async def _patch_many(
        self,
        conn: asyncpg.Connection,
        actors: Sequence[Actor],
        known: Sequence[tuple[int, dict[str, Any]]],
        current: Mapping[str, dict[str, Any]],
        outs: list[CatalogOutcome],
        camera_of: list[dict[str, uuid.UUID]],
        problem_of: list[dict[str, str]],
        said_by: Mapping[tuple[int, str], Mapping[str, Any]],
    ) -> None:
        """Compare catalog values with the stored cameras in one validation pass; patch only
        what differs, each change its own audited update.

        Only the fields the item carried are compared and patched; the others are validated
        as we hold them (a level-1 item without a position is complete when we hold one)."""
        if not known:
            return
        # What each item said, only for cameras we already hold: new cameras take every field.
        carried = {(n, v["gb_id"]): carried_fields(said_by[(n, v["gb_id"])], v) for n, v in known}
        merged: list[dict[str, Any]] = []
        for n, values in known:
            said = carried[(n, values["gb_id"])]
            cur = current[values["gb_id"]]
            merged.append(
                {
                    k: (v if k in said or k not in _CAMERA_FIELDS else cur.get(k))
                    for k, v in values.items()
                }
            )
        keys = sorted({k for v in merged for k in v})
        cols = {k: [v.get(k) for v in merged] for k in keys}
        batch, errors = validate_columns(cols, list(range(len(known))), box=self.registry.box)
        bad: dict[int, list[str]] = {}
        for err in errors:
            bad.setdefault(int(err.row or 0), []).append(f"{err.field}: {err.message}")
        at = {row: pos for pos, row in enumerate(batch.rows.tolist())}
        for row, (n, values) in enumerate(known):
            gb_id = values["gb_id"]
            if row in bad or row not in at:
                problem_of[n][gb_id] = "; ".join(bad.get(row, ["invalid"]))
                continue
            cur = current[gb_id]
            pos = at[row]
            said = carried[(n, gb_id)]
            patch = {
                k: values[k]
                for k in _CAMERA_FIELDS
                if k in said
                and not _same(_comparable(k, cur.get(k)), _comparable(k, batch.cols[k][pos]))
            }
            camera_of[n][gb_id] = uuid.UUID(cur["id"])
            if not patch:
                outs[n].unchanged += 1
                continue
            try:
                async with conn.transaction():  # a savepoint: a refusal undoes this camera only
                    after = await self.registry.update(
                        actors[n], cur["id"], cur["version"], patch, conn=conn
                    )
            except RegistryError as exc:
                problem_of[n][gb_id] = _reasons(exc)
                del camera_of[n][gb_id]
                continue
            current[gb_id].update(after)  # mutable: the same camera listed twice patches once
            outs[n].updated += 1

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

    async def _to_inbox(
        self,
        actor: Actor,
        device_id: str,
        items: Sequence[Mapping[str, Any]],
        problems: Mapping[str, str],
    ) -> None:
        """Refused channels wait in the discovery inbox, keyed by their GB ID, found in the
        channel's own region (technicians scoped to it see them there). The address is the
        channel's identity (`gb28181:<device>/<channel>`: which device listed it, known even
        before the device's registration is stored, never taken for an IP the inbox would
        move cameras to); registering it there reads the stored catalog item."""
        src = await self.pool.fetchrow(
            "SELECT source_port FROM gb_devices WHERE device_id = $1", device_id
        )
        port = (src["source_port"] if src else None) or 0
        by_region: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            channel = str(item["device_id"])
            by_region.setdefault(channel[:6], []).append(
                {
                    "endpoint": f"gb28181:{channel}",
                    "address": f"gb28181:{device_id}/{channel}",
                    "port": item.get("port") or port,
                    "vendor": item.get("manufacturer") or None,
                    "model": item.get("model") or None,
                    "mac": item.get("mac") or None,
                    "failure": "gb28181_invalid",
                    "detail": f"{item.get('name') or ''} ({channel}): {problems[channel]}",
                }
            )
        for region, found in sorted(by_region.items()):
            await self.inbox.upsert(dataclasses.replace(actor, scope=region), found)

    async def refused_channel(self, item_id: str) -> tuple[str, dict[str, Any]] | None:
        """(device ID, camera values) of a channel last refused into the inbox, as the device
        listed it (the base a technician completes there)."""
        rec = await self.pool.fetchrow(
            """SELECT device_id, item FROM gb_catalog_items
               WHERE item_id = $1 AND NOT removed ORDER BY updated_at DESC LIMIT 1""",
            item_id,
        )
        if rec is None or not isinstance(rec["item"], dict):
            return None
        return rec["device_id"], camera_values(rec["item"])[0]

    async def link_channel(self, device_id: str, item_id: str, camera_id: str) -> None:
        """The camera a technician registered from the inbox is this channel's (live view,
        status); the channel's problem is settled."""
        await self.pool.execute(
            """UPDATE gb_catalog_items SET camera_id = $3::uuid, problem = NULL, updated_at = now()
               WHERE device_id = $1 AND item_id = $2""",
            device_id,
            item_id,
            camera_id,
        )

    async def item_cameras(self, device_id: str, item_ids: Sequence[str]) -> dict[str, uuid.UUID]:
        rows = await self.pool.fetch(
            """SELECT item_id, camera_id FROM gb_catalog_items
               WHERE device_id = $1 AND item_id = ANY($2::text[]) AND camera_id IS NOT NULL""",
            device_id,
            list(item_ids),
        )
        return {r["item_id"]: r["camera_id"] for r in rows}

    async def items_cameras(
        self, items: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], uuid.UUID]:
        """Camera ids of many (device ID, item ID) channels in one query (a catalog batch)."""
        rows = await self.pool.fetch(
            """SELECT g.device_id, g.item_id, g.camera_id FROM gb_catalog_items g
               JOIN unnest($1::text[], $2::text[]) AS k(d, i) ON g.device_id = k.d
                                                         AND g.item_id = k.i
               WHERE g.camera_id IS NOT NULL""",
            [d for d, _ in items],
            [i for _, i in items],
        )
        return {(r["device_id"], r["item_id"]): r["camera_id"] for r in rows}

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
    "user_agent, charset, charset_declared, charset_sniffed, registered_at, expires_at, "
    "last_keepalive, online, name, manufacturer, "
    "model, firmware, channel_count, catalog_at, catalog_complete, catalog_items, "
    "EXISTS (SELECT 1 FROM gb_device_passwords p WHERE p.device_id = gb_devices.device_id)"
    " AS own_password"
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
