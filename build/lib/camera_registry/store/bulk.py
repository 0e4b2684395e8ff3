"""Bulk upsert of validated cameras: each chunk is COPYed into a staging table and merged
set-based, while the caller validates the next chunk in a thread.

The whole import is one transaction on one connection, so "all or nothing" is PostgreSQL's
rollback, not bookkeeping of ours. Merging per chunk (rather than once at the end) lets
PostgreSQL insert while Python parses: the two halves of the work overlap instead of queueing.

Rows are matched by GB ID; rows without one are matched by (region, name) when that is
unambiguous, else given a generated ID, so importing the same file twice changes nothing.
Only columns the file has are written: a ledger without 方向角 does not wipe the azimuths a
technician set in the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg

from camera_registry.actor import Actor
from camera_registry.errors import FieldError, ValidationFailed
from camera_registry.fields import DB_COLUMNS, STREAM_KEYS
from camera_registry.store import audit
from camera_registry.store.cameras import allocate_serials
from camera_registry.validate import CameraBatch

_STAGE_TYPES = {
    "gb_id": "text",
    "name": "text",
    "level": "smallint",
    "lon": "float8",
    "lat": "float8",
    "region_code": "text",
    "address": "text",
    "azimuth": "real",
    "hfov": "real",
    "vfov": "real",
    "max_view_distance": "real",
    "mount_height": "real",
    "owner": "text",
    "contact": "text",
    "installed_at": "date",
    "record_days": "integer",
    "vendor": "text",
    "model": "text",
    "firmware": "text",
    "serial": "text",
    "mac": "text",
    "ip": "inet",
    "onvif_port": "integer",
    "stream_main": "text",
    "stream_sub": "text",
    "snapshot": "text",
    "credentials": "bytea",
    "credentials_mac": "bytea",
}
_ALWAYS = ("gb_id", "name", "level", "region_code")  # a row always carries these
_SECRETS = "- 'credentials' - 'credentials_mac' - 'geom'"
BULK_MODE_ROWS = 100_000

# The whole map grid from the table, as migration 0010 first filled it; sorted by key so the
# primary-key index is built from ordered input.
_REBUILD_MAP_GRID = """
DELETE FROM map_grid;
INSERT INTO map_grid (tier, cx, cy, region_code, level, status, n, sum_lon, sum_lat)
SELECT t.tier, floor(c.lon / t.size)::integer, floor(c.lat / t.size)::integer,
       c.region_code, c.level, c.status, count(*), sum(c.lon), sum(c.lat)
  FROM cameras c CROSS JOIN map_grid_tiers() t
 WHERE c.lon IS NOT NULL
 GROUP BY 1, 2, 3, 4, 5, 6
 ORDER BY 1, 2, 3, 4, 5, 6;
ALTER TABLE cameras ENABLE TRIGGER cameras_map_grid_insert;
ALTER TABLE cameras ENABLE TRIGGER cameras_map_grid_update"""


@dataclass(frozen=True, slots=True)
class MergeResult:
    staged: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated


class GeneratedIdCollision(ValidationFailed):
    pass


class BulkLoad:
    """`async with BulkLoad(pool, actor) as load: await load.prepare(n); await load.add(b) …;
    result = await load.finish(); load.commit()`.

    Leaving the block commits only if `commit()` was called; any exception or a dry run rolls
    everything back. Batches must not repeat a GB ID (see `DuplicateFilter`).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        actor: Actor,
        *,
        import_id: str | None = None,
        bulk_threshold: int = BULK_MODE_ROWS,
    ) -> None:
        self.bulk_threshold = bulk_threshold
        self.pool = pool
        self.actor = actor
        self.import_id = import_id
        self.present: set[str] = set(_ALWAYS)
        self.staged = self.inserted = self.updated = 0
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._commit = False
        self._rebuild: list[str] = []
        self._schedule_after = False
        self._empty = False

    async def __aenter__(self) -> BulkLoad:
        self._conn = await self.pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        cols = ", ".join(f"{c} {_STAGE_TYPES[c]}" for c in DB_COLUMNS)
        await self._conn.execute(
            f"""CREATE TEMP TABLE import_stage (row_no integer NOT NULL, {cols},
                                                generated boolean NOT NULL DEFAULT false)
                ON COMMIT DROP"""
        )
        self._empty = not await self._conn.fetchval("SELECT EXISTS (SELECT 1 FROM cameras)")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if self._commit and et is None:
                await self._tx.commit()
            else:
                await self._tx.rollback()
        finally:
            await self.pool.release(self._conn)
            self._conn = None

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None, "use BulkLoad as an async context manager"
        return self._conn

    def commit(self) -> None:
        self._commit = True

    async def prepare(self, expected_rows: int) -> None:
        """For a load much bigger than the table, drop the secondary indexes until `finish()`.

        Inserting millions of rows into a GiST and two B-trees costs several times the insert
        itself; rebuilding them sorted afterwards is cheap. The DROP locks `cameras` until the
        import commits, which suits the first load of a province; daily re-imports stay below
        the threshold (and mostly update or skip rows).
        """
        existing = await self.conn.fetchval(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'cameras'::regclass"
        )
        if expected_rows < self.bulk_threshold or expected_rows < 2 * (existing or 0):
            return
        rows = await self.conn.fetch(
            """SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
               FROM pg_index WHERE indrelid = 'cameras'::regclass AND NOT indisprimary"""
        )
        for r in rows:
            await self.conn.execute(f"DROP INDEX {r['name']}")
        self._rebuild = [r["def"] for r in rows]
        # The health schedule (migration 0003) gets one row per camera from a trigger, with a
        # foreign key and a due-time index: per-row costs that doubled a 2.4 M import. In bulk
        # mode they are paid once, set-based, in finish(), by the schedule's own functions
        # (migration 0013).
        await self.conn.execute("SELECT camera_health_bulk_begin()")
        # The map grid (migration 0010) is kept by statement triggers that upsert ~1.6 M grid
        # rows over a Shanxi-sized import, chunk by chunk (measured: +80 s on 2.4 M rows); in
        # bulk mode it is rebuilt once from the table in finish(), in the same transaction.
        await self.conn.execute(
            """ALTER TABLE cameras DISABLE TRIGGER cameras_map_grid_insert;
               ALTER TABLE cameras DISABLE TRIGGER cameras_map_grid_update"""
        )
        self._schedule_after = True

    async def add(self, batch: CameraBatch) -> None:
        """Stage one validated batch and merge it into `cameras`."""
        if not len(batch):
            return
        present = {c for c in batch.present if c in _STAGE_TYPES} | set(_ALWAYS)
        if {"username", "password"} & batch.present:
            present |= {"credentials", "credentials_mac"}
        if "lon" in present or "lat" in present:
            present |= {"lon", "lat"}
        self.present |= present
        # Columns the file does not have are all NULL: leave them out of the COPY.
        cols = [c for c in DB_COLUMNS if c in present]
        records = zip(batch.rows.tolist(), *(batch.cols[c] for c in cols), strict=True)
        await self.conn.copy_records_to_table(
            "import_stage", records=records, columns=["row_no", *cols]
        )
        self.staged += len(batch)
        await self._merge_stage(present)
        await self.conn.execute("TRUNCATE import_stage")

    async def _assign_gb_ids(self) -> None:
        conn = self.conn
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM import_stage WHERE gb_id IS NULL)"
        ):
            return
        # Unambiguous (region, name) matches keep the ID the camera already has.
        await conn.execute(
            """UPDATE import_stage s SET gb_id = m.gb_id
               FROM (SELECT c.region_code, c.name, min(c.gb_id) AS gb_id FROM cameras c
                     WHERE (c.region_code, c.name) IN
                           (SELECT region_code, name FROM import_stage WHERE gb_id IS NULL)
                     GROUP BY c.region_code, c.name HAVING count(*) = 1) m
               WHERE s.gb_id IS NULL AND s.region_code = m.region_code AND s.name = m.name"""
        )
        for _ in range(10):
            counts = await conn.fetch(
                """SELECT region_code, count(*) AS n FROM import_stage WHERE gb_id IS NULL
                   GROUP BY region_code"""
            )
            if not counts:
                return
            ranges = await allocate_serials(conn, {r["region_code"]: r["n"] for r in counts})
            await conn.execute(
                """WITH alloc AS (
                          SELECT * FROM unnest($1::text[], $2::integer[]) AS a(region, start)),
                        numbered AS (
                          SELECT row_no, region_code,
                                 row_number() OVER (PARTITION BY region_code ORDER BY row_no) AS rn
                          FROM import_stage WHERE gb_id IS NULL)
                   UPDATE import_stage s
                   SET gb_id = n.region_code || '0000' || '132' || '5'
                               || lpad((a.start + n.rn - 1)::text, 6, '0'),
                       generated = true
                   FROM numbered n JOIN alloc a ON a.region = n.region_code
                   WHERE s.row_no = n.row_no""",
                list(ranges),
                [r.start for r in ranges.values()],
            )
            # A generated ID that an existing camera already holds is drawn again.
            await conn.execute(
                """UPDATE import_stage s SET gb_id = NULL, generated = false
                   WHERE s.generated AND EXISTS (SELECT 1 FROM cameras c WHERE c.gb_id = s.gb_id)"""
            )

    async def _merge_stage(self, present: set[str]) -> None:
        """Update cameras whose staged row differs, insert new ones, audit the updates."""
        conn = self.conn
        await self._assign_gb_ids()
        plain = [c for c in DB_COLUMNS if c in present and c not in STREAM_KEYS and c != "gb_id"]
        stream_present = [c for c in STREAM_KEYS if c in present]
        new_streams = "jsonb_strip_nulls(jsonb_build_object({}))".format(
            ", ".join(f"'{STREAM_KEYS[c]}', s.{c}" for c in stream_present)
        )
        if stream_present:
            drop = ", ".join(f"'{STREAM_KEYS[c]}'" for c in stream_present)
            streams_expr = f"(c.streams - ARRAY[{drop}]) || {new_streams}"
        else:
            streams_expr = "c.streams"
        # An import into an empty registry (with its indexes dropped) only inserts: the rows of
        # earlier chunks cannot match, since batches never repeat a GB ID.
        fresh = self._empty and bool(self._rebuild)
        if not fresh:
            compare_old = ", ".join([*(f"c.{c}" for c in plain if c != "credentials"), "c.streams"])
            compare_new = ", ".join(
                [*(f"s.{c}" for c in plain if c != "credentials"), streams_expr]
            )
            sets = ", ".join(f"{c} = s.{c}" for c in plain)
            detail = {"import_id": self.import_id} if self.import_id else None
            self.updated += await conn.fetchval(
                f"""WITH old AS (
                        SELECT c.* FROM cameras c JOIN import_stage s ON s.gb_id = c.gb_id
                        WHERE ({compare_old}) IS DISTINCT FROM ({compare_new})
                        FOR UPDATE OF c),
                    upd AS (
                        UPDATE cameras c SET {sets}, streams = {streams_expr},
                               version = c.version + 1, updated_at = now()
                        FROM import_stage s
                        WHERE s.gb_id = c.gb_id AND c.id IN (SELECT id FROM old)
                        RETURNING c.*),
                    aud AS (
                        INSERT INTO audit_log (actor, token_id, action, camera_id, region_code,
                                               remote_addr, before, after, detail)
                        SELECT $1, $2, 'camera.import_update', o.id, o.region_code, $3,
                               to_jsonb(o) {_SECRETS}, to_jsonb(u) {_SECRETS}, $4
                        FROM old o JOIN upd u USING (id)
                        RETURNING 1)
                    SELECT count(*) FROM aud""",
                self.actor.name,
                self.actor.token_id,
                self.actor.remote_addr,
                detail,
            )
        insert_cols = ["gb_id", *plain]
        stream_values = new_streams if stream_present else "'{}'::jsonb"
        new_only = (
            "" if fresh else ("WHERE NOT EXISTS (SELECT 1 FROM cameras c WHERE c.gb_id = s.gb_id)")
        )
        status = await conn.execute(
            f"""INSERT INTO cameras ({", ".join(insert_cols)}, streams)
                SELECT {", ".join(f"s.{c}" for c in insert_cols)}, {stream_values}
                FROM import_stage s {new_only}"""
        )
        self.inserted += int(status.split()[-1])

    async def finish(self) -> MergeResult:
        """Rebuild dropped indexes and write the import's summary to the audit log."""
        for sql in self._rebuild:
            try:
                await self.conn.execute(sql)
            except asyncpg.UniqueViolationError:
                raise GeneratedIdCollision(
                    "a generated 国标编码 equals one given on a later row of the file; "
                    "give every row of that region its 国标编码, or import those rows first",
                    [FieldError("gb_id", "generated ID collided with an explicit one")],
                ) from None
        self._rebuild = []
        if self._schedule_after:
            await self.conn.execute("SELECT camera_health_bulk_end()")
            await self.conn.execute(_REBUILD_MAP_GRID)
            self._schedule_after = False
        result = MergeResult(self.staged, self.inserted, self.updated)
        await audit.record(
            self.conn,
            self.actor,
            "import.commit",
            detail={
                "import_id": self.import_id,
                "inserted": result.inserted,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "columns": sorted(self.present),
            },
        )
        return result


class DuplicateFilter:
    """Drops rows whose GB ID an earlier row of the same file already had, as bad rows.

    Runs beside validation (in the worker thread) over the whole file; a set of 2.4 million
    IDs costs about 200 MB, far less than a GROUP BY over the staged file at the end.
    """

    def __init__(self) -> None:
        self.first_row: dict[str, int] = {}

    def __call__(self, batch: CameraBatch) -> tuple[CameraBatch, list[FieldError]]:
        ids = batch.cols["gb_id"]
        rows = batch.rows.tolist()
        seen = self.first_row
        dup: list[int] = []
        errors: list[FieldError] = []
        for i, (gb, row) in enumerate(zip(ids, rows, strict=True)):
            if gb is None:
                continue
            first = seen.setdefault(gb, row)
            if first != row:
                dup.append(i)
                errors.append(
                    FieldError(
                        "gb_id", f"国标编码 {gb} is also on row {first}; each camera once", row
                    )
                )
        if not dup:
            return batch, errors
        return batch.without(dup), errors
