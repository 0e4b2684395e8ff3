"""The import pipeline: read → validate → stage → merge, as one transaction.

Any reader feeds it (CSV/XLSX/GeoJSON ledgers from `ingest.ledger`, generated rows, a future
catalog sync): a reader yields `ValidatedChunk`s — validation is CPU work, so it runs where the
reader runs (a thread or a second process), one chunk ahead of the database — and
`import_rows` owns the transaction: with any bad row the default is to import nothing and
report every bad row; `partial` imports the good rows and still reports the bad ones.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import asyncpg
import numpy as np
from numpy.typing import NDArray

from camera_registry.actor import Actor
from camera_registry.crypto import CredentialBox
from camera_registry.errors import FieldError
from camera_registry.store.bulk import (
    DIGEST_BYTES,
    STATEMENT_TIMEOUT_S,
    BulkLoad,
    DuplicateFilter,
    Unchanged,
)
from camera_registry.store.placement import CountyCheck
from camera_registry.validate import CameraBatch, validate_columns

log = logging.getLogger(__name__)

__all__ = [
    "STATEMENT_TIMEOUT_S",
    "ChunkSource",
    "ChunkValidator",
    "ImportReport",
    "ImportWatch",
    "RowDigests",
    "SkippingSource",
    "import_rows",
]

MAX_ERRORS_KEPT = 200_000  # beyond this the file is not a ledger with typos; stop listing
MAX_PLACEMENT_WARNINGS = 1_000  # a whole ledger in the wrong 坐标系 is one problem, not 300,000
# An import is background work: its reader processes and its database backend yield the CPU
# to the registry's requests (the readers as `ingest.ledger.source` sets it; the backend where
# the database runs on this host and we may: `store.db.lower_backend_priority`). 19, not 10:
# beside `GET /cameras/{id}` at c=8 on 2 cores, one busy process at niceness 10 still took the
# readers from 5,084 to 3,446 req/s and their p99 from 3.9 to 8.8 ms; at 19, 4,263 req/s and
# 5.2 ms. On an idle machine the import runs as fast as before.
IMPORT_NICENESS = 19
Progress = Callable[[float, int], Awaitable[None] | None]


@dataclass
class ImportReport:
    filename: str
    rows_total: int = 0
    rows_bad: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    committed: bool = False
    dry_run: bool = False
    errors: list[FieldError] = field(default_factory=list)
    errors_truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    placement_warnings: int = 0  # rows far outside their county (listed in `warnings`)

    partial: bool = False

    @property
    def rows_good(self) -> int:
        return self.rows_total - self.rows_bad

    @property
    def rejected(self) -> bool:
        """Whether the run (or, for a dry run, the real run) imports nothing because of bad
        rows: any bad row without --partial, or no good row at all."""
        return bool(self.rows_bad) and (not self.partial or self.rows_good == 0)

    @property
    def status(self) -> str:
        return "rejected" if self.rejected else "succeeded"

    def _counts(self) -> str:
        return f"{self.inserted} new, {self.updated} updated, {self.unchanged} unchanged"

    def _bad_fields(self) -> str:
        by_field = Counter(e.field for e in self.errors).most_common()
        shown = ", ".join(f"{name}: {n}" for name, n in by_field[:4])
        return shown + (", …" if len(by_field) > 4 else "")

    def summary(self) -> str:
        """What happened, or for a dry run exactly what the same command would do."""
        total, good, bad = self.rows_total, self.rows_good, self.rows_bad
        if self.rejected:
            why = f"{bad} of {total} rows are bad ({self._bad_fields()})"
            if self.dry_run:
                head = f"{self.filename}: dry run: would import nothing: {why}"
                if good and not self.partial:
                    head += (
                        f"; with --partial the {good} good rows would be imported "
                        f"({self._counts()})"
                    )
                return head
            head = f"{self.filename}: nothing imported: {why}"
            if good and not self.partial:
                head += (
                    f" — fix them and import again, or use --partial to import the {good} good rows"
                )
            return head
        verb = "dry run: would import" if self.dry_run else "imported"
        head = f"{self.filename}: {verb} {good} of {total} rows ({self._counts()})"
        if bad:
            skipped = "would be skipped" if self.dry_run else "skipped"
            head += f"; {bad} bad rows {skipped} ({self._bad_fields()})"
        if self.dry_run:
            head += "; nothing was changed"
        return head


@dataclass
class ValidatedChunk:
    """One chunk of rows as the pipeline merges it: the valid rows, every problem, how many
    input rows it covered and how far through its source it is (0-1)."""

    batch: CameraBatch
    errors: list[FieldError]
    rows: int
    progress: float


class ChunkValidator:
    """Validates a reader's chunks and drops rows that repeat an earlier GB ID of the source.

    Built where the reader runs (it holds the credential key to seal passwords there)."""

    def __init__(
        self,
        box: CredentialBox,
        crs: str,
        scope: str | None,
        seen: Mapping[str, int] | None = None,
    ) -> None:
        self.box, self.crs, self.scope = box, crs, scope
        self.unique = DuplicateFilter(seen)  # `seen`: 国标编码 of skipped lines, by row

    def __call__(
        self,
        columns: Mapping[str, Sequence[Any]],
        rows: NDArray[np.int64],
        problems: Sequence[tuple[int, str | None, str]],
        progress: float,
    ) -> ValidatedChunk:
        batch, errors = validate_columns(
            columns, rows, box=self.box, default_crs=self.crs, scope=self.scope
        )
        batch, dups = self.unique(batch)
        read = [FieldError(f or "row", m, r) for r, f, m in problems]
        return ValidatedChunk(batch, read + errors + dups, len(rows) + len(problems), progress)


class ImportWatch:
    """How an import proves it moves, for its job's heartbeat: a process that lives is not
    an import that progresses (issue 17: a job stayed 'running' for ever after a database
    restart while its process kept beating).

    `step()` is called after every chunk and around every database phase; `backend_pid` is
    the import's own database session, which the heartbeat may ask PostgreSQL about while a
    long merge statement runs.
    """

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.backend_pid: int | None = None

    def step(self) -> None:
        self.last = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last


class ChunkSource(Protocol):
    """Where validated chunks come from; `warnings` is read after `start()`."""

    warnings: list[str]

    async def start(self) -> None: ...

    async def next(self) -> ValidatedChunk | None: ...


@runtime_checkable
class SkippingSource(ChunkSource, Protocol):
    """A source that can leave out lines an earlier import merged unchanged (see `RowDigests`).
    `skip` is called before `start()`; it returns False when the source cannot leave those
    lines out after all (it then reads everything)."""

    async def skip(self, unchanged: Unchanged) -> bool: ...


@dataclass(frozen=True)
class RowDigests:
    """A digest per source row (`DIGEST_BYTES` each in `blob`, by row number) that says
    everything the row means; `rows` are the rows whose digest is unique in the source."""

    blob: bytes
    rows: Sequence[int]


async def import_rows(
    pool: asyncpg.Pool,
    actor: Actor,
    source: ChunkSource,
    filename: str,
    *,
    dry_run: bool = False,
    partial: bool = False,
    import_id: str | None = None,
    on_progress: Progress | None = None,
    watch: ImportWatch | None = None,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    digests: RowDigests | None = None,
) -> ImportReport:
    """Stage every chunk of `source` and merge them in one transaction (new cameras while
    the source reads on, the rest at the end); the caller closes `source`. Every database
    wait is bounded (`statement_timeout_s` for the merge).

    With `digests` (and a `SkippingSource`), rows an earlier import merged into cameras nobody
    has written since are counted unchanged without being read, validated or merged again;
    the report is the same as if they had been."""
    report = ImportReport(filename, dry_run=dry_run, partial=partial)
    bad_rows: set[int] = set()
    watch = watch or ImportWatch()
    placement = CountyCheck(pool)
    found: list[FieldError] = []  # placement warnings, in row order per source
    async with BulkLoad(
        pool,
        actor,
        import_id=import_id,
        statement_timeout_s=statement_timeout_s,
        niceness=IMPORT_NICENESS,
    ) as load:
        watch.backend_pid = load.backend_pid
        skipped = Unchanged(np.empty(0, dtype=np.int64))
        if digests is not None:
            assert len(digests.blob) % DIGEST_BYTES == 0
            load.row_digests = digests.blob
            if digests.rows and isinstance(source, SkippingSource):
                unchanged = await load.unchanged(digests.rows, digests.blob)
                watch.step()
                if len(unchanged) and await source.skip(unchanged):
                    skipped = unchanged
        await source.start()
        watch.step()
        report.warnings = list(source.warnings)
        report.rows_total = len(skipped)
        waited = in_db = 0.0
        while True:
            t0 = time.perf_counter()
            item = await source.next()
            t1 = time.perf_counter()
            waited += t1 - t0
            if item is None:
                break
            report.rows_total += item.rows
            bad_rows.update(e.row for e in item.errors if e.row is not None)
            _keep(report, item.errors)
            report.rows_bad = len(bad_rows)
            # A dry run stages the good rows even when the real run would stop at a bad one,
            # so it can say what --partial would do.
            if partial or not bad_rows or dry_run:
                # The batch's new cameras go in now, while the reader works on the next one.
                await load.merge_new(item.batch)
            elif not load.abandoned:
                await load.abandon()  # rejected: hold nothing while the rest is read
            await _warn_placement(found, placement, item.batch)
            in_db += time.perf_counter() - t1
            watch.step()
            if on_progress is not None:
                res = on_progress(item.progress, report.rows_total)
                if res is not None:
                    await res
        log.debug("import %s: %.1f s waiting for the reader, %.1f s in the database",
                  report.filename, waited, in_db)  # fmt: skip
        report.errors.sort(key=lambda e: e.row or 0)
        # Skipped lines a read line turned into repeats of its 国标编码 are bad rows now.
        bad = np.fromiter(bad_rows, dtype=np.int64, count=len(bad_rows))
        bad_skipped = bad[np.isin(bad, skipped.lines)].tolist()
        kept = len(skipped) - len(bad_skipped)
        points = await load.points(bad_skipped) if kept else []
        if points:
            found += await placement.outside(
                [p["region_code"] for p in points],
                [p["lon"] for p in points],
                [p["lat"] for p in points],
                [p["line"] for p in points],
            )
        _report_placement(report, found)
        if report.rejected and not dry_run:
            return report
        watch.step()
        result = await load.finish()
        watch.step()
        report.inserted, report.updated = result.inserted, result.updated
        report.unchanged = result.unchanged + kept
        if not dry_run and not report.rejected:
            load.commit()
            report.committed = True
    return report


async def _warn_placement(
    found: list[FieldError], placement: CountyCheck, batch: CameraBatch
) -> None:
    """Valid rows far outside their county (where boundaries are loaded): imported, with a word."""
    if len(found) > MAX_PLACEMENT_WARNINGS:
        return
    cols = batch.cols
    found += await placement.outside(
        cols["region_code"], cols["lon"], cols["lat"], batch.rows.tolist()
    )


def _report_placement(report: ImportReport, found: list[FieldError]) -> None:
    """The first `MAX_PLACEMENT_WARNINGS` placement warnings in row order (skipped lines' and
    read lines' come from two passes), then a word that there are more."""
    found.sort(key=lambda w: w.row or 0)
    for w in found:
        report.placement_warnings += 1
        if report.placement_warnings > MAX_PLACEMENT_WARNINGS:
            report.warnings.append(
                f"more than {MAX_PLACEMENT_WARNINGS} rows lie outside their county; "
                "only the first are listed (is the 坐标系 column right?)"
            )
            return
        report.warnings.append(f"row {w.row}: {w.message}")


def _keep(report: ImportReport, errors: list[FieldError]) -> None:
    room = MAX_ERRORS_KEPT - len(report.errors)
    if len(errors) > room:
        report.errors_truncated = True
    report.errors.extend(errors[: max(room, 0)])
