"""Bulk upsert of validated cameras: chunks are COPYed into a staging table while the caller
validates the next one, and merged set-based in one transaction of row locks.

Staging runs beside live traffic and takes no lock on `cameras`. The new cameras are inserted
every `_EARLY_MERGE_ROWS` staged rows (`merge_new`), so a first import's merge runs while the
reader parses the rest of the file; updates of registered cameras and rows without a GB ID
are merged as one set at the end (`finish`). Everything happens in one transaction of row
locks, so "all or nothing" is PostgreSQL's rollback, not bookkeeping of ours, and readers of
the registry never wait for an import. No index is dropped and no trigger disabled: a DDL
statement on `cameras` would lock every reader out until the import commits (issue 13:
/healthz timed out for minutes).

Rows are matched by GB ID; rows without one are matched by (region, name) when that is
unambiguous, else given a generated ID, so importing the same file twice changes nothing.
Only columns the file has are written: a ledger without 方向角 does not wipe the azimuths a
technician set in the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg
import numpy as np
from numpy.typing import NDArray

from camera_registry.actor import Actor
from camera_registry.errors import DatabaseUnavailable, FieldError, ValidationFailed
from camera_registry.fields import DB_COLUMNS, STREAM_KEYS
from camera_registry.store import audit
from camera_registry.store.cameras import allocate_serials
from camera_registry.store.db import lower_backend_priority
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
# Stage pages per INSERT of the merge (~16 rows a page of a ledger's 22 columns: ~80,000
# rows, whose transition table and 4-tier GROUP BY fit the session's work_mem below).
_MERGE_PAGES = 5_000
_STAGE_PAGES = (
    "SELECT pg_relation_size('pg_temp.import_stage') / current_setting('block_size')::int"
)
_ALL_PAGES = 2**31 - 1
# Rows staged between two early merges: a smaller statement costs more per row (each runs
# the map-grid upsert and sorts its own rows), a larger one waits longer for the reader.
_EARLY_MERGE_ROWS = 50_000
_ORDER_CELL_DEG = 0.1  # merge order: map cells of this size, west to east
_WORK_MEM = "128MB"  # the merge's sorts and hashes (the map grid's GROUP BY, the re-import join)
STATEMENT_TIMEOUT_S = 3600.0  # a 2.4 M merge on a loaded machine stays well inside this
COPY_TIMEOUT_S = 300.0  # one chunk of the stage is seconds of work: a wait this long is a wedge


DIGEST_BYTES = 16  # a source line's digest (128 bits), as `camera_import_rows` keeps it


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Source lines an earlier import merged, unchanged since (`BulkLoad.unchanged`), in
    order. Their cameras stay in the import's session (a province's worth of 国标编码 as
    Python strings would be ~0.5 GB); `gb_ids()` asks for them when lines remain to be read."""

    lines: NDArray[np.int64]
    load: BulkLoad | None = None

    def __len__(self) -> int:
        return len(self.lines)

    async def gb_ids(self) -> tuple[list[int], list[str]]:
        """(line, 国标编码) of the skipped lines' cameras."""
        return await self.load.skipped_ids() if self.load is not None else ([], [])


@dataclass(frozen=True, slots=True)
class MergeResult:
    staged: int
    inserted: int
    updated: int

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated


# What a session that died under us (a restarted server, a dropped network) raises on use.
_GONE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# The subset that means the session itself is gone: asyncpg reports a connection lost between
# statements as a confused protocol state (InternalClientError), so that counts too.
_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown
)


class ImportConnectionLost(DatabaseUnavailable):
    """The import's database session died (server restarted or unreachable)."""


@contextlib.contextmanager
def _lost_means_unavailable() -> Iterator[None]:
    """Any sign that the session died becomes one error that says what happened and what to do."""
    try:
        yield
    except _LOST as exc:
        raise ImportConnectionLost(
            f"the database connection was lost during the import ({exc.__class__.__name__}: "
            f"{exc}); the registry has all of the file or none of it — run the import again "
            "when the database is back (re-importing an imported file changes nothing)"
        ) from exc


class GeneratedIdCollision(ValidationFailed):
    pass


class ConcurrentCameraAdded(ValidationFailed):
    pass


def keepalive(conn: asyncpg.Connection) -> None:
    """Notice a vanished server within about half a minute, not after the kernel's two hours.

    A restarted PostgreSQL closes its sockets and asyncpg notices at once; a server whose host
    or network went away sends nothing, and a COPY paused for writing would wait for ever
    (issue 17). TCP keepalives and TCP_USER_TIMEOUT turn that silence into a connection error.
    Unix sockets (the embedded cluster) need none of this.
    """
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", 10),
        ("TCP_KEEPINTVL", 5),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 30_000),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:
            sock.setsockopt(socket.IPPROTO_TCP, opt, value)


_YIELD_ROWS = 200  # rows asyncpg encodes between two turns of the event loop (~2 ms)


async def _yielding(records: Iterable[tuple[Any, ...]]) -> AsyncIterator[tuple[Any, ...]]:
    """The records, handing the event loop back every `_YIELD_ROWS`: asyncpg encodes COPY rows
    on the loop (~10 µs each), and a 50,000-row chunk in one go held every request of the
    server for half a second."""
    for i, record in enumerate(records):
        if i % _YIELD_ROWS == 0:
            await asyncio.sleep(0)
        yield record


class BulkLoad:
    """`async with BulkLoad(pool, actor) as load: await load.add(b) …;
    result = await load.finish(); load.commit()`.

    Staging takes no lock on `cameras`: each chunk is COPYed into a temporary (unlogged,
    session-private) table in a statement of its own. `merge_new()` opens the one transaction
    that touches `cameras` and inserts the new cameras staged so far; `finish()` adds an UPDATE of
    the rows that differ and the rows without a GB ID — row locks only — so readers of
    `cameras` never wait for an import, and writers wait only for rows both change (a writer
    adding a GB ID the import already inserted waits for its end). Leaving the block commits
    only if `commit()` was called; any exception or a dry run rolls the merge back, and the
    stage is dropped.
    Batches must not repeat a GB ID (see `DuplicateFilter`).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        actor: Actor,
        *,
        import_id: str | None = None,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
        acquire_timeout_s: float = 60.0,
        niceness: int = 0,
    ) -> None:
        self.pool = pool
        # > 0: the session's backend runs at that niceness (`lower_backend_priority`)
        self.niceness = niceness
        self._reniced = False
        self.actor = actor
        self.import_id = import_id
        self.statement_timeout_s = statement_timeout_s
        self.acquire_timeout_s = acquire_timeout_s
        self.present: set[str] = set(_ALWAYS)
        self.staged = self.inserted = self.updated = 0
        # Early merges (`merge_new`): rows left to `finish()` (a registered camera's, or
        # without 国标编码).
        self.existing = self._pending = self._pending_ids = 0
        self.merging = self.abandoned = self._restaging = False
        self.backend_pid: int | None = None
        # Digest of each source line (`DIGEST_BYTES` per row number), kept per camera so the
        # next import of the same line can skip it (`unchanged`); None: the source has none.
        self.row_digests: bytes | None = None
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._commit = False

    async def __aenter__(self) -> BulkLoad:
        with _lost_means_unavailable():
            self._conn = await self.pool.acquire(timeout=self.acquire_timeout_s)
        try:
            await self._open_session()
        except BaseException:
            await self._release()
            raise
        return self

    async def _open_session(self) -> None:
        assert self._conn is not None
        with _lost_means_unavailable():
            keepalive(self._conn)
            self.backend_pid = self._conn.get_server_pid()
            if self.niceness:
                self._reniced = await lower_backend_priority(self._conn, self.niceness)
            # Server-side bounds beside the client's: the statement or idle transaction of a
            # client that vanished is ended by PostgreSQL itself, releasing its locks.
            ms = int(self.statement_timeout_s * 1000)
            await self._conn.execute(
                f"""SET statement_timeout = {ms};
                    SET idle_in_transaction_session_timeout = {max(ms // 10, 60_000)};
                    SET lock_timeout = {min(ms, 600_000)};
                    SET work_mem = '{_WORK_MEM}'""",
                timeout=self.acquire_timeout_s,
            )
            cols = ", ".join(f"{c} {_STAGE_TYPES[c]}" for c in DB_COLUMNS)
            await self._conn.execute(
                f"""DROP TABLE IF EXISTS pg_temp.import_stage, pg_temp.import_chunk,
                                         pg_temp.import_skipped;
                    CREATE TEMP TABLE import_skipped (line integer NOT NULL, camera_id uuid);
                    CREATE TEMP TABLE import_stage (row_no integer NOT NULL, {cols},
                                                    generated boolean NOT NULL DEFAULT false,
                                                    row_digest bytea);
                    CREATE TEMP TABLE import_chunk (LIKE import_stage INCLUDING DEFAULTS)""",
                timeout=self.acquire_timeout_s,
            )

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._tx is not None:
                if self._commit and et is None:
                    with _lost_means_unavailable():
                        await self._tx.commit()
                else:
                    with contextlib.suppress(*_GONE):  # a lost session rolled itself back
                        await self._tx.rollback()
        finally:
            await self._release()

    async def _release(self) -> None:
        conn, self._conn, self._tx = self._conn, None, None
        if conn is None:
            return
        if self._reniced:  # its backend stays at low priority: not for the pool's next user
            conn.terminate()  # the pool replaces a terminated connection; its stage goes too
            with contextlib.suppress(*_GONE):
                await asyncio.wait_for(self.pool.release(conn), 10)
            return
        try:  # neither the stage nor the session's timeouts may outlive the import
            await conn.execute(
                "DROP TABLE IF EXISTS pg_temp.import_stage, pg_temp.import_chunk, "
                "pg_temp.import_skipped; RESET ALL",
                timeout=10,
            )
        except _GONE:
            with contextlib.suppress(*_GONE):
                conn.terminate()  # the pool replaces a terminated connection
        with contextlib.suppress(*_GONE):
            await asyncio.wait_for(self.pool.release(conn), 10)

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None, "use BulkLoad as an async context manager"
        return self._conn

    def commit(self) -> None:
        self._commit = True

    async def add(self, batch: CameraBatch) -> None:
        """Stage one validated batch (no lock on `cameras`; merged by `finish()`)."""
        await self._copy("import_stage", batch)

    def _note_columns(self, batch: CameraBatch) -> set[str]:
        """Columns the source has (an empty batch tells them too: a re-import whose every
        line was skipped still records them)."""
        present = {c for c in batch.present if c in _STAGE_TYPES} | set(_ALWAYS)
        if {"username", "password"} & batch.present:
            present |= {"credentials", "credentials_mac"}
        if "lon" in present or "lat" in present:
            present |= {"lon", "lat"}
        self.present |= present
        return present

    async def _copy(self, table: str, batch: CameraBatch) -> None:
        present = self._note_columns(batch)
        if not len(batch):
            return
        # Columns the file does not have are all NULL: leave them out of the COPY.
        cols = [c for c in DB_COLUMNS if c in present]
        rows = batch.rows.tolist()
        extra: list[list[Any]] = []
        if self.row_digests is not None:
            # Rows without a 国标编码 in the file are matched or numbered by the merge: a later
            # import must do that again, so they keep no digest.
            blob, n = self.row_digests, DIGEST_BYTES
            extra.append(
                [
                    blob[r * n : r * n + n] if g is not None else None
                    for r, g in zip(rows, batch.cols["gb_id"], strict=True)
                ]
            )
        records = zip(rows, *(batch.cols[c] for c in cols), *extra, strict=True)
        with _lost_means_unavailable():
            await self.conn.copy_records_to_table(
                table,
                records=_yielding(records),
                columns=["row_no", *cols, *(["row_digest"] if extra else [])],
                timeout=min(COPY_TIMEOUT_S, self.statement_timeout_s),
            )
        self.staged += len(batch)

    # Every statement of the merge carries the import's own bound: the pool's command timeout
    # (a minute, for requests) is far too short for a province's merge, and no bound at all
    # would let a dead server wedge the job.
    async def _execute(self, sql: str, *args: Any) -> str:
        status: str = await self.conn.execute(sql, *args, timeout=self.statement_timeout_s)
        return status

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.conn.fetch(
            sql, *args, timeout=self.statement_timeout_s
        )
        return rows

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args, timeout=self.statement_timeout_s)

    async def _assign_gb_ids(self) -> None:
        conn = self.conn
        if not await self._fetchval(
            "SELECT EXISTS (SELECT 1 FROM import_stage WHERE gb_id IS NULL)"
        ):
            return
        # Unambiguous (region, name) matches keep the ID the camera already has.
        await self._execute(
            """UPDATE import_stage s SET gb_id = m.gb_id
               FROM (SELECT c.region_code, c.name, min(c.gb_id) AS gb_id FROM cameras c
                     WHERE c.xmin <> pg_current_xact_id()::xid  -- not the early merges' rows
                       AND (c.region_code, c.name) IN
                           (SELECT region_code, name FROM import_stage WHERE gb_id IS NULL)
                     GROUP BY c.region_code, c.name HAVING count(*) = 1) m
               WHERE s.gb_id IS NULL AND s.region_code = m.region_code AND s.name = m.name"""
        )
        for _ in range(10):
            counts = await self._fetch(
                """SELECT region_code, count(*) AS n FROM import_stage WHERE gb_id IS NULL
                   GROUP BY region_code"""
            )
            if not counts:
                return
            ranges = await allocate_serials(conn, {r["region_code"]: r["n"] for r in counts})
            await self._execute(
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
            # A generated ID that a camera or another row of the file already holds is drawn
            # again (the whole file is staged, so a later row's explicit ID is seen too).
            await self._execute(
                """UPDATE import_stage s SET gb_id = NULL, generated = false
                   WHERE s.generated
                     AND (EXISTS (SELECT 1 FROM cameras c WHERE c.gb_id = s.gb_id)
                          OR EXISTS (SELECT 1 FROM import_stage t
                                     WHERE t.gb_id = s.gb_id AND NOT t.generated))"""
            )
        raise GeneratedIdCollision(
            "a generated 国标编码 kept colliding with existing ones; give every row of that "
            "region its 国标编码",
            [FieldError("gb_id", "generated ID collided with an explicit one")],
        )

    def _stream_sql(self) -> tuple[list[str], list[str], str, str]:
        """(plain columns, stream columns present, the new streams object, the merged one)."""
        present = self.present
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
        return plain, stream_present, new_streams, streams_expr

    async def _merge_stage(self) -> None:
        """Update cameras whose staged row differs, insert new ones, audit the updates."""
        plain, _, _, streams_expr = self._stream_sql()
        compare_old = ", ".join([*(f"c.{c}" for c in plain if c != "credentials"), "c.streams"])
        compare_new = ", ".join([*(f"s.{c}" for c in plain if c != "credentials"), streams_expr])
        sets = ", ".join(f"{c} = s.{c}" for c in plain)
        detail = {"import_id": self.import_id} if self.import_id else None
        self.updated += await self._fetchval(
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
        pages = await self._fetchval(_STAGE_PAGES)
        for first in range(0, int(pages), _MERGE_PAGES):
            await self._insert_new(first, first + _MERGE_PAGES)
        await self._remember("import_stage")

    async def _remember(self, table: str, *, only_new: bool = False) -> None:
        """Keep each merged row's line digest with its camera and the camera's version now
        (after this import's own write), for `unchanged()` of a later import. `only_new`: just
        the cameras this transaction inserted (an early merge; the rest are remembered by
        `finish()`, after their update)."""
        if self.row_digests is None:
            return
        new = "AND c.xmin = pg_current_xact_id()::xid" if only_new else ""
        await self._execute(
            f"""INSERT INTO camera_import_rows (row_digest, camera_id, camera_version)
                SELECT DISTINCT ON (s.row_digest) s.row_digest, c.id, c.version
                FROM {table} s JOIN cameras c ON c.gb_id = s.gb_id
                WHERE s.row_digest IS NOT NULL {new}
                ORDER BY s.row_digest
                ON CONFLICT (row_digest) DO UPDATE
                SET camera_id = excluded.camera_id, camera_version = excluded.camera_version"""
        )

    async def unchanged(self, lines: Sequence[int], blob: bytes) -> Unchanged:
        """The source lines (of `lines`, each with its digest in `blob`) that an earlier import
        merged into a camera nobody has written since: validating and merging them again would
        change nothing. Their cameras are kept in the session for `skipped_ids` and `points`.
        No lock on `cameras`."""
        with _lost_means_unavailable():
            await self._execute(
                f"""INSERT INTO import_skipped
                    SELECT l.line, c.id
                    FROM unnest($1::integer[]) AS l(line)
                    JOIN camera_import_rows r
                      ON r.row_digest = substring($2::bytea FROM l.line * {DIGEST_BYTES} + 1
                                                  FOR {DIGEST_BYTES})
                    JOIN cameras c ON c.id = r.camera_id AND c.version = r.camera_version""",
                list(lines),
                blob,
            )
            found = await self._fetchval(
                "SELECT coalesce(array_agg(line ORDER BY line), '{}') FROM import_skipped"
            )
        return Unchanged(np.asarray(found, dtype=np.int64), self)

    async def skipped_ids(self) -> tuple[list[int], list[str]]:
        """(line, 国标编码) of the cameras `unchanged` found, by line."""
        with _lost_means_unavailable():
            row = await self.conn.fetchrow(
                """SELECT coalesce(array_agg(s.line ORDER BY s.line), '{}') AS lines,
                          coalesce(array_agg(c.gb_id ORDER BY s.line), '{}') AS gb_ids
                   FROM import_skipped s JOIN cameras c ON c.id = s.camera_id""",
                timeout=self.statement_timeout_s,
            )
        assert row is not None
        return list(row["lines"]), list(row["gb_ids"])

    async def points(self, bad: Sequence[int]) -> list[asyncpg.Record]:
        """(line, region_code, lon, lat) of the skipped lines' cameras but those of `bad`
        lines, by line, for their placement warnings; none without county boundaries to
        check them against."""
        with _lost_means_unavailable():
            if not await self._fetchval(
                "SELECT EXISTS (SELECT 1 FROM geo_regions WHERE rank = 'county')"
            ):
                return []
            rows: list[asyncpg.Record] = await self.conn.fetch(
                """SELECT s.line, c.region_code, c.lon, c.lat
                   FROM import_skipped s JOIN cameras c ON c.id = s.camera_id
                   WHERE s.line <> ALL($1::integer[]) ORDER BY s.line""",
                list(bad),
                timeout=self.statement_timeout_s,
            )
        return rows

    async def _insert_new(self, first_page: int, end_page: int, table: str = "import_stage") -> int:
        """Insert the rows of `table` in its pages [first_page, end_page) that are not
        registered yet; returns how many.

        One INSERT per slice of the stage: each statement's triggers (map grid, health
        schedule, geo versions) then aggregate a transition table that stays in memory, where
        one statement of 2.4 M rows spilled every GROUP BY to disk. Within a slice the rows go
        in by map cell, so consecutive inserts descend the same GiST pages."""
        plain, stream_present, new_streams, _ = self._stream_sql()
        insert_cols = ["gb_id", *plain]
        stream_values = new_streams if stream_present else "'{}'::jsonb"
        order = ""
        if "lon" in self.present:
            order = f"ORDER BY floor(s.lon / {_ORDER_CELL_DEG}), floor(s.lat / {_ORDER_CELL_DEG})"
        sql = f"""INSERT INTO cameras ({", ".join(insert_cols)}, streams)
                  SELECT {", ".join(f"s.{c}" for c in insert_cols)}, {stream_values}
                  FROM {table} s
                  WHERE s.ctid >= format('(%s,0)', $1::bigint)::tid
                    AND s.ctid < format('(%s,0)', $2::bigint)::tid
                    AND s.gb_id IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM cameras c WHERE c.gb_id = s.gb_id)
                  {order}"""
        try:
            status = await self._execute(sql, first_page, end_page)
        except asyncpg.UniqueViolationError:
            raise ConcurrentCameraAdded(
                "a camera with a 国标编码 of this file was added while the import ran; "
                "import the file again",
                [FieldError("gb_id", "added by another writer during the import")],
            ) from None
        n = int(status.split()[-1])
        self.inserted += n
        return n

    async def _begin(self) -> None:
        if self._tx is None:
            self._tx = self.conn.transaction()
            await self._tx.start()

    async def merge_new(self, batch: CameraBatch) -> None:
        """Stage a batch; every `_EARLY_MERGE_ROWS` insert the new cameras staged so far,
        inside the import's transaction, while the reader prepares the next batches (the
        merge of a first import no longer waits for the whole file). Rows of cameras
        registered before the import, and rows without a 国标编码, go on to the stage and wait
        for `finish()`, which updates and assigns them as one set."""
        self._note_columns(batch)
        if not len(batch):
            return
        if self._restaging:
            await self.add(batch)
            return
        with _lost_means_unavailable():
            await self._copy("import_chunk", batch)
            self.merging = True
            self._pending += len(batch)
            self._pending_ids += sum(g is not None for g in batch.cols["gb_id"])
            if self._pending >= _EARLY_MERGE_ROWS:
                await self._merge_pending()

    async def _merge_pending(self) -> None:
        if not self._pending:
            return
        await self._begin()
        new = await self._insert_new(0, _ALL_PAGES, "import_chunk") if self._pending_ids else 0
        if new < self._pending:
            # Not just inserted by this transaction: registered before (or meanwhile by
            # another writer), or no 国标编码 yet.
            status = await self._execute(
                """INSERT INTO import_stage SELECT * FROM import_chunk s
                   WHERE s.gb_id IS NULL
                      OR EXISTS (SELECT 1 FROM cameras c WHERE c.gb_id = s.gb_id
                                 AND c.xmin <> pg_current_xact_id()::xid)"""
            )
            moved = int(status.split()[-1])
            self.existing += moved
            # Mostly registered cameras (a re-import): early merges would only probe every
            # row twice and copy it again; stage the rest directly for `finish()`.
            self._restaging = moved * 2 > self._pending
        await self._remember("import_chunk", only_new=True)
        await self._execute("TRUNCATE import_chunk")
        self._pending = self._pending_ids = 0

    async def abandon(self) -> None:
        """The import will not commit (a bad row without --partial): give back every row and
        unique-index entry the early merges hold, while the rest of the file is read for its
        report. Nothing is merged after this."""
        self.merging = False
        self.abandoned = True
        if self._tx is not None:
            tx, self._tx = self._tx, None
            with contextlib.suppress(*_GONE):
                await tx.rollback()

    async def finish(self) -> MergeResult:
        with _lost_means_unavailable():
            return await self._finish()

    async def _finish(self) -> MergeResult:
        """Merge the whole stage into `cameras` in one transaction and audit the import.

        The transaction stays open (holding row locks only) until the block is left:
        committed if `commit()` was called, else rolled back (a dry run, a failure)."""
        conn = self.conn
        assert not self.abandoned, "an abandoned import merges nothing"
        await self._merge_pending()
        if not self.merging or self.existing:
            # Row counts and GB ID spread for the planner's joins: a sample of 3,000 rows tells
            # them as well as the default 30,000, at a tenth of the cost.
            await self._execute(
                "SET default_statistics_target = 10; ANALYZE import_stage; "
                "RESET default_statistics_target"
            )
            await self._begin()
            await self._assign_gb_ids()
            await self._merge_stage()
        await self._begin()
        result = MergeResult(self.staged, self.inserted, self.updated)
        await audit.record(
            conn,
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

    def __init__(self, seed: Mapping[str, int] | None = None) -> None:
        self.first_row: dict[str, int] = dict(seed or {})
        # 国标编码 of lines this filter never sees (an import's skipped unchanged lines) and
        # their row: still counted, so the file repeats no camera.
        self.seeded = set(self.first_row)

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
            if first > row and gb in self.seeded:
                # The skipped line comes later in the file: it is the repeat, as it would be
                # had it been read.
                self.seeded.discard(gb)
                seen[gb] = row
                errors.append(
                    FieldError(
                        "gb_id", f"国标编码 {gb} is also on row {row}; each camera once", first
                    )
                )
                continue
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
