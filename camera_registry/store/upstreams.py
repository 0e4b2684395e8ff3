"""GB/T 28181 upper platforms (the cascade's configuration) and the reads the cascade serves.

The one writer of `gb28181_upstreams`. Passwords are sealed with the credential box and never
leave this module except to the SIP client that needs them; rows read back carry
`password_set` instead.

A catalog push fixes what it will send in one short REPEATABLE READ transaction (the visible
GB IDs into a temporary table, the counts and groups from the same snapshot), then reads the
items page by page, by key, each page its own short statement: `SumNum` is exact and every
counted camera is sent once, yet no snapshot is held for the minutes 2.4 M items take (a held
snapshot keeps VACUUM from removing the rows health updates leave behind, in every table).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
from pydantic import ValidationError

from camera_registry.actor import Actor
from camera_registry.config import UpstreamSettings
from camera_registry.crypto import CredentialBox
from camera_registry.errors import (
    FieldError,
    NotFound,
    RegistryError,
    ValidationFailed,
)
from camera_registry.store import audit
from camera_registry.store.db import row_dict


class DuplicateUpstream(RegistryError):
    """An upper platform with this name exists already (names are how operators tell them apart)."""


def _errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(".".join(str(p) for p in err["loc"]) or "body", err["msg"])
        for err in exc.errors()
    ]


def validate(data: dict[str, Any]) -> UpstreamSettings:
    try:
        return UpstreamSettings.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            "the upstream has invalid fields; correct them and send it again", _errors(exc)
        ) from None


def _public(settings: UpstreamSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json", exclude={"password"})


def region_clause(regions: Sequence[str], column: str = "gb_id", first: int = 1) -> str:
    """`column LIKE ANY(...)` for an upstream's region prefixes; TRUE when it may see all.

    On `cameras` the GB ID is the column: its first six digits are the region code (a CHECK
    says so) and its "C"-collated index serves a prefix LIKE in GB ID order.
    """
    if not regions:
        return "TRUE"
    return f"{column} LIKE ANY(${first}::text[])"


def region_args(regions: Sequence[str]) -> list[Any]:
    return [[f"{r}%" for r in regions]] if regions else []


class Upstreams:
    def __init__(self, pool: asyncpg.Pool, box: CredentialBox) -> None:
        self.pool = pool
        self.box = box

    def _seal(self, settings: UpstreamSettings) -> bytes:
        sealed = self.box.seal(None, settings.password.get_secret_value())
        assert sealed is not None
        return sealed[0]

    def _row(self, rec: asyncpg.Record) -> dict[str, Any]:
        out = row_dict(rec)
        out.pop("password", None)
        out["password_set"] = True
        return out

    def settings_of(self, rec: asyncpg.Record | dict[str, Any]) -> UpstreamSettings:
        """The full settings of a stored row, password opened (for the SIP client only)."""
        _, password = self.box.open(rec["password"])
        return UpstreamSettings.model_validate({**rec["settings"], "password": password})

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT * FROM gb28181_upstreams ORDER BY name")
        return [self._row(r) for r in rows]

    async def all_with_secrets(self) -> list[tuple[uuid.UUID, UpstreamSettings]]:
        rows = await self.pool.fetch("SELECT * FROM gb28181_upstreams ORDER BY name")
        return [(r["id"], self.settings_of(r)) for r in rows]

    async def _fetch(self, conn: asyncpg.Connection, upstream_id: str | uuid.UUID) -> Any:
        try:
            uid = uuid.UUID(str(upstream_id))
        except ValueError:
            raise NotFound(
                f"no upstream {upstream_id}; list them with GET /api/v1/gb28181/upstreams"
            ) from None
        rec = await conn.fetchrow("SELECT * FROM gb28181_upstreams WHERE id = $1", uid)
        if rec is None:
            raise NotFound(
                f"no upstream {upstream_id}; list them with GET /api/v1/gb28181/upstreams"
            )
        return rec

    async def get(self, upstream_id: str | uuid.UUID) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            return self._row(await self._fetch(conn, upstream_id))

    async def get_with_secret(self, upstream_id: str | uuid.UUID) -> UpstreamSettings:
        async with self.pool.acquire() as conn:
            return self.settings_of(await self._fetch(conn, upstream_id))

    async def create(
        self, actor: Actor, settings: UpstreamSettings, *, source: str = "api"
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                rec = await conn.fetchrow(
                    """INSERT INTO gb28181_upstreams (name, source, settings, password)
                       VALUES ($1, $2, $3, $4) RETURNING *""",
                    settings.name,
                    source,
                    _public(settings),
                    self._seal(settings),
                )
            except asyncpg.UniqueViolationError:
                raise DuplicateUpstream(
                    f"an upstream named {settings.name!r} exists; pick another name or PATCH it",
                    [FieldError("name", "already used")],
                ) from None
            await audit.record(
                conn,
                actor,
                "gb28181.upstream.create",
                after={"id": str(rec["id"]), **_public(settings)},
            )
        return self._row(rec)

    async def update(
        self, actor: Actor, upstream_id: str | uuid.UUID, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply a partial change; the result is validated whole, as the file would be."""
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await self._fetch(conn, upstream_id)
            current = self.settings_of(rec)
            merged = {**current.model_dump(), **patch}
            if "password" not in patch:
                merged["password"] = current.password.get_secret_value()
            settings = validate(merged)
            try:
                new = await conn.fetchrow(
                    """UPDATE gb28181_upstreams
                          SET name = $2, settings = $3, password = $4, updated_at = now(),
                              version = version + 1
                        WHERE id = $1 RETURNING *""",
                    rec["id"],
                    settings.name,
                    _public(settings),
                    self._seal(settings),
                )
            except asyncpg.UniqueViolationError:
                raise DuplicateUpstream(
                    f"an upstream named {settings.name!r} exists; pick another name",
                    [FieldError("name", "already used")],
                ) from None
            changed = sorted(patch)
            await audit.record(
                conn,
                actor,
                "gb28181.upstream.update",
                before=_public(current),
                after=_public(settings),
                detail={"id": str(rec["id"]), "fields": changed},
            )
        return self._row(new)

    async def delete(self, actor: Actor, upstream_id: str | uuid.UUID) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await self._fetch(conn, upstream_id)
            await conn.execute("DELETE FROM gb28181_upstreams WHERE id = $1", rec["id"])
            await audit.record(
                conn,
                actor,
                "gb28181.upstream.delete",
                before={"id": str(rec["id"]), **rec["settings"]},
            )

    async def sync_config(self, actor: Actor, configured: Sequence[UpstreamSettings]) -> None:
        """Make the config file's upstreams the stored ones of source 'config' (by name).

        An API-made upstream with the same name as a configured one is an operator conflict
        the service cannot settle: it stops start-up naming it.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            rows = {r["name"]: r for r in await conn.fetch("SELECT * FROM gb28181_upstreams")}
            names = {u.name for u in configured}
            for settings in configured:
                rec = rows.get(settings.name)
                if rec is not None and rec["source"] != "config":
                    raise RegistryError(
                        f"upstream {settings.name!r} is in the config file and was also made over "
                        "the API; delete one of them"
                    )
                if rec is None:
                    await conn.execute(
                        """INSERT INTO gb28181_upstreams (name, source, settings, password)
                           VALUES ($1, 'config', $2, $3)""",
                        settings.name,
                        _public(settings),
                        self._seal(settings),
                    )
                elif self.settings_of(rec) != settings:
                    await conn.execute(
                        """UPDATE gb28181_upstreams SET settings = $2, password = $3,
                                  updated_at = now(), version = version + 1 WHERE id = $1""",
                        rec["id"],
                        _public(settings),
                        self._seal(settings),
                    )
            gone = [r["id"] for n, r in rows.items() if r["source"] == "config" and n not in names]
            if gone:
                await conn.execute("DELETE FROM gb28181_upstreams WHERE id = ANY($1)", gone)
            if gone or configured:
                await audit.record(
                    conn,
                    actor,
                    "gb28181.upstream.sync_config",
                    detail={"configured": sorted(names), "removed": len(gone)},
                )


# --- what the cascade reads ----------------------------------------------------------------

CATALOG_COLUMNS = (
    "id, gb_id, name, level, lon, lat, region_code, address, hfov, vfov, max_view_distance, "
    "owner, contact, installed_at, record_days, vendor, model, mac, ip, onvif_port, status, "
    "azimuth"
)


async def catalog_counts(conn: asyncpg.Connection, regions: Sequence[str]) -> tuple[int, list[str]]:
    """(cameras visible to the upstream, the region codes they lie in), in the caller's snapshot."""
    where = region_clause(regions)
    rows = await conn.fetch(
        f"SELECT region_code, count(*) AS n FROM cameras WHERE {where} GROUP BY region_code",
        *region_args(regions),
    )
    return sum(r["n"] for r in rows), sorted(r["region_code"] for r in rows)


async def catalog_rows(
    conn: asyncpg.Connection, regions: Sequence[str], *, prefetch: int = 500
) -> AsyncIterator[asyncpg.Record]:
    """Every visible camera once, in GB ID order, through a server-side cursor.

    The caller holds the transaction; `prefetch` rows are in memory at a time, whatever the
    catalog size.
    """
    where = region_clause(regions)
    async for rec in conn.cursor(
        f"SELECT {CATALOG_COLUMNS} FROM cameras WHERE {where} ORDER BY gb_id",
        *region_args(regions),
        prefetch=prefetch,
    ):
        yield rec


async def channel(pool: asyncpg.Pool, gb_id: str) -> asyncpg.Record | None:
    """One camera by GB ID with what a live view upward needs (streams, sealed credentials)."""
    return await pool.fetchrow(
        f"SELECT {CATALOG_COLUMNS}, streams, credentials FROM cameras WHERE gb_id = $1", gb_id
    )


async def count_visible(pool: asyncpg.Pool, regions: Sequence[str]) -> int:
    where = region_clause(regions)
    n = await pool.fetchval(f"SELECT count(*) FROM cameras WHERE {where}", *region_args(regions))
    return int(n or 0)


async def changed_since(
    pool: asyncpg.Pool, regions: Sequence[str], since: Any, limit: int
) -> list[asyncpg.Record]:
    """Cameras changed after `since` (registry edits and health status), oldest first."""
    where = region_clause(regions, first=3)
    return list(
        await pool.fetch(
            f"""SELECT {CATALOG_COLUMNS}, updated_at FROM cameras
                 WHERE updated_at > $1 AND {where} ORDER BY updated_at LIMIT $2""",
            since,
            limit,
            *region_args(regions),
        )
    )


async def region_names(conn: asyncpg.Connection, codes: Sequence[str]) -> dict[str, str]:
    """Names of civil-code nodes (2/4/6 digits) from the loaded region boundaries, if any."""
    padded = {code: code.ljust(6, "0") for code in codes}
    rows = await conn.fetch(
        "SELECT adcode, name FROM geo_regions WHERE adcode = ANY($1::text[])",
        sorted(set(padded.values())),
    )
    by_adcode = {r["adcode"]: r["name"] for r in rows}
    return {code: by_adcode[p] for code, p in padded.items() if p in by_adcode}


async def change_marks(pool: asyncpg.Pool) -> dict[str, Any]:
    """Where a catalog subscription starts watching: now, the last transition, the last audit."""
    rec = await pool.fetchrow(
        """SELECT now() AS at,
                  (SELECT coalesce(max(id), 0) FROM status_transitions) AS transition,
                  (SELECT coalesce(max(id), 0) FROM audit_log) AS audit"""
    )
    assert rec is not None
    return dict(rec)


async def changes(
    pool: asyncpg.Pool, regions: Sequence[str], marks: dict[str, Any], limit: int = 10_000
) -> tuple[list[tuple[str, str, Any]], dict[str, Any]]:
    """Catalog events since `marks`: (gb_id, ADD|UPDATE|DEL|ON|OFF, row or None), new marks.

    Edits come from `cameras.updated_at`, status from health's `status_transitions`, removals
    from the audit trail (the row is gone). Each source is bounded by `limit` per call; what
    is left is read on the next call, since the marks only advance over what was read.
    """
    where = region_clause(regions, first=3)
    args = region_args(regions)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        new = dict(marks)
        edited = await conn.fetch(
            f"""SELECT {CATALOG_COLUMNS}, created_at, updated_at FROM cameras
                 WHERE updated_at > $1 AND {where} ORDER BY updated_at LIMIT $2""",
            marks["at"],
            limit,
            *args,
        )
        out: list[tuple[str, str, Any]] = []
        for rec in edited:
            out.append((rec["gb_id"], "ADD" if rec["created_at"] > marks["at"] else "UPDATE", rec))
            new["at"] = max(new["at"], rec["updated_at"])
        where_c = region_clause(regions, column="c.gb_id", first=3)
        moved = await conn.fetch(
            f"""SELECT t.id, t.new, c.gb_id FROM status_transitions t
                  JOIN cameras c ON c.id = t.camera_id
                 WHERE t.id > $1 AND {where_c} ORDER BY t.id LIMIT $2""",
            marks["transition"],
            limit,
            *args,
        )
        for rec in moved:
            out.append(
                (rec["gb_id"], "ON" if rec["new"] in ("online", "degraded") else "OFF", None)
            )
            new["transition"] = max(new["transition"], rec["id"])
        where_a = region_clause(regions, column="region_code", first=3)
        gone = await conn.fetch(
            f"""SELECT id, before->>'gb_id' AS gb_id FROM audit_log
                 WHERE id > $1 AND action = 'camera.delete' AND {where_a}
                 ORDER BY id LIMIT $2""",
            marks["audit"],
            limit,
            *args,
        )
        for rec in gone:
            if rec["gb_id"]:
                out.append((rec["gb_id"], "DEL", None))
            new["audit"] = max(new["audit"], rec["id"])
        if not gone:  # skip what is settled (older than any open transaction plausibly is)
            last = await conn.fetchval(
                "SELECT coalesce(max(id), 0) FROM audit_log WHERE at < now() - interval '60 s'"
            )
            new["audit"] = max(new["audit"], last)
    return out, new


# One camera as a GB/T 28181 catalog <Item>, built by PostgreSQL as one text column: one text
# column per row is far cheaper to fetch and decode than 22 typed ones; at 2.4 M items this
# halves the push. Plain string functions, not xmlelement/xmlforest: PostgreSQL built without
# libxml (the embedded pgserver one, the default of `make run`) refuses every XML function.
# The bytes are those xmlforest wrote (content escapes & < > and CR; a NULL leaves its element
# out, as concat skips a NULL), except that control characters XML 1.0 cannot carry are
# dropped, not written. `api/cascade/catalog.camera_item` builds the same item in Python for
# the few rows a NOTIFY carries (a test keeps the two equal).

# U+0001-U+001F but TAB, LF, CR: not even a character reference may carry them in XML 1.0.
# They are looked for before they are removed: `translate` on every text column would cost
# more than all the rest of the item (measured: 3.9 s for 240,000 items, 1.8 s with the test).
_CONTROLS = "".join(f"\\{c:03o}" for c in range(1, 32) if c not in (9, 10, 13))
_HAS_CONTROL = "[\\001-\\010\\013\\014\\016-\\037]"


def xml_text(expr: str) -> str:
    """SQL escaping the text `expr` for element content (NULL stays NULL)."""
    kept = (
        f"CASE WHEN {expr} ~ E'{_HAS_CONTROL}' THEN translate({expr}, E'{_CONTROLS}', '') "
        f"ELSE {expr} END"
    )
    return (
        f"replace(replace(replace(replace({kept}, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), "
        "E'\\r', '&#x0d;')"
    )


def _element(tag: str, expr: str) -> str:
    return f"'<{tag}>' || {expr} || '</{tag}>'"


_ITEM_PARTS = [
    _element("DeviceID", "gb_id"),
    _element("Name", xml_text("name")),
    _element("Manufacturer", xml_text("coalesce(vendor, '')")),
    _element("Model", xml_text("coalesce(model, '')")),
    _element("Owner", xml_text("coalesce(owner, '')")),
    _element("CivilCode", "region_code"),
    _element("Address", xml_text("coalesce(address, '')")),
    "'<Parental>0</Parental>'",
    _element("ParentID", xml_text("{parent}")),
    _element("BusinessGroupID", xml_text("{group}")),
    "'<SafetyWay>0</SafetyWay><RegisterWay>1</RegisterWay><Secrecy>0</Secrecy>'",
    _element("IPAddress", "host(ip)"),
    _element("Port", "onvif_port"),
    _element("Status", "CASE WHEN status IN ('online', 'degraded') THEN 'ON' ELSE 'OFF' END"),
    _element("Longitude", "to_char(lon, 'FM990.000000')"),
    _element("Latitude", "to_char(lat, 'FM990.000000')"),
    "'<Info>'",
    _element("PoType", "level"),
    _element("RecordSaveDays", "record_days"),
    _element("InstallTime", "to_char(installed_at, 'YYYY-MM-DD\"T00:00:00\"')"),
    _element("ManagementUnit", xml_text("nullif(owner, '')")),
    _element("ContactInfo", xml_text("nullif(contact, '')")),
    _element("HorizontalFieldAngle", "hfov::text"),
    _element("VerticalFieldAngle", "vfov::text"),
    _element("MaxViewDistance", "max_view_distance::text"),
    _element("MAC", xml_text("nullif(mac, '')")),
    "'</Info></Item>'",
]
ITEM_SQL = "concat('<Item>', " + ", ".join(_ITEM_PARTS) + ")"


async def catalog_items(
    conn: asyncpg.Connection, regions: Sequence[str], parent_id: str, *, prefetch: int = 2000
) -> AsyncIterator[str]:
    """Every visible camera once as `<Item>` XML, in GB ID order, through a cursor."""
    where = region_clause(regions, first=2)
    async for rec in conn.cursor(
        f"SELECT {ITEM_SQL.format(parent='$1::text', group='NULL::text')} AS item FROM cameras "
        f"WHERE {where} ORDER BY gb_id",
        parent_id,
        *region_args(regions),
        prefetch=prefetch,
    ):
        yield rec["item"]


# --- a catalog push: membership fixed once, items paged by key ---------------------------------


async def catalog_plan(
    conn: asyncpg.Connection, regions: Sequence[str]
) -> tuple[int, list[str], list[asyncpg.Record]]:
    """Fix a push's membership: (cameras, their region codes, the 215/216 groups), one snapshot.

    The visible GB IDs go into the session's temporary table `catalog_push_keys`, which
    `catalog_page` walks; the caller must hold `conn` for the whole push and call
    `drop_catalog_plan` after.
    """
    where = region_clause(regions)
    args = region_args(regions)
    await conn.execute("DROP TABLE IF EXISTS pg_temp.catalog_push_keys")
    async with conn.transaction(isolation="repeatable_read"):
        await conn.execute('CREATE TEMP TABLE catalog_push_keys (key text COLLATE "C" PRIMARY KEY)')
        await conn.execute(
            f"INSERT INTO catalog_push_keys SELECT gb_id FROM cameras WHERE {where}", *args
        )
        await conn.execute("ANALYZE catalog_push_keys")
        cameras, codes = await catalog_counts(conn, regions)
        groups = await catalog_groups(conn, regions)
    return cameras, codes, groups


async def catalog_groups(conn: asyncpg.Connection, regions: Sequence[str]) -> list[asyncpg.Record]:
    """The 215/216 items of devices' catalogs inside `regions`, once each (latest copy)."""
    return list(
        await conn.fetch(
            f"""SELECT DISTINCT ON (item_id) item_id, type_code, name, parent_id,
                       nullif(item ->> 'business_group_id', '') AS business_group_id
                FROM gb_catalog_items
                WHERE type_code IN ('215', '216') AND NOT removed
                  AND {region_clause(regions, "item_id")}
                ORDER BY item_id, updated_at DESC""",
            *region_args(regions),
        )
    )


async def camera_groups(
    conn: asyncpg.Connection, camera_ids: Sequence[Any], groups: Sequence[str]
) -> dict[Any, str]:
    """camera id → the group (of `groups`) a device's catalog files it under, as the push does."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (i.camera_id) i.camera_id, p AS grp
           FROM gb_catalog_items i, unnest(string_to_array(i.parent_id, '/')) p
           WHERE i.camera_id = ANY($1::uuid[]) AND NOT i.removed AND p = ANY($2::text[])
           ORDER BY i.camera_id, i.updated_at DESC""",
        list(camera_ids),
        list(groups),
    )
    return {r["camera_id"]: r["grp"] for r in rows}


async def drop_catalog_plan(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS pg_temp.catalog_push_keys")


_GROUP_JOIN = """LEFT JOIN LATERAL (
    SELECT p AS grp FROM gb_catalog_items i, unnest(string_to_array(i.parent_id, '/')) p
    WHERE i.camera_id = c.id AND NOT i.removed AND p = ANY($4::text[])
    ORDER BY i.updated_at DESC LIMIT 1) g ON TRUE"""

# A camera counted but deleted before its page: still one item, so SumNum stays exact; its
# deletion reaches subscribers as a NOTIFY DEL.
_GONE = """'<Item><DeviceID>' || k.key || '</DeviceID><Status>OFF</Status></Item>'"""


async def catalog_page(
    conn: asyncpg.Connection,
    parent_id: str,
    after: str,
    limit: int,
    groups: Sequence[str] = (),
    group_business: Sequence[str | None] = (),
) -> list[asyncpg.Record]:
    """The next `limit` planned cameras after GB ID `after`, as (gb_id, item XML).

    `groups` are the 215/216 IDs this push sends and `group_business` each one's business
    group: a camera a device's catalog files under one of them gets it as ParentID (and the
    business group as BusinessGroupID); any other camera hangs under `parent_id`.
    """
    if groups:
        item = ITEM_SQL.format(
            parent="coalesce(g.grp, $1::text)",
            group="($5::text[])[array_position($4::text[], g.grp)]",
        )
        join, extra = _GROUP_JOIN, [list(groups), list(group_business)]
    else:
        item = ITEM_SQL.format(parent="$1::text", group="NULL::text")
        join, extra = "", []
    return list(
        await conn.fetch(
            # the range on c as well: without it the merge join reads `cameras` from its
            # first key on every page (quadratic over a push)
            f"""SELECT k.key AS gb_id,
                       CASE WHEN c.id IS NULL THEN {_GONE} ELSE {item} END AS item
                FROM catalog_push_keys k
                LEFT JOIN cameras c ON c.gb_id = k.key AND c.gb_id > $2 {join}
                WHERE k.key > $2 ORDER BY k.key LIMIT $3""",
            parent_id,
            after,
            limit,
            *extra,
        )
    )
