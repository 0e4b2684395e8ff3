"""Bulk upsert of validated cameras: COPY into a staging table, then one set-based merge.

The whole import is one transaction on one connection, so "all or nothing" is PostgreSQL's
rollback, not bookkeeping of ours. Rows are matched by GB ID; rows without one are matched by
(region, name) when that is unambiguous, else given a generated ID, so importing the same file
twice changes nothing. Only columns the file has are written: a ledger without 方向角 does not
wipe the azimuths a technician set in the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg

from . import audit
from .actor import Actor
from .errors import FieldError
from .registry import allocate_serials
from .validate import DB_COLUMNS, CameraBatch

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
_STREAMS = {"stream_main": "main", "stream_sub": "sub", "snapshot": "snapshot"}
_ALWAYS = ("gb_id", "name", "level", "region_code")  # a row always carries these
_SECRETS = "- 'credentials' - 'credentials_mac' - 'geom'"
BULK_MODE_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class MergeResult:
    staged: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated


class BulkLoad:
    """`async with BulkLoad(pool, actor) as load: await load.add(batch) …; await load.merge()`.

    Leaving the block commits only if `commit()` was called; any exception or a dry run rolls
    everything back.
    """

    def __init__(self, pool: asyncpg.Pool, actor: Actor, *, import_id: str | None = None) -> None:
        self.pool = pool
        self.actor = actor
        self.import_id = import_id
        self.present: set[str] = set(_ALWAYS)
        self.staged = 0
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._commit = False

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

    async def add(self, batch: CameraBatch) -> None:
        if not len(batch):
            return
        self.present |= {c for c in batch.present if c in _STAGE_TYPES}
        if {"username", "password"} & batch.present:
            self.present |= {"credentials", "credentials_mac"}
        if "lon" in self.present or "lat" in self.present:
            self.present |= {"lon", "lat"}
        # Columns the file does not have are all NULL: leave them out of the COPY.
        cols = [c for c in DB_COLUMNS if c in self.present]
        records = zip(batch.rows.tolist(), *(batch.cols[c] for c in cols), strict=True)
        await self.conn.copy_records_to_table(
            "import_stage", records=records, columns=["row_no", *cols]
        )
        self.staged += len(batch)

    async def duplicates(self, *, drop: bool) -> list[FieldError]:
        """Rows repeating a GB ID seen on an earlier row; with `drop`, removed from the stage."""
        rows = await self.conn.fetch(
            """SELECT gb_id, array_agg(row_no ORDER BY row_no) AS rows FROM import_stage
               WHERE gb_id IS NOT NULL GROUP BY gb_id HAVING count(*) > 1"""
        )
        errors = []
        dropped: list[int] = []
        for r in rows:
            first, *later = r["rows"]
            for row in later:
                errors.append(
                    FieldError(
                        "gb_id",
                        f"国标编码 {r['gb_id']} is also on row {first}; each camera once",
                        row,
                    )
                )
                dropped.append(row)
        if drop and dropped:
            await self.conn.execute(
                "DELETE FROM import_stage WHERE row_no = ANY($1::integer[])", dropped
            )
            self.staged -= len(dropped)
        return sorted(errors, key=lambda e: e.row or 0)

    async def _assign_gb_ids(self) -> None:
        conn = self.conn
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

    async def _bulk_mode(self) -> list[str]:
        """For a load bigger than the table, drop the secondary indexes; returns the rebuilds.

        Inserting millions of rows into a GiST and two B-trees costs several times the insert
        itself; rebuilding them sorted afterwards is cheap. The DROP locks `cameras` until the
        import commits, which is acceptable for the first load of a province, not for daily
        re-imports, which stay below the threshold (and mostly update or skip).
        """
        existing = await self.conn.fetchval(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'cameras'::regclass"
        )
        if self.staged < BULK_MODE_ROWS or self.staged < 2 * (existing or 0):
            return []
        rows = await self.conn.fetch(
            """SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
               FROM pg_index WHERE indrelid = 'cameras'::regclass AND NOT indisprimary"""
        )
        for r in rows:
            await self.conn.execute(f"DROP INDEX {r['name']}")
        return [r["def"] for r in rows]

    async def merge(self) -> MergeResult:
        """Write the stage into `cameras`: update rows that differ, insert new ones, audit both."""
        conn = self.conn
        await self._assign_gb_ids()
        plain = [c for c in DB_COLUMNS if c in self.present and c not in _STREAMS and c != "gb_id"]
        stream_present = [c for c in _STREAMS if c in self.present]
        new_streams = "jsonb_strip_nulls(jsonb_build_object({}))".format(
            ", ".join(f"'{_STREAMS[c]}', s.{c}" for c in stream_present)
        )
        if stream_present:
            drop = ", ".join(f"'{_STREAMS[c]}'" for c in stream_present)
            streams_expr = f"(c.streams - ARRAY[{drop}]) || {new_streams}"
        else:
            streams_expr = "c.streams"
        compare_old = ", ".join([*(f"c.{c}" for c in plain if c != "credentials"), "c.streams"])
        compare_new = ", ".join([*(f"s.{c}" for c in plain if c != "credentials"), streams_expr])
        sets = ", ".join(f"{c} = s.{c}" for c in plain)
        detail = {"import_id": self.import_id} if self.import_id else None
        updated = await conn.fetchval(
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
        rebuild = await self._bulk_mode()
        status = await conn.execute(
            f"""INSERT INTO cameras ({", ".join(insert_cols)}, streams)
                SELECT {", ".join(f"s.{c}" for c in insert_cols)}, {stream_values}
                FROM import_stage s
                WHERE NOT EXISTS (SELECT 1 FROM cameras c WHERE c.gb_id = s.gb_id)"""
        )
        inserted = int(status.split()[-1])
        for sql in rebuild:
            await conn.execute(sql)
        result = MergeResult(self.staged, inserted, int(updated))
        await audit.record(
            conn,
            self.actor,
            "import.commit",
            detail={
                "import_id": self.import_id,
                "inserted": inserted,
                "updated": result.updated,
                "unchanged": result.unchanged,
                "columns": sorted(self.present),
            },
        )
        return result


def rows_of(errors: Iterable[FieldError]) -> set[int]:
    return {e.row for e in errors if e.row is not None}
