"""A camera ledger (台账) as a source of validated chunks for the registry's import pipeline.

Reading and validation are CPU work and run in a worker thread (or, for big files, a second
process), one chunk ahead of the COPY into PostgreSQL, so the event loop stays free and the
database works while Python parses. The transaction itself is `camera_registry.importer`'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import queue
import signal
import tempfile
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal

import asyncpg
import numpy as np

from camera_registry.actor import Actor
from camera_registry.crypto import CredentialBox
from camera_registry.importer import (
    IMPORT_NICENESS,
    STATEMENT_TIMEOUT_S,
    ChunkValidator,
    ImportReport,
    ImportWatch,
    Progress,
    RowDigests,
    ValidatedChunk,
    import_rows,
)
from camera_registry.store.bulk import Unchanged
from ingest.errors import IngestError, LedgerFormatError
from ingest.ledger.digest import LineDigests, line_digests, write_remaining
from ingest.ledger.read import Ledger, is_csv, open_ledger

log = logging.getLogger(__name__)


Seen = Mapping[str, int] | None  # 国标编码 -> row of the lines left out as unchanged


def _items(
    ledger: Ledger,
    box: CredentialBox,
    crs: str,
    scope: str | None,
    chunk_rows: int,
    seen: Seen = None,
) -> Iterator[ValidatedChunk]:
    """Read and validate the ledger chunk by chunk (CPU work: not on the loop)."""
    validate = ChunkValidator(box, crs, scope, seen)
    for chunk in ledger.chunks(chunk_rows):
        yield validate(chunk.columns, chunk.rows, chunk.problems, ledger.progress())


def _warnings(ledger: Ledger) -> list[str]:
    return [f"column {c!r} is not a camera field and was ignored" for c in ledger.ignored_columns]


class _ThreadSource:
    """Small files: read and validate in a thread, one chunk ahead of the database."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        crs: str,
        scope: str | None,
        chunk_rows: int,
        seen: Seen = None,
        label: str | None = None,
    ):
        self.args = (path, key, crs, scope, chunk_rows, seen, label)
        self.warnings: list[str] = []
        self._it: Iterator[ValidatedChunk] | None = None
        self._ledger: Ledger | None = None

    async def start(self) -> None:
        path, key, crs, scope, chunk_rows, seen, label = self.args
        self._ledger = await asyncio.to_thread(partial(open_ledger, path, label=label))
        self.warnings = _warnings(self._ledger)
        self._it = _items(self._ledger, CredentialBox(key), crs, scope, chunk_rows, seen)

    async def next(self) -> ValidatedChunk | None:
        assert self._it is not None
        return await asyncio.to_thread(next, self._it, None)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (issue 17: after `kill -9` of
    the server its ~450 MB reader kept running with no parent). Linux only; elsewhere (and as
    a second line) the child checks its parent whenever it waits to hand over a chunk (`_send`).

    PR_SET_PDEATHSIG fires when the *thread* that started the child ends; the reader is started
    from the event loop's thread, which lives as long as the server. A parent that died before
    the call is caught by comparing the parent pid.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)
    # Reading a ledger is background work: requests of the server it belongs to go first.
    with contextlib.suppress(OSError):
        os.nice(max(0, IMPORT_NICENESS - os.nice(0)))


def _send(out: Any, message: tuple[str, Any], parent: int) -> None:
    """Put a message on the bounded queue, leaving if the parent is gone meanwhile (the queue
    would stay full for ever)."""
    while True:
        try:
            out.put(message, timeout=1.0)
            return
        except queue.Full:
            if os.getppid() != parent:
                os._exit(1)


def _child(
    path: Path,
    key: bytes,
    crs: str,
    scope: str | None,
    chunk_rows: int,
    out: Any,
    parent: int,
    seen: Seen = None,
    label: str | None = None,
) -> None:
    """Entry point of the reader process: streams ("open"|"item"|"done"|"error", …) messages."""
    die_with_parent(parent)
    # A terminal's Ctrl-C reaches the whole process group: the importer stops this process
    # itself; a KeyboardInterrupt here would only add a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with open_ledger(path, label=label) as ledger:
            _send(out, ("open", _warnings(ledger)), parent)
            for item in _items(ledger, CredentialBox(key), crs, scope, chunk_rows, seen):
                _send(out, ("item", item), parent)
        _send(out, ("done", None), parent)
    except LedgerFormatError as exc:
        _send(out, ("format", (exc.reason, exc.file, exc.line, exc.where)), parent)
    except Exception as exc:
        _send(out, ("error", f"{exc.__class__.__name__}: {exc}"), parent)


class _ProcessSource:
    """Big files: read and validate in a second process, so parsing runs on the other core
    while this one encodes the COPY and PostgreSQL merges. The queue holds two chunks, which
    bounds memory and makes the reader wait for the database."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        crs: str,
        scope: str | None,
        chunk_rows: int,
        watch: ImportWatch | None = None,
        seen: Seen = None,
        label: str | None = None,
    ):
        self.watch = watch
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding a loop & pool
        self.queue: Any = ctx.Queue(maxsize=2)
        self.proc = ctx.Process(
            target=_child,
            args=(path, key, crs, scope, chunk_rows, self.queue, os.getpid(), seen, label),
            daemon=True,
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
                if self.watch is not None:
                    # The import waits on a live reader, which is working (it blocks only on a
                    # full queue, and this side is emptying it): progress for the heartbeat,
                    # e.g. while a big workbook is opened before its first chunk.
                    self.watch.step()

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
        # At once, not only from inside the child: a spawned interpreter's start (importing
        # the server's modules) is a second of CPU that the registry's readers felt.
        with contextlib.suppress(OSError):
            assert self.proc.pid is not None
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, IMPORT_NICENESS)
        kind, value = await self._message()
        assert kind == "open", kind
        self.warnings = value

    async def next(self) -> ValidatedChunk | None:
        kind, value = await self._message()
        return value if kind == "item" else None

    def close(self) -> None:
        if self.proc.pid is not None:
            if self.proc.is_alive():
                self.proc.terminate()
            self.proc.join(timeout=5)
        self.queue.close()
        self.queue.cancel_join_thread()


class _LedgerSource:
    """The ledger through a thread or a process (by size), or — when the import found lines
    an earlier import merged unchanged (`skip`) — a copy of it with those lines blank, so the
    reader and validator see only the rest, at their own row numbers."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        crs: str,
        scope: str | None,
        chunk_rows: int,
        reader: Literal["auto", "thread", "process"],
        watch: ImportWatch,
        digests: LineDigests | None,
        label: str,
    ) -> None:
        self.label = label  # the user's name of the file, for messages
        self.path, self.key, self.crs, self.scope = path, key, crs, scope
        self.chunk_rows, self.reader, self.watch, self.digests = chunk_rows, reader, watch, digests
        self.warnings: list[str] = []
        self._inner: _ProcessSource | _ThreadSource | None = None
        self._copy: Path | None = None
        self._seen: dict[str, int] | None = None
        self._nothing_left = False
        self._header_only: ValidatedChunk | None = None

    async def skip(self, unchanged: Unchanged) -> bool:
        if self.digests is None:
            return False
        digests = self.digests
        lines = unchanged.lines
        if len(lines) == digests.rows:
            self._nothing_left = True  # every non-blank line: nothing to read, or to copy
            return True
        try:
            fd, name = tempfile.mkstemp(prefix=".import-", suffix=".csv", dir=self.path.parent)
        except OSError:
            fd, name = tempfile.mkstemp(prefix="camreg-import-", suffix=".csv")
        os.close(fd)
        copy = Path(name)
        self._copy = copy
        left = await asyncio.to_thread(write_remaining, self.path, copy, digests, lines)
        # The copy must read as the file does: the encoding is detected from the first
        # non-ASCII text, which may now be another line's.
        if left and await asyncio.to_thread(_encoding, copy) != digests.encoding:
            return False
        rows, ids = await unchanged.gb_ids()
        self._seen = dict(zip(ids, rows, strict=True))
        self._nothing_left = not left
        return True

    async def start(self) -> None:
        if self._nothing_left:
            self.warnings, self._header_only = await asyncio.to_thread(
                _header_only, self.path, self.key, self.crs, self.scope
            )
            return
        path = self.path if self._seen is None else self._copy
        assert path is not None
        reader = self.reader
        if reader == "auto":
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            reader = "process" if size >= PROCESS_MIN_BYTES else "thread"
        if reader == "process":
            rows = min(self.chunk_rows, PROCESS_CHUNK_ROWS)
            self._inner = _ProcessSource(
                path, self.key, self.crs, self.scope, rows, self.watch, self._seen, self.label
            )
        else:
            self._inner = _ThreadSource(
                path, self.key, self.crs, self.scope, self.chunk_rows, self._seen, self.label
            )
        await self._inner.start()
        self.warnings = self._inner.warnings

    async def next(self) -> ValidatedChunk | None:
        if self._inner is None:
            chunk, self._header_only = self._header_only, None
            return chunk
        return await self._inner.next()

    def close(self) -> None:
        try:
            if self._inner is not None:
                self._inner.close()
        finally:
            if self._copy is not None:
                self._copy.unlink(missing_ok=True)


def _encoding(path: Path) -> str | None:
    with open_ledger(path) as ledger:
        return ledger.encoding


def _header_only(
    path: Path, key: bytes, crs: str, scope: str | None
) -> tuple[list[str], ValidatedChunk]:
    """The header's warnings, and a chunk of no rows that carries the file's columns."""
    with open_ledger(path) as ledger:
        columns: dict[str, list[str | None]] = {f: [] for f in ledger.fields}
        empty = ChunkValidator(CredentialBox(key), crs, scope)(
            columns, np.empty(0, dtype=np.int64), [], 1.0
        )
        return _warnings(ledger), empty


def _digests(path: Path, crs: str, scope: str | None) -> LineDigests | None:
    """The digests of a CSV ledger's lines (None for other files, and for a file the reader
    will refuse: it then says why)."""
    if not is_csv(path):
        return None
    try:
        with open_ledger(path) as ledger:
            return line_digests(ledger, crs=crs, scope=scope)
    except (LedgerFormatError, OSError, UnicodeDecodeError):
        return None


async def _digests_aside(path: Path, crs: str, scope: str | None) -> LineDigests | None:
    """`_digests` of a big file in a process of its own: ~2 µs of Python a line, in a thread
    here, would hold this server's GIL against its requests for seconds."""
    size = await asyncio.to_thread(lambda: path.stat().st_size)
    if size < PROCESS_MIN_BYTES:
        return await asyncio.to_thread(_digests, path, crs, scope)
    pool = concurrent.futures.ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, _digests, path, crs, scope)
    finally:
        pool.shutdown(wait=False)


PROCESS_MIN_BYTES = 16 * 1024 * 1024  # below this a process costs more to start than it saves
# Unpickling a chunk from the reader holds the server's GIL for the whole call (C code): 50,000
# rows stalled every request for ~0.13 s, 5,000 rows ~13 ms, 1,000 rows 1.4 ms. With this at
# 1,000 and COPY rows encoded 200 at a time (`store.bulk._YIELD_ROWS`; both changed together),
# the p99 of reads during an import fell from 42 to 22 ms (bench/bench_import_reads.py); the
# validation stays vectorised, and the import took no longer.
PROCESS_CHUNK_ROWS = 1_000


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
    watch: ImportWatch | None = None,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    skip_unchanged: bool = True,
) -> ImportReport:
    """Import one ledger file through the registry's pipeline; `reader` forces where parsing
    runs (default: by file size). Lines an earlier import merged into cameras nobody wrote
    since are counted unchanged without being read again (`skip_unchanged`, see
    `ingest.ledger.digest`)."""
    path = Path(path)
    watch = watch or ImportWatch()
    digests = await _digests_aside(path, crs, actor.scope) if skip_unchanged else None
    watch.step()
    source = _LedgerSource(
        path, box.key, crs, actor.scope, chunk_rows, reader, watch, digests, filename or path.name
    )
    row_digests = None if digests is None else RowDigests(digests.blob, digests.lines.tolist())
    try:
        return await import_rows(
            pool,
            actor,
            source,
            filename or path.name,
            dry_run=dry_run,
            partial=partial,
            import_id=import_id,
            on_progress=on_progress,
            watch=watch,
            statement_timeout_s=statement_timeout_s,
            digests=row_digests,
        )
    finally:
        await asyncio.to_thread(source.close)
