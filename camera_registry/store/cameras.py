"""The camera registry: every SQL statement about cameras lives here.

Region scope is applied in the SQL of every read and write, so a camera outside the caller's
scope does not exist for them (NotFound) and cannot be created there (Forbidden). Each change
writes its audit record in the same transaction.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import math
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np

from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.errors import (
    BadRequest,
    DuplicateCamera,
    FieldError,
    Forbidden,
    NotFound,
    ValidationFailed,
    VersionConflict,
)
from camera_registry.fields import DB_COLUMNS, STORED_COLUMNS, STREAM_KEYS
from camera_registry.gbid import make_gb_id
from camera_registry.store import audit
from camera_registry.store.db import row_dict
from camera_registry.stream_uri import StreamURIError, split_stream_uri
from camera_registry.validate import CameraBatch, validate_columns
from geo.crs import EARTH_RADIUS_M, haversine_m

STATUSES = ("unknown", "online", "offline", "degraded")
LEVEL_VALUES = (1, 2, 3, 9)

# What read endpoints return: never the credentials, only whether there are some.
PUBLIC_COLUMNS = ", ".join(
    (
        "id",
        *STORED_COLUMNS,
        "streams",
        "credentials IS NOT NULL AS has_credentials",
        "status",
        "created_at",
        "updated_at",
        "version",
    )
)

_STORED = [c for c in DB_COLUMNS if c not in STREAM_KEYS]

# `real` columns: shown rounded, hiding float32 noise (62.0000038). Rounded in float8 so that
# values with more than six significant digits round as `camera_out` rounds them: a float32
# times 10^4 is exact in float8, `round` ties to even as Python's does, and the quotient is the
# float8 nearest to n / 10^4, which is what Python's `round(x, 4)` returns. Through `numeric`
# (the earlier way) it cost a bbox page of 10,000 cameras several milliseconds more.
_ROUNDED = ("azimuth", "hfov", "vfov", "max_view_distance", "mount_height")
_PUBLIC_KEYS = (
    "id",
    *STORED_COLUMNS,
    "streams",
    "has_credentials",
    "status",
    "created_at",
    "updated_at",
    "version",
)


def _json_value(key: str) -> str:
    if key in _ROUNDED:
        return f"round({key}::float8 * 10000) / 10000"
    if key == "has_credentials":
        return "credentials IS NOT NULL"
    return key  # timestamps: PostgreSQL's own JSON text of them, which `iso_instant` writes


# A camera as the API returns it (the shape of `camera_out`), built by PostgreSQL: per-row
# Python (record decoding, camera_out, json.dumps) was most of a read's cost. `json`, not
# `jsonb`, so the keys keep their order; timestamps come out in ISO 8601 in the session's
# UTC, as `isoformat` writes them.
CAMERA_JSON = (
    "json_build_object(" + ", ".join(f"'{k}', {_json_value(k)}" for k in _PUBLIC_KEYS) + ")::text"
)
# The same keys as columns, for `row_to_json` over a sub-select: for pages of thousands it
# costs PostgreSQL markedly less per row than `json_build_object`, which resolves the output
# function of each of its 62 arguments at every call.
CAMERA_JSON_COLUMNS = ", ".join(f"{_json_value(k)} AS {k}" for k in _PUBLIC_KEYS)


def iso_instant(value: dt.datetime) -> str:
    """ISO 8601 as PostgreSQL writes a timestamptz into JSON (in the pool's UTC): the
    fraction of a second without its trailing zeros (10:00:00.12, not .120000), none when it
    is zero. The API's camera JSON is built by PostgreSQL for reads and by `camera_out` for
    writes; both must say the same. Formatting it in SQL as `isoformat` does (`to_char`) cost
    a bbox page of 10,000 cameras ~25 ms of PostgreSQL time over its own JSON text."""
    text = value.isoformat()
    if not value.microsecond:
        return text
    whole, _, rest = text.partition(".")
    return f"{whole}.{rest[:6].rstrip('0')}{rest[6:]}"


def camera_out(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A camera row as the API returns it (JSON-ready)."""
    out: dict[str, Any] = {}
    for key, value in rec.items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, dt.datetime):
            value = iso_instant(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif key == "ip" and value is not None:
            value = str(value)
        elif isinstance(value, float) and key in (
            "azimuth",
            "hfov",
            "vfov",
            "max_view_distance",
            "mount_height",
        ):
            value = round(value, 4)  # stored as real: hide float32 noise (62.0000038)
        out[key] = value
    return out


def region_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the region codes starting with `prefix` (digits only)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def effective_prefix(actor: Actor, wanted: str | None) -> str | None:
    """Intersect a region filter with the caller's scope; '' means nothing can match."""
    scope = actor.scope
    if wanted is None:
        return scope
    if scope is None or wanted.startswith(scope):
        return wanted
    if scope.startswith(wanted):
        return scope
    return ""


@dataclass(frozen=True, slots=True)
class CameraFilter:
    region: str | None = None
    levels: tuple[int, ...] = ()
    statuses: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    q: str | None = None


class _Where:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *args: Any) -> None:
        """`sql` uses {0}, {1}… for its own arguments; they become $n placeholders."""
        start = len(self.args)
        self.args.extend(args)
        self.parts.append(sql.format(*(f"${start + i + 1}" for i in range(len(args)))))

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def _where(actor: Actor, f: CameraFilter) -> _Where | None:
    w = _Where()
    prefix = effective_prefix(actor, f.region)
    if prefix == "":
        return None
    if prefix:
        w.add("region_code >= {0} AND region_code < {1}", *region_range(prefix))
    if f.levels:
        w.add("level = ANY({0}::smallint[])", list(f.levels))
    if f.statuses:
        w.add("status = ANY({0}::text[])", list(f.statuses))
    if f.bbox is not None:
        w.add("geom <@ box(point({0}, {1}), point({2}, {3}))", *f.bbox)
    if f.q:
        like = f.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        w.add("(gb_id LIKE {0} OR name ILIKE {1} OR address ILIKE {1})", like + "%", f"%{like}%")
    return w


def encode_cursor(last_id: uuid.UUID | str) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            "the cursor is not one this API issued",
            [FieldError("cursor", "pass back the next_cursor value of the previous page")],
        ) from None


class Registry:
    def __init__(self, pool: asyncpg.Pool, box: CredentialBox) -> None:
        self.pool = pool
        self.box = box

    # -- reads -------------------------------------------------------------------------------
    async def get(self, actor: Actor, camera_id: str) -> dict[str, Any]:
        cid = _uuid(camera_id)
        rec = await self.pool.fetchrow(f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE id = $1", cid)
        if rec is None or not actor.covers(rec["region_code"]):
            raise NotFound(f"no camera {camera_id} in your region scope")
        return camera_out(rec)

    async def get_json(self, actor: Actor, camera_id: str) -> tuple[str, int]:
        """One camera as JSON text (built by PostgreSQL) and its version, scope in the SQL."""
        cid = _uuid(camera_id)
        w = _where(actor, CameraFilter())
        assert w is not None  # no region filter: the scope alone never empties the set
        w.add("id = {0}", cid)
        rec = await self.pool.fetchrow(
            f"SELECT {CAMERA_JSON} AS j, version FROM cameras WHERE {w.sql()}", *w.args
        )
        if rec is None:
            raise NotFound(f"no camera {camera_id} in your region scope")
        return rec["j"], rec["version"]

    async def page_json(
        self, actor: Actor, f: CameraFilter, *, limit: int, cursor: str | None = None
    ) -> bytes:
        """A page as the JSON document the API answers, `{"items": [...], "next_cursor"}`, in
        UTF-8: each camera's JSON is built by PostgreSQL, Python only frames them.

        The items come as one `bytea` value, never a Python `str`: a bbox page of 10,000
        cameras is ~10 MB with Chinese names, and decoding it into a str, joining and
        encoding it back was most of the handler's time (p50 116 ms a page against 80 ms for
        a bare handler answering PostgreSQL's `json_agg`; 82 against 78 ms now)."""
        w = _where(actor, f)
        if w is None:
            return b'{"items": [], "next_cursor": null}'
        if cursor:
            w.add("id > {0}", decode_cursor(cursor))
        w.args.append(limit + 1)
        n = len(w.args)
        # One value, not a record per camera: decoding 10,000 records and joining their texts
        # was Python's share of a bbox page.
        rec = await self.pool.fetchrow(
            f"""SELECT convert_to(string_agg(j, ', ' ORDER BY n) FILTER (WHERE n < ${n}),
                                  'UTF8') AS items,
                       max(id::text) FILTER (WHERE n = ${n} - 1) AS last,
                       count(*) = ${n} AS more
                FROM (SELECT c.id, row_to_json(c)::text AS j,
                             row_number() OVER (ORDER BY c.id) AS n
                      FROM (SELECT {CAMERA_JSON_COLUMNS} FROM cameras WHERE {w.sql()}
                            ORDER BY id LIMIT ${n}) c) x""",
            *w.args,
        )
        nxt = f'"{encode_cursor(rec["last"])}"' if rec["more"] else "null"
        return b"".join(
            (b'{"items": [', rec["items"] or b"", b'], "next_cursor": ', nxt.encode(), b"}")
        )

    async def nearest_json(
        self, actor: Actor, lon: float, lat: float, k: int, f: CameraFilter
    ) -> str:
        """`nearest` in one statement, as the JSON document the API answers.

        The k nearest by `<->` (degrees, GiST KNN) bound the radius in metres; every camera in
        the index-backed box of that radius is ranked by great-circle distance, in SQL, with
        the same formula and radius as `geo.crs.haversine_m`. Only the k cameras answered are
        turned into JSON (`row_to_json`): building it for every camera of the box before the
        ranking was a third of the statement.
        """
        w = _where(actor, f)
        if w is None:
            return '{"items": [], "next_cursor": null}'
        w.add("geom IS NOT NULL")
        n = len(w.args)
        x, y, kk, r = f"${n + 1}::float8", f"${n + 2}::float8", f"${n + 3}", EARTH_RADIUS_M
        dist = (
            f"2.0 * {r} * asin(sqrt(least(1.0, greatest(0.0, "
            f"sin(radians(lat - {y}) / 2.0) ^ 2 + cos(radians({y})) * cos(radians(lat)) "
            f"* sin(radians(lon - {x}) / 2.0) ^ 2))))"
        )
        text = await self.pool.fetchval(
            f"""WITH knn AS (
                    SELECT {dist} AS d FROM cameras WHERE {w.sql()}
                    ORDER BY geom <-> point({x}, {y}) LIMIT {kk}
                ), radius AS (
                    SELECT degrees((max(d) * 1.000001 + 0.01) / {r}) AS dlat FROM knn
                ), box AS (
                    SELECT dlat, dlat / greatest(cos(radians(least(abs({y}) + dlat, 89.9))),
                                                 1e-6) AS dlon
                    FROM radius WHERE dlat IS NOT NULL
                ), ranked AS (
                    SELECT {dist} AS d, id FROM cameras, box
                    WHERE {w.sql()} AND geom <@ box(point({x} - dlon, {y} - dlat),
                                                     point({x} + dlon, {y} + dlat))
                    ORDER BY d, id LIMIT {kk}
                )
                SELECT coalesce(string_agg(
                    left(row_to_json(j)::text, -1) || ', "distance_m" : '
                        || round(r.d::numeric, 2) || '}}',
                    ', ' ORDER BY r.d, r.id), '')
                FROM ranked r
                CROSS JOIN LATERAL (SELECT {CAMERA_JSON_COLUMNS} FROM cameras
                                    WHERE cameras.id = r.id) j""",
            *w.args,
            lon,
            lat,
            k,
        )
        return '{"items": [' + (text or "") + '], "next_cursor": null}'

    async def page(
        self, actor: Actor, f: CameraFilter, *, limit: int, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        w = _where(actor, f)
        if w is None:
            return [], None
        if cursor:
            w.add("id > {0}", decode_cursor(cursor))
        w.args.append(limit + 1)
        rows = await self.pool.fetch(
            f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE {w.sql()} "
            f"ORDER BY id LIMIT ${len(w.args)}",
            *w.args,
        )
        nxt = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
        return [camera_out(r) for r in rows[:limit]], nxt

    async def iterate(
        self, actor: Actor, f: CameraFilter, batch: int = 5000
    ) -> AsyncIterator[dict[str, Any]]:
        """Every matching camera, streamed from a server-side cursor (for exports)."""
        w = _where(actor, f)
        if w is None:
            return
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            sql = (
                f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE {w.sql()} ORDER BY region_code, gb_id"
            )
            async for rec in conn.cursor(sql, *w.args, prefetch=batch):
                yield camera_out(rec)

    async def nearest(
        self, actor: Actor, lon: float, lat: float, k: int, f: CameraFilter
    ) -> list[dict[str, Any]]:
        """The k cameras nearest in metres: a GiST KNN pass in degrees, then an exact re-rank.

        Degrees are not metres (a degree of longitude is cos(lat) shorter), so the k nearest by
        `<->` bound the search radius; every camera within that many metres is then fetched by
        an index-backed box and ranked by great-circle distance.
        """
        w = _where(actor, f)
        if w is None:
            return []
        w.add("geom IS NOT NULL")
        n = len(w.args)
        rows = await self.pool.fetch(
            f"""SELECT {PUBLIC_COLUMNS} FROM cameras WHERE {w.sql()}
                ORDER BY geom <-> point(${n + 1}, ${n + 2}) LIMIT ${n + 3}""",
            *w.args,
            lon,
            lat,
            k,
        )
        if len(rows) == k:
            d = haversine_m(
                lon, lat, np.array([r["lon"] for r in rows]), np.array([r["lat"] for r in rows])
            )
            radius = float(np.max(d)) * 1.000001 + 0.01
            dlat = math.degrees(radius / 6_371_008.8)
            cos = max(math.cos(math.radians(min(abs(lat) + dlat, 89.9))), 1e-6)
            dlon = dlat / cos
            w.add(
                "geom <@ box(point({0}, {1}), point({2}, {3}))",
                lon - dlon,
                lat - dlat,
                lon + dlon,
                lat + dlat,
            )
            rows = await self.pool.fetch(
                f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE {w.sql()}", *w.args
            )
        if not rows:
            return []
        d = haversine_m(
            lon, lat, np.array([r["lon"] for r in rows]), np.array([r["lat"] for r in rows])
        )
        order = np.argsort(d, kind="stable")[:k]
        out = []
        for i in order.tolist():
            cam = camera_out(rows[i])
            cam["distance_m"] = round(float(d[i]), 2)
            out.append(cam)
        return out

    async def summary(self, actor: Actor, code: str) -> dict[str, Any]:
        if not actor.covers(code) and not (actor.scope or "").startswith(code):
            raise Forbidden(f"region {code} is outside your region scope {actor.scope}")
        prefix = effective_prefix(actor, code) or code
        low, high = region_range(prefix)
        rows = await self.pool.fetch(
            """SELECT level, status, count(*) AS n FROM cameras
               WHERE region_code >= $1 AND region_code < $2 GROUP BY level, status""",
            low,
            high,
        )
        by_level = {str(lv): 0 for lv in LEVEL_VALUES}
        by_status = dict.fromkeys(STATUSES, 0)
        for r in rows:
            by_level[str(r["level"])] += r["n"]
            by_status[r["status"]] += r["n"]
        return {
            "region": code,
            "scope": prefix,
            "total": sum(by_status.values()),
            "by_level": by_level,
            "by_status": by_status,
        }

    # -- writes ------------------------------------------------------------------------------
    def validate_one(
        self, actor: Actor, values: Mapping[str, Any], crs: str = "wgs84"
    ) -> CameraBatch:
        cols = {k: [v] for k, v in values.items()}
        batch, errors = validate_columns(cols, [1], box=self.box, default_crs=crs)
        if errors:
            raise ValidationFailed(
                "the camera has invalid fields; correct them and send it again",
                [FieldError(e.field, e.message) for e in errors],
            )
        region = batch.cols["region_code"][0]
        if not actor.covers(region):
            raise Forbidden(
                f"region {region} is outside your region scope {actor.scope}",
                [FieldError("region_code", "use a region inside your scope")],
            )
        return batch

    async def create(
        self, actor: Actor, values: Mapping[str, Any], crs: str = "wgs84"
    ) -> dict[str, Any]:
        batch = self.validate_one(actor, values, crs)
        row = {c: batch.cols[c][0] for c in DB_COLUMNS}
        async with self.pool.acquire() as conn, conn.transaction():
            if row["gb_id"] is None:
                row["gb_id"] = await self._generate_gb_id(conn, row["region_code"])
            cols = [*_STORED, "streams"]
            args = [row[c] for c in _STORED] + [_streams(row)]
            try:
                rec = await conn.fetchrow(
                    f"""INSERT INTO cameras ({", ".join(cols)})
                        VALUES ({", ".join(f"${i + 1}" for i in range(len(cols)))})
                        RETURNING {PUBLIC_COLUMNS}""",
                    *args,
                )
            except asyncpg.UniqueViolationError:
                raise DuplicateCamera(
                    f"a camera with 国标编码 {row['gb_id']} is already registered",
                    [FieldError("gb_id", "use another ID, or PATCH the existing camera")],
                ) from None
            assert rec is not None
            out = camera_out(rec)
            await audit.record(
                conn,
                actor,
                "camera.create",
                camera_id=rec["id"],
                region_code=out["region_code"],
                after=out,
            )
        return out

    async def create_many(
        self,
        actor: Actor,
        values: Sequence[Mapping[str, Any]],
        conn: asyncpg.Connection | None = None,
        record_as: Sequence[Actor] | None = None,
    ) -> tuple[dict[int, str], dict[int, list[FieldError]]]:
        """Create many cameras (by position in `values`) in one statement, each audited; the
        new cameras' ids by position, and the refused positions' errors.

        For GB/T 28181 catalogs, which hand over thousands of channels at once: one `create`
        per channel (a validation pass and a transaction each) runs at ~40 channels/s on a
        busy machine, and even one INSERT per row inside one transaction pays the statement
        triggers (health schedule, map grid, geo version) once per row. Here the list is
        validated in one vectorised pass and inserted by one `INSERT … ON CONFLICT DO NOTHING`,
        so the triggers run once. Rows that fail validation, lie outside the actor's scope,
        carry no GB ID or whose GB ID is already registered (or repeated in `values`) are
        returned with their errors and nothing of them is written. With `conn` the caller's
        transaction holds the writes (a batch of catalogs commits once); `record_as` names,
        per position, who the audit record says created the camera (default `actor`).
        """
        if not values:
            return {}, {}
        keys = sorted({k for v in values for k in v})
        cols = {k: [v.get(k) for v in values] for k in keys}
        batch, errors = validate_columns(cols, list(range(len(values))), box=self.box)
        problems: dict[int, list[FieldError]] = {}
        for err in errors:
            problems.setdefault(int(err.row or 0), []).append(err)
        first_of: dict[str, int] = {}  # gb_id -> the position that may create it
        accepted: list[int] = []  # positions in `batch` to insert
        gb_ids, regions = batch.cols["gb_id"], batch.cols["region_code"]
        for pos, row_no in enumerate(batch.rows.tolist()):
            gb_id = gb_ids[pos]
            if gb_id is None:
                problems[row_no] = [FieldError("gb_id", "国标编码/gb_id is required here")]
                continue
            if not actor.covers(regions[pos]):
                problems[row_no] = [
                    FieldError("region_code", f"outside the region scope {actor.scope}")
                ]
                continue
            if gb_id in first_of:
                problems[row_no] = [FieldError("gb_id", f"a camera with 国标编码 {gb_id} exists")]
                continue
            first_of[gb_id] = row_no
            accepted.append(pos)
        rows = _json_rows(batch, accepted)
        created: dict[int, str] = {}
        if not rows:
            return created, problems
        names = [*_STORED, "streams"]
        whos = [record_as[first_of[r["gb_id"]]] if record_as is not None else actor for r in rows]
        # The audit records are written by the same statement, their `after` built by
        # PostgreSQL in `camera_out`'s shape: returning every new row to build its record here
        # (record decoding, camera_out, JSON) was a third of a catalog batch's Python time.
        insert = f"""
            WITH ins AS (
                INSERT INTO cameras ({", ".join(names)})
                SELECT {", ".join(names)} FROM json_populate_recordset(NULL::cameras, $1::json)
                ORDER BY gb_id ON CONFLICT (gb_id) DO NOTHING RETURNING *
            ), audit AS (
                INSERT INTO audit_log (actor, token_id, action, camera_id, region_code,
                                       remote_addr, before, after, detail)
                SELECT w.actor, w.token_id, 'camera.create', j.id, j.region_code,
                       w.remote_addr, NULL, to_jsonb(j), NULL
                FROM (SELECT {CAMERA_JSON_COLUMNS} FROM ins) j
                JOIN unnest($2::text[], $3::text[], $4::uuid[], $5::text[])
                     AS w(gb_id, actor, token_id, remote_addr) ON w.gb_id = j.gb_id
            )
            SELECT id, gb_id FROM ins"""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await _own_transaction(stack, self.pool)
            recs = await conn.fetch(
                insert,
                rows,
                [r["gb_id"] for r in rows],
                [w.name for w in whos],
                [w.token_id for w in whos],
                [w.remote_addr for w in whos],
            )
            for rec in recs:
                created[first_of[rec["gb_id"]]] = str(rec["id"])
        for gb_id, row_no in first_of.items():
            if row_no not in created:
                problems[row_no] = [FieldError("gb_id", f"a camera with 国标编码 {gb_id} exists")]
        return created, problems

    async def update(
        self,
        actor: Actor,
        camera_id: str,
        version: int,
        patch: Mapping[str, Any],
        crs: str = "wgs84",
        conn: asyncpg.Connection | None = None,
    ) -> dict[str, Any]:
        """Apply a merge-patch; the merged camera is validated as a whole, like a create.

        With `conn` the change joins the caller's transaction (a batch of GB/T 28181 catalogs
        commits once); without, it is its own transaction.
        """
        cid = _uuid(camera_id)
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await _own_transaction(stack, self.pool)
            cur = await conn.fetchrow(
                f"SELECT {PUBLIC_COLUMNS}, credentials, credentials_mac FROM cameras "
                "WHERE id = $1 FOR UPDATE",
                cid,
            )
            if cur is None or not actor.covers(cur["region_code"]):
                raise NotFound(f"no camera {camera_id} in your region scope")
            if cur["version"] != version:
                raise VersionConflict(
                    f"the camera is at version {cur['version']}, not {version}; "
                    "GET it again, reapply your change and send the new ETag in If-Match"
                )
            before = camera_out(cur)
            merged: dict[str, Any] = {
                c: before.get(c) for c in DB_COLUMNS if c in before and c != "gb_id"
            }
            merged["gb_id"] = before["gb_id"]
            for key, stream_key in STREAM_KEYS.items():
                merged[key] = (before["streams"] or {}).get(stream_key)
            if "lon" in patch or "lat" in patch:
                merged["crs"] = crs
            else:
                merged["crs"] = "wgs84"
            merged.update(patch)
            if "gb_id" in patch and "region_code" not in patch:
                merged.pop("region_code")  # the new ID carries its own region
            from_uri = _uri_credentials(patch)
            touched = {"username", "password"} & set(patch) or from_uri
            if touched:
                # one credential edited keeps the other: explicit fields, then the patched
                # URIs' userinfo, then what is stored
                stored = self.box.open(cur["credentials"]) if cur["credentials"] else (None, None)
                for name, old in zip(("username", "password"), stored, strict=True):
                    if name not in patch:
                        merged[name] = from_uri.get(name, old)
            batch = self.validate_one(actor, merged, merged.pop("crs"))
            row = {c: batch.cols[c][0] for c in DB_COLUMNS}
            if not touched:
                row["credentials"], row["credentials_mac"] = (
                    cur["credentials"],
                    cur["credentials_mac"],
                )
            sets = [f"{c} = ${i + 2}" for i, c in enumerate(_STORED)]
            args = [row[c] for c in _STORED]
            try:
                rec = await conn.fetchrow(
                    f"""UPDATE cameras SET {", ".join(sets)}, streams = ${len(args) + 2},
                            version = version + 1, updated_at = now()
                        WHERE id = $1 RETURNING {PUBLIC_COLUMNS}""",
                    cid,
                    *args,
                    _streams(row),
                )
            except asyncpg.UniqueViolationError:
                raise DuplicateCamera(
                    f"a camera with 国标编码 {row['gb_id']} is already registered",
                    [FieldError("gb_id", "use another ID")],
                ) from None
            assert rec is not None
            after = camera_out(rec)
            await audit.record(
                conn,
                actor,
                "camera.update",
                camera_id=cid,
                region_code=after["region_code"],
                before=before,
                after=after,
            )
        return after

    async def delete(self, actor: Actor, camera_id: str, version: int | None = None) -> None:
        cid = _uuid(camera_id)
        async with self.pool.acquire() as conn, conn.transaction():
            cur = await conn.fetchrow(
                f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE id = $1 FOR UPDATE", cid
            )
            if cur is None or not actor.covers(cur["region_code"]):
                raise NotFound(f"no camera {camera_id} in your region scope")
            if version is not None and cur["version"] != version:
                raise VersionConflict(
                    f"the camera is at version {cur['version']}, not {version}; GET it again"
                )
            await conn.execute("DELETE FROM cameras WHERE id = $1", cid)
            await audit.record(
                conn,
                actor,
                "camera.delete",
                camera_id=cid,
                region_code=cur["region_code"],
                before=camera_out(cur),
            )

    async def count(self) -> int:
        n = await self.pool.fetchval("SELECT count(*) FROM cameras")
        return int(n)

    async def _generate_gb_id(self, conn: asyncpg.Connection, region: str) -> str:
        for _ in range(20):
            serials = await allocate_serials(conn, {region: 1})
            gb_id = make_gb_id(region, serials[region][0])
            exists = await conn.fetchval("SELECT 1 FROM cameras WHERE gb_id = $1", gb_id)
            if not exists:
                return gb_id
        raise DuplicateCamera(f"could not find a free 国标编码 serial in region {region}")


async def allocate_serials(conn: asyncpg.Connection, counts: Mapping[str, int]) -> dict[str, range]:
    """Reserve `n` consecutive serials per region (digits 15-20 of generated GB IDs)."""
    out: dict[str, range] = {}
    for region, n in counts.items():
        start = await conn.fetchval(
            """INSERT INTO region_serials AS s (region_code, next_serial)
               SELECT $1, coalesce(max(right(gb_id, 6)::integer), 0) + 1 + $2 FROM cameras
                WHERE region_code = $1
               ON CONFLICT (region_code) DO UPDATE SET next_serial = s.next_serial + $2
               RETURNING next_serial - $2""",
            region,
            n,
        )
        if start + n > 1_000_000:
            raise ValidationFailed(
                f"region {region} has no free 国标编码 serials left",
                [FieldError("gb_id", "give explicit IDs for this region")],
            )
        out[region] = range(start, start + n)
    return out


def _uri_credentials(patch: Mapping[str, Any]) -> dict[str, str]:
    """The userinfo inside a patch's stream URIs (first given wins), to merge with the stored
    pair; an unreadable URI is left for validation to report."""
    out: dict[str, str] = {}
    for key in STREAM_KEYS:
        value = patch.get(key)
        if not isinstance(value, str) or "@" not in value:
            continue
        try:
            split = split_stream_uri(value)
        except StreamURIError:
            continue
        if split.username is not None:
            out.setdefault("username", split.username)
        if split.password is not None:
            out.setdefault("password", split.password)
    return out


MIGRATION_ACTOR = Actor("system:uri-credentials", Role.ADMIN)


async def move_uri_credentials(pool: asyncpg.Pool, box: CredentialBox) -> int:
    """Seal the credentials that migration 0016 found inside stored stream URIs.

    Runs at every start (cheap when the list is empty); each camera is moved in its own
    transaction, so a crash part-way leaves the rest for the next start. Credentials stored in
    their own column win over the URI's, as on import. A URI that still cannot be read keeps
    its row in the list and is logged by camera id only (never the URI)."""
    moved = 0
    ids = await pool.fetch("SELECT camera_id FROM uri_credential_moves ORDER BY camera_id")
    for (cid,) in ids:
        async with pool.acquire() as conn, conn.transaction():
            cur = await conn.fetchrow(
                "SELECT region_code, streams, credentials FROM cameras WHERE id = $1 FOR UPDATE",
                cid,
            )
            if cur is None:
                continue
            streams = dict(cur["streams"] or {})
            user: str | None = None
            password: str | None = None
            try:
                for key, value in streams.items():
                    if isinstance(value, str) and "@" in value:
                        split = split_stream_uri(value)
                        streams[key] = split.uri
                        user = user if user is not None else split.username
                        password = password if password is not None else split.password
            except StreamURIError:
                continue
            if cur["credentials"] is not None:
                stored_user, stored_password = box.open(cur["credentials"])
                user = stored_user if stored_user is not None else user
                password = stored_password if stored_password is not None else password
            sealed = box.seal(user, password)
            await conn.execute(
                """UPDATE cameras SET streams = $2, credentials = $3, credentials_mac = $4,
                       version = version + 1, updated_at = now() WHERE id = $1""",
                cid,
                streams,
                sealed[0] if sealed else None,
                sealed[1] if sealed else None,
            )
            await conn.execute("DELETE FROM uri_credential_moves WHERE camera_id = $1", cid)
            await audit.record(
                conn,
                MIGRATION_ACTOR,
                "camera.update",
                camera_id=cid,
                region_code=cur["region_code"],
                after={"streams": streams},
                detail={"reason": "credentials moved out of stream URIs and sealed"},
            )
            moved += 1
    return moved


def _streams(row: Mapping[str, Any]) -> dict[str, str]:
    return {v: row[k] for k, v in STREAM_KEYS.items() if row.get(k) is not None}


async def _own_transaction(
    stack: contextlib.AsyncExitStack[bool | None], pool: asyncpg.Pool
) -> asyncpg.Connection:
    """A pool connection in a transaction, both released by `stack` (for writes that may
    instead join a caller's transaction)."""
    conn: asyncpg.Connection = await stack.enter_async_context(pool.acquire())
    await stack.enter_async_context(conn.transaction())
    return conn


def _json_rows(batch: CameraBatch, positions: list[int]) -> list[dict[str, Any]]:
    """The rows at `positions` as objects for `json_populate_recordset`, built column by
    column: per value only bytea needs converting here (the JSON codec writes NaN as null,
    numpy scalars as numbers, dates as ISO text), and a catalog batch has thousands of rows of
    some forty columns."""
    whole = len(positions) == len(batch.rows)
    cols = []
    for c in _STORED:
        col = batch.cols[c]
        if not whole:
            col = [col[p] for p in positions]
        if c in _BYTEA:
            col = [None if v is None else "\\x" + bytes(v).hex() for v in col]  # bytea's text
        cols.append(col)
    streams = [[batch.cols[k][p] for p in positions] for k in STREAM_KEYS]
    keys = list(STREAM_KEYS.values())
    cols.append(
        [
            {k: v for k, v in zip(keys, vals, strict=True) if v is not None}
            for vals in zip(*streams, strict=True)
        ]
        if streams
        else [{} for _ in positions]
    )
    names = [*_STORED, "streams"]
    return [dict(zip(names, vals, strict=True)) for vals in zip(*cols, strict=True)]


_BYTEA = frozenset({"credentials", "credentials_mac"})


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no camera {value}: camera ids are UUIDs") from None


def level_filter(values: Sequence[str]) -> tuple[int, ...]:
    out = []
    for v in values:
        try:
            lv = int(v)
        except ValueError:
            lv = -1
        if lv not in LEVEL_VALUES:
            raise BadRequest("bad level filter", [FieldError("level", "use 1, 2, 3 or 9")])
        out.append(lv)
    return tuple(out)


# Writes that other stores make inside their own transactions: `cameras` keeps one writer.


async def set_status(conn: asyncpg.Connection, camera_id: uuid.UUID, status: str) -> None:
    """Record a camera's status (health decides it; the transition history is health's)."""
    await conn.execute("UPDATE cameras SET status = $2 WHERE id = $1", camera_id, status)


async def set_status_many(
    conn: asyncpg.Connection, statuses: Sequence[tuple[uuid.UUID, str]]
) -> None:
    """`set_status` for many cameras in one statement (the map-grid and coverage triggers on
    `cameras` run per statement, so one statement, not one per camera)."""
    if not statuses:
        return
    await conn.execute(
        """UPDATE cameras c SET status = u.status
           FROM unnest($1::uuid[], $2::text[]) AS u(id, status) WHERE c.id = u.id""",
        [c for c, _ in statuses],
        [s for _, s in statuses],
    )


# What an address change shows in the audit record, before and after.
_ADDRESS_COLUMNS = "id, gb_id, name, region_code, ip, onvif_port, streams, version"


async def move_address(
    conn: asyncpg.Connection,
    actor: Actor,
    camera_ids: Sequence[uuid.UUID],
    old: str,
    new: str,
    *,
    reason: str,
) -> None:
    """Cameras of a device that moved from `old` to `new` follow it: ip and stream hosts (ports,
    paths and embedded credentials kept), one audited update each."""
    cams = await conn.fetch(
        f"""SELECT {_ADDRESS_COLUMNS} FROM cameras WHERE id = ANY($1::uuid[])
            ORDER BY id FOR UPDATE""",
        list(camera_ids),
    )
    for cam in cams:
        before = row_dict(cam)
        before["ip"] = str(cam["ip"]) if cam["ip"] is not None else None
        streams = {k: _moved(v, old, new) for k, v in (cam["streams"] or {}).items()}
        rec = await conn.fetchrow(
            f"""UPDATE cameras SET ip = $2::inet, streams = $3, version = version + 1,
                    updated_at = now()
                WHERE id = $1 RETURNING {_ADDRESS_COLUMNS}""",
            cam["id"],
            new,
            streams,
        )
        assert rec is not None
        after = row_dict(rec)
        after["ip"] = str(rec["ip"])
        await audit.record(
            conn,
            actor,
            "camera.update",
            camera_id=cam["id"],
            region_code=cam["region_code"],
            before=before,
            after=after,
            detail={"reason": reason, "from": old, "to": new},
        )


def _moved(uri: str | None, old: str, new: str) -> str | None:
    """`uri` with host `old` replaced by `new` (port, path and query kept)."""
    if not uri:
        return uri
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        return uri
    if host != old:
        return uri
    netloc = (f"[{new}]" if ":" in new else new) + (f":{port}" if port is not None else "")
    if parts.username is not None:  # keep embedded credentials the camera was stored with
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
