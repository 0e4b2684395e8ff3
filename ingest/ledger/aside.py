"""A big ledger import in a process of its own, at the lowest CPU priority, for the server's
import jobs.

Why: inside the server, an import's own Python work (encoding COPY rows on the event loop,
~7 µs a row; unpickling the reader's chunks under the GIL, ~2.6 µs a row) landed on a loop the
registry's readers already kept ~90 % busy. During an import of 300,000 cameras the p99 of
`GET /cameras/{id}` at c=8 rose 5.2× (bench/bench_import_reads.py). The same import run as a
separate process at niceness 19 raised it 2.3–3×. Here the import is the same
`import_ledger`, with the same report and all-or-nothing transaction; the job's heartbeat,
progress, cancellation and failure paths stay with the server, which hears from this process
over a pipe.

The process dies with the server (`die_with_parent`), its reader process with it, and its
database session with it; PostgreSQL rolls the import back.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from camera_registry.actor import Actor
from camera_registry.crypto import CredentialBox
from camera_registry.importer import IMPORT_NICENESS, ImportReport, ImportWatch, Progress
from camera_registry.store.bulk import ImportConnectionLost
from camera_registry.store.db import connect_args, create_pool
from ingest.errors import IngestError
from ingest.ledger.source import die_with_parent, import_ledger

# How often the process tells the server it moves (the job's heartbeat asks how long since).
_STEP_EVERY_S = 0.5
_JOIN_S = 5.0


class _PipeWatch(ImportWatch):
    """The import's watch in this process: each step, at most every `_STEP_EVERY_S`, goes to
    the server with the import's database backend pid (the heartbeat asks PostgreSQL about
    it while a long merge statement runs)."""

    def __init__(self, out: Any) -> None:
        super().__init__()
        self.out = out
        self._sent = 0.0
        self._lock = threading.Lock()  # the reader's waiting thread steps too

    def step(self) -> None:
        super().step()
        if self.last - self._sent >= _STEP_EVERY_S:
            self._sent = self.last
            self.send(("step", self.backend_pid))

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.out.send(message)


@dataclass(frozen=True)
class _Job:
    """What the import process needs: where the database is, the key, who, what and how."""

    dsn: str
    schema: str | None
    key: bytes
    actor: Actor
    path: str
    options: dict[str, Any]


def _child(job: _Job, out: Any, parent: int) -> None:
    """Entry point of the import process: ("step", pid) and ("progress", fraction, rows)
    while it runs, then ("done", report), or the failure as `_portable` describes it."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops this process itself
    try:
        asyncio.run(_import(job, out))
    finally:
        out.close()


async def _import(job: _Job, out: Any) -> None:
    watch = _PipeWatch(out)

    def progress(fraction: float, rows: int) -> None:
        watch.send(("progress", fraction, rows))

    try:
        pool = await create_pool(job.dsn, schema=job.schema, min_size=1, max_size=2)
        try:
            report = await import_ledger(
                pool,
                CredentialBox(job.key),
                job.actor,
                job.path,
                on_progress=progress,
                watch=watch,
                **job.options,
            )
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), _JOIN_S)
    except Exception as exc:  # every failure goes to the server, as raised there
        watch.send(_portable(exc))
        return
    watch.send(("done", report))


def _portable(exc: Exception) -> tuple[Any, ...]:
    """("raise", the exception) when it survives pickling unchanged, else ("fail", kind, its
    class name, its words): the server's job runner tells the kinds apart, and its messages
    name the class."""
    try:
        copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, just made
        if type(copy) is type(exc) and str(copy) == str(exc):
            return ("raise", exc)
    except Exception:  # noqa: S110 - not portable: described below instead
        pass
    if isinstance(exc, ImportConnectionLost):
        kind = "connection_lost"
    elif isinstance(exc, TimeoutError):  # before OSError, its base class
        kind = "timeout"
    elif isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError | OSError):
        kind = "lost"
    else:
        kind = "other"
    return ("fail", kind, exc.__class__.__name__, str(exc))


def _relayed(kind: str, name: str, message: str) -> Exception:
    """The server's side of a failure `_portable` described: same kind, name and words."""
    if kind == "connection_lost":
        return ImportConnectionLost(message)
    base: type[Exception] = {"lost": ConnectionError, "timeout": TimeoutError}.get(
        kind, IngestError
    )
    return type(name, (base,), {})(message)


def _receive(conn: Any, proc: Any) -> tuple[Any, ...] | None:
    """The process's next message; None once it has ended without one."""
    while True:
        if conn.poll(1.0):
            try:
                msg: tuple[Any, ...] = conn.recv()
                return msg
            except (EOFError, OSError):
                return None
        if not proc.is_alive() and not conn.poll(0):
            return None


async def import_aside(
    pool: asyncpg.Pool,
    box: CredentialBox,
    actor: Actor,
    path: str | Path,
    *,
    watch: ImportWatch,
    on_progress: Progress | None = None,
    **options: Any,
) -> ImportReport:
    """`import_ledger` of `path` in a niced process of its own, on the database `pool`
    connects to; `watch` and `on_progress` hear from it as if it ran here. Cancelling this
    stops the process (its session ends and PostgreSQL rolls the import back)."""
    where = connect_args(pool)
    if where is None:
        raise IngestError("this pool was not made by create_pool: cannot import aside")
    dsn, schema = where
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding a loop & pool
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child,
        args=(_Job(dsn, schema, box.key, actor, str(path), options), sender, os.getpid()),
        # Not a daemon: a daemonic process may not start the reader process a big file gets.
        # Its end is ours to make (`_stop`), and it dies with the server (`die_with_parent`).
        daemon=False,
        name="camreg-import",
    )
    proc.start()
    sender.close()
    with contextlib.suppress(OSError):
        assert proc.pid is not None
        os.setpriority(os.PRIO_PROCESS, proc.pid, IMPORT_NICENESS)
    try:
        while True:
            msg = await asyncio.to_thread(_receive, receiver, proc)
            if msg is None:
                raise IngestError(
                    f"the import process ended without a result (exit code {proc.exitcode})"
                )
            kind = msg[0]
            if kind == "step":
                watch.backend_pid = msg[1]
                watch.step()
            elif kind == "progress":
                watch.step()
                if on_progress is not None:
                    res = on_progress(msg[1], msg[2])
                    if res is not None:
                        await res
            elif kind == "done":
                report: ImportReport = msg[1]
                return report
            elif kind == "raise":
                raise msg[1]
            elif kind == "fail":
                raise _relayed(msg[1], msg[2], msg[3])
    finally:
        await asyncio.shield(asyncio.to_thread(_stop, proc, receiver))


def _stop(proc: Any, receiver: Any) -> None:
    deadline = time.monotonic() + _JOIN_S
    proc.join(timeout=0.5)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=max(0.1, deadline - time.monotonic()))
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=_JOIN_S)
    receiver.close()
