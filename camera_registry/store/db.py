"""Connections and migrations.

One pool per process, created from the settings. The schema comes from `search_path`, so the
same migrations serve the product (schema `public`) and tests (a fresh schema per module).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from importlib import resources
from typing import Any, Generic, TypeVar, cast

import asyncpg
import orjson

from camera_registry.errors import DatabaseUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_MIGRATION_LOCK = 0x63616D7265670001  # "camreg" + 1: serialises concurrent `migrate` runs

# How each pool of ours connects, so a job can open a connection of its own that a pool full
# of waiting requests cannot starve (its heartbeat, issue 13).
# (asyncpg pools take no weak references: entries of closed pools are dropped on the next create)
# (and where to, for a job run in a process of its own: the DSN and schema)
_CONNECT: dict[
    int, tuple[asyncpg.Pool, Callable[[], Awaitable[asyncpg.Connection]], str, str | None]
] = {}


# What a database restart, failover or network cut looks like from a client: the session is
# cut, new connections are refused while it shuts down or starts, or the socket is gone.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.InternalClientError,  # a pooled connection left mid-operation when its session died
)


async def while_connection_lost(
    what: str, call: Callable[[], Awaitable[T]], *, within_s: float = 30.0
) -> T:
    """`call()`, retried with backoff while the database is unreachable, for at most `within_s`
    seconds; then the last error propagates. Only for idempotent calls (a job's progress, its
    final state): a retried write must not count twice."""
    delay = 0.2
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            return await call()
        except CONNECTION_LOST as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("%s: the database is unreachable (%s); retrying", what, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


_ORJSON = (
    orjson.OPT_NON_STR_KEYS
    | orjson.OPT_SERIALIZE_NUMPY
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _fallback(value: Any) -> Any:
    return float(value) if isinstance(value, float) else str(value)


def json_text(value: Any) -> str:
    """JSON for `json`/`jsonb` parameters, as `json.dumps(value, default=str)` wrote it.

    orjson because a GB/T 28181 catalog batch or an import encodes thousands of rows here, and
    `json.dumps` was 12 % of the catalog intake's CPU (profile in bench/RESULTS.md, issue 15).
    Datetimes and dataclasses still go through `str` and int keys become strings, as before;
    numpy scalars and float subclasses are numbers."""
    return orjson.dumps(value, default=_fallback, option=_ORJSON).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json_text, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json_text, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is (asyncpg has already rolled back any open
    transaction and dropped its listeners).

    asyncpg's default reset sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    at every release: a round trip per pooled query, a third of a short read's time. Nothing
    here leaves session state behind: advisory locks are transaction-level, cursors live in
    transactions, settings come from the connection's startup parameters, and the two LISTEN
    users UNLISTEN when they stop.
    """


async def create_pool(
    dsn: str,
    *,
    schema: str | None = None,
    min_size: int = 2,
    max_size: int = 10,
    command_timeout: float = 60.0,
) -> asyncpg.Pool:
    settings = {"application_name": "camreg", "timezone": "UTC"}
    if schema is not None:
        settings["search_path"] = schema
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            init=_init_connection,
            reset=_keep_session,
            server_settings=settings,
            timeout=30,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL ({exc.__class__.__name__}: {exc}); check "
            "CAMREG_DATABASE_URL, or unset it to use the embedded database"
        ) from exc
    assert pool is not None

    async def connect() -> asyncpg.Connection:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn, timeout=10, command_timeout=10, server_settings=settings
        )
        return conn

    for key, (old, *_) in list(_CONNECT.items()):
        if old.is_closing():
            del _CONNECT[key]
    _CONNECT[id(pool)] = (pool, connect, dsn, schema)
    return pool


async def connect_beside(pool: asyncpg.Pool) -> asyncpg.Connection | None:
    """A new connection with the pool's settings but outside it (None for a pool made
    elsewhere): for small periodic writes that must not queue behind the pool's users."""
    entry = _CONNECT.get(id(pool))
    return await entry[1]() if entry is not None and entry[0] is pool else None


def connect_args(pool: asyncpg.Pool) -> tuple[str, str | None] | None:
    """(DSN, schema) a pool of ours connects with, for a process of its own to do the same;
    None for a pool made elsewhere."""
    entry = _CONNECT.get(id(pool))
    return (entry[2], entry[3]) if entry is not None and entry[0] is pool else None


def _migrations() -> list[tuple[int, str, str]]:
    out = []
    for entry in resources.files("camera_registry.store.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations in one transaction (all or none); returns the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done: dict[int, Any] = {
            r["version"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")
        }
        for version, name, sql in _migrations():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version]["checksum"] != checksum:
                    log.warning("migration %s changed after it was applied; not re-run", name)
                continue
            log.info("applying migration %s", name)
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                version,
                name,
                checksum,
            )
            applied.append(name)
    return applied


def schema_channel(base: str, schema: str) -> str:
    """The NOTIFY channel `base` for one deployment's schema.

    NOTIFY is database-wide, so two deployments (or test modules) sharing a database in
    different schemas must not hear each other. Channel names are limited to 63 bytes: a long
    schema name is replaced by its digest.
    """
    if schema == "public":
        return base
    name = f"{base}.{schema}"
    if len(name.encode()) > 63:
        name = f"{base}.{hashlib.sha256(schema.encode()).hexdigest()[:24]}"
    return name


def row_dict(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values (UUIDs as strings, timestamps in ISO 8601): what the job and
    inbox APIs return, so every table answers in the same shape."""
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, uuid.UUID):
            v = str(v)
        elif isinstance(v, dt.datetime):
            v = v.isoformat()
        out[k] = v
    return out


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """Concurrent lookups by key merged into one query (one round trip for many requests).

    A query starts at once when fewer than `concurrency` are running, so a lone request
    waits for exactly one round trip; keys asked for while they run go together in the next
    one. Each query is issued after the requests it answers arrived, so nothing is served
    stale. A second query in flight keeps both cores busy where one statement at a time left
    PostgreSQL idle while the answers of the last one were sent.
    """

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
        *,
        max_batch: int = 512,
        max_pending: int = 8192,
        concurrency: int = 1,
    ) -> None:
        self._fetch = fetch
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._room = asyncio.Semaphore(max_pending)
        self._pending: list[tuple[K, asyncio.Future[V | None]]] = []
        self._runners: set[asyncio.Task[None]] = set()
        self.runs = 0  # queries made and keys asked, for tests and /metrics
        self.keys = 0

    async def get(self, key: K) -> V | None:
        async with self._room:
            found: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
            self._pending.append((key, found))
            if len(self._runners) < self.concurrency:
                self._runners.add(asyncio.create_task(self._run(), name="coalesced-lookup"))
            # shielded: one caller giving up must not cancel the query the others wait on
            return await asyncio.shield(found)

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                keys = list(dict.fromkeys(k for k, _ in batch))
                try:
                    rows = await self._fetch(keys)
                except Exception as exc:  # every waiter of this batch learns it failed
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.runs += 1
                self.keys += len(keys)
                for key, fut in batch:
                    if not fut.done():
                        fut.set_result(rows.get(key))
        finally:
            # at once, not in a done callback: a key added before that callback ran would
            # find no room for a runner and wait for nobody
            self._runners.discard(cast("asyncio.Task[None]", asyncio.current_task()))


async def lower_backend_priority(conn: asyncpg.Connection, niceness: int) -> bool:
    """Run this connection's PostgreSQL backend at a lower CPU priority, when the database
    runs on this host and we may; True if it now does.

    Why: a bulk job's statements (a ledger import's merge into `cameras`) keep one backend on
    a core for seconds at a time. On a 2-core machine that backend, the server and the
    readers' backends take turns on the CPU, and the readers wait whole scheduler slices:
    p99 of `GET /cameras/{id}` rose from 3.5 to 49 ms during an import of 300,000 cameras
    (bench/bench_import_reads.py), while the median moved little. PostgreSQL has no priority
    of its own; the kernel's does the job. The process is checked to be this very session's
    backend — its title names the client port the server saw (or `[local]` for a Unix
    socket) — so a database in a container or on another host, whose pids mean nothing
    here, is left alone. Raising niceness needs no privilege for one's own processes (the
    embedded cluster); another user's backend needs root or CAP_SYS_NICE, else the job just
    runs at normal priority. The connection must not go back to a pool afterwards (the
    caller closes it): an unprivileged user cannot lower niceness again.
    """
    pid = conn.get_server_pid()
    port = await conn.fetchval("SELECT inet_client_port()")
    if not _is_backend_title(_process_title(pid), port):
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, pid, max(os.getpriority(os.PRIO_PROCESS, pid), niceness))
    except OSError as exc:
        log.info("bulk job runs at normal database priority: %s", exc)
        return False
    return True


def _process_title(pid: int) -> str:
    """A local process's command line as `ps` shows it ("" if there is none); a read of
    procfs, which never blocks."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _is_backend_title(title: str, client_port: int | None) -> bool:
    """Whether a process title is that of a PostgreSQL backend serving the client at
    `client_port` as the server sees it (None: a Unix-socket client, shown as `[local]`)."""
    mark = "[local]" if client_port is None else f"({client_port})"
    return title.startswith("postgres:") and mark in title
