"""Job owners and heartbeats: a job whose process died is closed, never left running.

Coverage runs, discovery scans and import jobs run as tasks inside one process, but their rows
live in the shared database (DESIGN.md §1: stateless processes, many of them). A process that
is killed hard (SIGKILL, power loss, OOM) cannot record that its jobs ended, so each job row
names its ``owner`` and carries ``heartbeat_at``, refreshed by the owning process while the job
lives (:func:`heartbeat`, one tiny UPDATE every few seconds). Any process closes the jobs whose
heartbeat is older than the limit (:func:`reap`: one set-based UPDATE per table, on partial
indexes of the unfinished rows) at startup, periodically, and when a request depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Final, Literal, Protocol

import asyncpg

from camera_registry.store.db import connect_beside

log = logging.getLogger(__name__)

# This process: host, pid and a nonce (a pid is reused after a restart; the nonce is not).
OWNER: Final = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
ORPHANED: Final = "the server running it stopped; start it again"

Table = Literal["coverage_runs", "discovery_scans", "import_jobs"]
TABLES: Final[tuple[Table, ...]] = ("coverage_runs", "discovery_scans", "import_jobs")

# What "failed" means per table: its message columns differ, and a scan drops its sealed
# credentials when it ends, however it ends.
_CLOSE: Final[dict[Table, str]] = {
    "coverage_runs": "error = $2, message = $2",
    "discovery_scans": "error = $2, credentials = NULL",
    "import_jobs": "message = $2",
}
_LIVE: Final = "status IN ('queued', 'running')"


class Progress(Protocol):
    """A job that can prove it moves (camera_registry.importer.ImportWatch)."""

    @property
    def backend_pid(self) -> int | None: ...

    def idle_for(self) -> float: ...


def beat_interval(stale_after_s: float) -> float:
    """Six beats per limit: a job survives five lost or late beats before it is declared dead."""
    return max(stale_after_s / 6.0, 0.05)


async def beat(
    conn: asyncpg.Pool | asyncpg.Connection,
    table: Table,
    job_id: str,
    *,
    busy_backend: int | None = None,
) -> bool:
    """Refresh one job's heartbeat (and claim it for this process); True if refreshed.

    With `busy_backend`, only while that database session is running a statement: the proof
    that a job which has not stepped for a while is still at work inside PostgreSQL (a long
    merge), and not waiting on a connection that died with a restarted server."""
    proof = ""
    args: list[object] = [job_id, OWNER]
    if busy_backend is not None:
        proof = " AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $3 AND state = 'active')"
        args.append(busy_backend)
    status = await conn.execute(
        f"""UPDATE {table} SET heartbeat_at = now(), owner = $2
            WHERE id = $1::uuid AND {_LIVE}{proof}""",
        *args,
        timeout=10,
    )
    return status.rsplit(" ", 1)[-1] != "0"


class _OwnConnection:
    """The heartbeat's connection, outside the pool: when waiting requests fill the pool, the
    beat still gets through (issue 13: starved beats got a live import marked failed)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Pool | asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = None
            self.conn = await connect_beside(self.pool)
        return self.conn if self.conn is not None else self.pool

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            try:
                await asyncio.wait_for(self.conn.close(), 5)
            except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
                self.conn.terminate()
        self.conn = None


@contextlib.asynccontextmanager
async def heartbeat(
    pool: asyncpg.Pool,
    table: Table,
    job_id: str,
    stale_after_s: float,
    *,
    progress: Progress | None = None,
    on_stall: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Keep a job's heartbeat fresh for as long as the block runs (queued or working).

    A side task, not a hook in the job's own loop: a coverage county can compute for minutes
    in a worker process without reaching a progress update, and a queued job has no loop yet.
    A beat that fails (database briefly gone) is logged and retried at the next interval.

    With `progress`, a beat proves the job's own progress, not just that the process lives:
    the job stepped within the limit, or its database session is running a statement. When
    neither has held for a whole limit the job is stuck (its connection died under it, say),
    its row goes stale for the reaper, and `on_stall` is called once, so the job can be
    cancelled and its slot freed.
    """
    every = beat_interval(stale_after_s)
    own = _OwnConnection(pool)

    async def loop() -> None:
        proved = time.monotonic()
        stalled = False
        while True:
            try:
                conn = await own.get()
                if progress is None or progress.idle_for() < stale_after_s:
                    ok = await beat(conn, table, job_id)
                elif progress.backend_pid is not None:
                    ok = await beat(conn, table, job_id, busy_backend=progress.backend_pid)
                else:
                    ok = False
                if ok:
                    proved = time.monotonic()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("heartbeat of %s %s failed: %s", table, job_id, exc)
                await own.close()
                if progress is None:
                    proved = time.monotonic()  # only the database is in doubt, not the job
            if (
                progress is not None
                and not stalled
                and time.monotonic() - proved > stale_after_s
                and progress.idle_for() > stale_after_s
            ):
                stalled = True
                log.warning("%s %s made no progress for %.0f s", table, job_id, stale_after_s)
                if on_stall is not None:
                    on_stall()
            await asyncio.sleep(every)

    task = asyncio.create_task(loop(), name=f"heartbeat-{table}-{job_id}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await own.close()


async def reap(
    conn: asyncpg.Pool | asyncpg.Connection,
    stale_after_s: float,
    tables: tuple[Table, ...] = TABLES,
) -> dict[str, int]:
    """Mark failed every unfinished job whose heartbeat is older than the limit.

    Set-based and idempotent: many processes may run it at once; a row is closed once. Returns
    how many jobs were closed per table (for the log).
    """
    closed: dict[str, int] = {}
    for table in tables:
        status = await conn.execute(
            f"""UPDATE {table} SET status = 'failed', finished_at = now(), {_CLOSE[table]}
                WHERE {_LIVE}
                  AND coalesce(heartbeat_at, created_at) < now() - make_interval(secs => $1)""",
            stale_after_s,
            ORPHANED,
        )
        n = int(status.rsplit(" ", 1)[-1])
        if n:
            log.warning("%d %s orphaned by a stopped server marked failed", n, table)
        closed[table] = n
    return closed


async def reap_forever(pool: asyncpg.Pool, stale_after_s: float) -> None:
    """Reap at startup and then every quarter limit, until cancelled (a server's side task)."""
    while True:
        try:
            await reap(pool, stale_after_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("reaping orphaned jobs failed: %s", exc)
        await asyncio.sleep(max(stale_after_s / 4.0, 0.05))
