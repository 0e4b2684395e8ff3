"""Import a camera ledger (台账): read, validate, stage and merge as one transaction.

Reading and validation are CPU work and run in a worker thread, one chunk ahead of the COPY
into PostgreSQL, so the event loop stays free and the database works while Python parses.
With any bad row the default is to import nothing and report every bad row; `partial`
imports the good rows and still reports the bad ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from camera_registry.actor import Actor
from camera_registry.bulk import BulkLoad, DuplicateFilter
from camera_registry.crypto import CredentialBox
from camera_registry.errors import FieldError
from camera_registry.validate import CameraBatch, validate_columns

from .ledger_read import LedgerChunk, open_ledger

MAX_ERRORS_KEPT = 200_000  # beyond this the file is not a ledger with typos; stop listing
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

    @property
    def status(self) -> str:
        if self.rows_bad and not self.committed and not self.dry_run:
            return "rejected"
        return "succeeded"

    def summary(self) -> str:
        verb = (
            "would import"
            if self.dry_run
            else "imported"
            if self.committed
            else "imported nothing of"
        )
        head = (
            f"{self.filename}: {verb} {self.rows_total - self.rows_bad} of {self.rows_total} rows"
        )
        if self.committed or self.dry_run:
            head += f" ({self.inserted} new, {self.updated} updated, {self.unchanged} unchanged)"
        if self.rows_bad:
            head += f"; {self.rows_bad} bad rows"
            if not self.committed and not self.dry_run:
                head += " — fix them and import again, or use --partial to import the good rows"
        return head


def _validated(
    chunks: Iterator[LedgerChunk], box: CredentialBox, crs: str, scope: str | None
) -> Iterator[tuple[CameraBatch, list[FieldError], int]]:
    unique = DuplicateFilter()
    for chunk in chunks:
        batch, errors = validate_columns(
            chunk.columns, chunk.rows, box=box, default_crs=crs, scope=scope
        )
        batch, dups = unique(batch)
        problems = [FieldError(f or "row", m, r) for r, f, m in chunk.problems]
        yield batch, problems + errors + dups, len(chunk.rows) + len(chunk.problems)


async def import_ledger(
    pool: asyncpg.Pool,
    box: CredentialBox,
    actor: Actor,
    path: str | Path,
    *,
    dry_run: bool = False,
    partial: bool = False,
    crs: str = "wgs84",
    chunk_rows: int = 50_000,
    import_id: str | None = None,
    on_progress: Progress | None = None,
    filename: str | None = None,
) -> ImportReport:
    loop = asyncio.get_running_loop()
    report = ImportReport(filename or Path(path).name, dry_run=dry_run)
    ledger = await loop.run_in_executor(None, open_ledger, path)
    report.warnings = [
        f"column {c!r} is not a camera field and was ignored" for c in ledger.ignored_columns
    ]
    source = _validated(ledger.chunks(chunk_rows), box, crs, actor.scope)
    queue: asyncio.Queue[tuple[CameraBatch, list[FieldError], int] | None] = asyncio.Queue(2)

    def next_item() -> tuple[CameraBatch, list[FieldError], int] | None:
        return next(source, None)

    async def produce() -> None:
        while True:
            item = await loop.run_in_executor(None, next_item)
            await queue.put(item)
            if item is None:
                return

    producer = asyncio.create_task(produce())
    bad_rows: set[int] = set()
    try:
        async with BulkLoad(pool, actor, import_id=import_id) as load:
            first = True
            while (item := await queue.get()) is not None:
                batch, errors, n = item
                report.rows_total += n
                bad_rows.update(e.row for e in errors if e.row is not None)
                _keep(report, errors)
                report.rows_bad = len(bad_rows)
                if first:  # the file's size over the first chunk's share of it
                    await load.prepare(int(report.rows_total / max(ledger.progress(), 1e-9)))
                    first = False
                if partial or not bad_rows:
                    await load.add(batch)
                if on_progress is not None:
                    res = on_progress(ledger.progress(), report.rows_total)
                    if res is not None:
                        await res
            await producer
            report.errors.sort(key=lambda e: e.row or 0)
            if bad_rows and not partial:
                return report
            result = await load.finish()
            report.inserted, report.updated = result.inserted, result.updated
            report.unchanged = result.unchanged
            if not dry_run:
                load.commit()
                report.committed = True
        return report
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopIteration):
                await producer
        ledger.close()


def _keep(report: ImportReport, errors: list[FieldError]) -> None:
    room = MAX_ERRORS_KEPT - len(report.errors)
    if len(errors) > room:
        report.errors_truncated = True
    report.errors.extend(errors[: max(room, 0)])
