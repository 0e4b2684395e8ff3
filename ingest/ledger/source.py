"""Import a camera ledger (台账): read, validate, stage and merge as one transaction.

Reading and validation are CPU work and run in a worker thread, one chunk ahead of the COPY
into PostgreSQL, so the event loop stays free and the database works while Python parses.
With any bad row the default is to import nothing and report every bad row; `partial`
imports the good rows and still reports the bad ones.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg

from camera_registry.actor import Actor
from camera_registry.crypto import CredentialBox
from camera_registry.errors import FieldError
from camera_registry.store.bulk import BULK_MODE_ROWS, BulkLoad, DuplicateFilter
from camera_registry.validate import CameraBatch, validate_columns
from ingest.errors import IngestError, LedgerFormatError
from ingest.ledger.read import Ledger, open_ledger

log = logging.getLogger(__name__)

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


@dataclass
class _Item:
    batch: CameraBatch
    errors: list[FieldError]
    rows: int
    progress: float


def _items(
    ledger: Ledger, box: CredentialBox, crs: str, scope: str | None, chunk_rows: int
) -> Iterator[_Item]:
    """Read, validate and de-duplicate the ledger chunk by chunk (CPU work: not on the loop)."""
    unique = DuplicateFilter()
    for chunk in ledger.chunks(chunk_rows):
        batch, errors = validate_columns(
            chunk.columns, chunk.rows, box=box, default_crs=crs, scope=scope
        )
        batch, dups = unique(batch)
        problems = [FieldError(f or "row", m, r) for r, f, m in chunk.problems]
        n = len(chunk.rows) + len(chunk.problems)
        yield _Item(batch, problems + errors + dups, n, ledger.progress())


def _warnings(ledger: Ledger) -> list[str]:
    return [f"column {c!r} is not a camera field and was ignored" for c in ledger.ignored_columns]


class _ThreadSource:
    """Small files: read and validate in a thread, one chunk ahead of the database."""

    def __init__(self, path: Path, key: bytes, crs: str, scope: str | None, chunk_rows: int):
        self.args = (path, key, crs, scope, chunk_rows)
        self.warnings: list[str] = []
        self._it: Iterator[_Item] | None = None
        self._ledger: Ledger | None = None

    async def start(self) -> None:
        path, key, crs, scope, chunk_rows = self.args
        self._ledger = await asyncio.to_thread(open_ledger, path)
        self.warnings = _warnings(self._ledger)
        self._it = _items(self._ledger, CredentialBox(key), crs, scope, chunk_rows)

    async def next(self) -> _Item | None:
        assert self._it is not None
        return await asyncio.to_thread(next, self._it, None)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


def _child(path: Path, key: bytes, crs: str, scope: str | None, chunk_rows: int, out: Any) -> None:
    """Entry point of the reader process: streams ("open"|"item"|"done"|"error", …) messages."""
    try:
        with open_ledger(path) as ledger:
            out.put(("open", _warnings(ledger)))
            for item in _items(ledger, CredentialBox(key), crs, scope, chunk_rows):
                out.put(("item", item))
        out.put(("done", None))
    except LedgerFormatError as exc:
        out.put(("format", (exc.reason, exc.file, exc.line, exc.where)))
    except Exception as exc:
        out.put(("error", f"{exc.__class__.__name__}: {exc}"))


class _ProcessSource:
    """Big files: read and validate in a second process, so parsing runs on the other core
    while this one encodes the COPY and PostgreSQL merges. The queue holds two chunks, which
    bounds memory and makes the reader wait for the database."""

    def __init__(self, path: Path, key: bytes, crs: str, scope: str | None, chunk_rows: int):
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding a loop & pool
        self.queue: Any = ctx.Queue(maxsize=2)
        self.proc = ctx.Process(
            target=_child, args=(path, key, crs, scope, chunk_rows, self.queue), daemon=True
        )
        self.warnings: list[str] = []

    def _get(self) -> tuple[str, Any]:
        while True:
            try:
                msg: tuple[str, Any] = self.queue.get(timeout=1.0)
                return msg
            except queue.Empty:
                if not self.proc.is_alive():
                    return ("error", f"the reader process died (exit code {self.proc.exitcode})")

    async def _message(self) -> tuple[str, Any]:
        kind, value = await asyncio.to_thread(self._get)
        if kind == "format":
            reason, file, line, where = value
            raise LedgerFormatError(reason, file=file, line=line, where=where)
        if kind == "error":
            raise IngestError(f"reading the ledger failed: {value}")
        return kind, value

    async def start(self) -> None:
        self.proc.start()
        kind, value = await self._message()
        assert kind == "open", kind
        self.warnings = value

    async def next(self) -> _Item | None:
        kind, value = await self._message()
        return value if kind == "item" else None

    def close(self) -> None:
        if self.proc.pid is not None:
            if self.proc.is_alive():
                self.proc.terminate()
            self.proc.join(timeout=5)
        self.queue.close()
        self.queue.cancel_join_thread()


PROCESS_MIN_BYTES = 16 * 1024 * 1024  # below this a process costs more to start than it saves


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
    reader: Literal["auto", "thread", "process"] = "auto",
    bulk_threshold: int = BULK_MODE_ROWS,
) -> ImportReport:
    """Import one ledger file; `reader` forces where parsing runs (default: by file size)."""
    path = Path(path)
    report = ImportReport(filename or path.name, dry_run=dry_run)
    if reader == "auto":
        size = await asyncio.to_thread(lambda: path.stat().st_size)
        reader = "process" if size >= PROCESS_MIN_BYTES else "thread"
    kind = _ProcessSource if reader == "process" else _ThreadSource
    source = kind(path, box.key, crs, actor.scope, chunk_rows)
    bad_rows: set[int] = set()
    try:
        await source.start()
        report.warnings = source.warnings
        async with BulkLoad(
            pool, actor, import_id=import_id, bulk_threshold=bulk_threshold
        ) as load:
            first = True
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
                if first:  # the file's size over the first chunk's share of it
                    await load.prepare(int(report.rows_total / max(item.progress, 1e-9)))
                    first = False
                if partial or not bad_rows:
                    await load.add(item.batch)
                in_db += time.perf_counter() - t1
                if on_progress is not None:
                    res = on_progress(item.progress, report.rows_total)
                    if res is not None:
                        await res
            log.debug("import %s: %.1f s waiting for the reader, %.1f s in the database",
                      report.filename, waited, in_db)  # fmt: skip
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
        await asyncio.to_thread(source.close)


def _keep(report: ImportReport, errors: list[FieldError]) -> None:
    room = MAX_ERRORS_KEPT - len(report.errors)
    if len(errors) > room:
        report.errors_truncated = True
    report.errors.extend(errors[: max(room, 0)])
