"""Ledger import at Shanxi scale, beside a raw COPY of the same file in the same run.

    python bench/bench_import.py [--rows 2400000] [--repeat 3]

Reports rows/s end to end (read, validate, CRS conversion, stage, merge, commit) for a
first import into an empty registry and for a re-import of the same file (all unchanged),
the anchor's rows/s (server-side `COPY … FROM STDIN (FORMAT csv)` of the same file into a
bare table with no indexes), the ratio, and the peak RSS of this process.

A second anchor, the write floor: the same cameras, already typed (a binary COPY of what the
first import stored), COPYed straight into the empty `cameras` of a freshly migrated schema,
with its indexes and triggers — what the engine itself does into that table, with no
reading, validating or merging. CPU seconds per process (PostgreSQL backends from /proc, this
process and its reader children from getrusage) come with every figure: on a shared machine
they are steadier than wall-clock.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.common import OUT, ROOT, database_url, fresh_schema, median
from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.fields import BY_NAME, DB_COLUMNS
from camera_registry.store.db import create_pool, migrate
from ingest.ledger.source import import_ledger


def ledger_file(rows: int) -> Path:
    path = OUT / f"ledger-{rows}.csv"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gen_ledger.py"), str(rows), str(path)],
            check=True,
        )
    return path


async def ensure_cameras(url: str, rows: int, schema: str, key: str) -> float | None:
    """Import the `rows`-camera ledger into `schema` once, for the read benchmarks that reuse
    it across runs; the import's seconds, or None when the schema already held the cameras."""
    conn = await asyncpg.connect(url)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    await conn.close()
    pool = await create_pool(url, schema=schema, max_size=4, command_timeout=7200)
    try:
        async with pool.acquire() as c:
            await migrate(c)
        if await pool.fetchval("SELECT count(*) FROM cameras") >= rows:
            return None
        print(f"loading {rows:,} cameras into {schema} (once)…", flush=True)
        box = CredentialBox(base64.b64decode(key))
        t = time.perf_counter()
        report = await import_ledger(pool, box, Actor("bench", Role.ADMIN), ledger_file(rows))
        assert report.committed, report.summary()
        await pool.execute("ANALYZE cameras")
        return time.perf_counter() - t
    finally:
        await pool.close()


_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) PostgreSQL backends have used so far (same host)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def own_cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its waited-for children (the reader processes)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@dataclass
class Cpu:
    pg: float = 0.0
    server: float = 0.0
    reader: float = 0.0

    @property
    def total(self) -> float:
        return self.pg + self.server + self.reader


@dataclass
class Run:
    first: float = 0.0
    again: float = 0.0
    copy: float = 0.0
    floor: float = 0.0
    cpu: dict[str, Cpu] = field(default_factory=dict)


class CpuWatch:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.pg0 = backend_cpu(pids)
        self.me0, self.kids0 = own_cpu()

    def done(self) -> Cpu:
        me, kids = own_cpu()
        return Cpu(backend_cpu(self.pids) - self.pg0, me - self.me0, kids - self.kids0)


def _pool_pids(pool: asyncpg.Pool) -> list[int]:
    return [h._con.get_server_pid() for h in pool._holders if h._con is not None]


_FLOOR_COLUMNS = [c for c in DB_COLUMNS if c not in ("stream_main", "stream_sub", "snapshot")]


async def anchor_copy(url: str, path: Path) -> float:
    async with fresh_schema(url, "copy") as schema:
        import asyncpg

        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            header = path.open(encoding="utf-8-sig").readline().rstrip("\n").split(",")
            cols = ", ".join(f'"c{i}" text' for i in range(len(header)))
            await conn.execute(f"CREATE TABLE bare ({cols})")
            watch = CpuWatch([conn.get_server_pid()])
            start = time.perf_counter()
            with path.open("rb") as fh:
                fh.read(3)  # BOM
                await conn.copy_to_table("bare", source=fh, format="csv", header=True)
            took = time.perf_counter() - start
            ANCHOR_CPU.append(watch.done())
            return took
        finally:
            await conn.close()


ANCHOR_CPU: list[Cpu] = []


async def anchor_floor(url: str, typed: Path) -> tuple[float, Cpu]:
    """The stored cameras, typed, COPYed into the `cameras` of a fresh registry schema."""
    async with fresh_schema(url, "floor") as schema:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await migrate(conn)
            cols = [*_FLOOR_COLUMNS, "streams"]
            watch = CpuWatch([conn.get_server_pid()])
            start = time.perf_counter()
            await conn.copy_to_table("cameras", source=typed, columns=cols, format="binary")
            took = time.perf_counter() - start
            return took, watch.done()
        finally:
            await conn.close()


async def ours(url: str, path: Path, run: Run, skip: bool = True) -> int:
    async with fresh_schema(url, "import") as schema:
        pool = await create_pool(url, schema=schema, min_size=4, max_size=4, command_timeout=3600)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            pids = _pool_pids(pool)
            box = CredentialBox(base64.b64decode(base64.b64encode(b"b" * 32)))
            actor = Actor("bench", Role.ADMIN)
            watch = CpuWatch(pids)
            start = time.perf_counter()
            first = await import_ledger(pool, box, actor, path, skip_unchanged=skip)
            run.first = time.perf_counter() - start
            run.cpu["first"] = watch.done()
            assert first.committed and not first.rows_bad, first.summary()
            watch = CpuWatch(pids)
            start = time.perf_counter()
            again = await import_ledger(pool, box, actor, path, skip_unchanged=skip)
            run.again = time.perf_counter() - start
            run.cpu["again"] = watch.done()
            assert again.unchanged == first.rows_total, again.summary()
            typed = OUT / "typed-cameras.bin"
            cols = ", ".join([*_FLOOR_COLUMNS, "streams"])
            async with pool.acquire() as conn:
                await conn.copy_from_query(
                    f"SELECT {cols} FROM cameras ORDER BY floor(lon / 0.1), floor(lat / 0.1)",
                    output=typed,
                    format="binary",
                )
        finally:
            await pool.close()
    try:
        run.floor, run.cpu["floor"] = await anchor_floor(url, typed)
    finally:
        typed.unlink(missing_ok=True)
    return int(first.rows_total)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--no-skip",
        action="store_true",
        help="read every line of the re-import (no line digests kept or used)",
    )
    args = ap.parse_args()
    path = ledger_file(args.rows)
    assert BY_NAME  # the ledger's headers are the registry's own field labels
    runs: list[Run] = []
    with database_url() as url:
        for _ in range(args.repeat):
            run = Run()
            total = await ours(url, path, run, skip=not args.no_skip)
            run.copy = await anchor_copy(url, path)
            run.cpu["copy"] = ANCHOR_CPU[-1]
            runs.append(run)
            print(
                f"run (load {os.getloadavg()[0]:.1f}): import {run.first:.1f} s, "
                f"re-import {run.again:.1f} s, raw COPY {run.copy:.1f} s, "
                f"typed COPY into cameras {run.floor:.1f} s",
                flush=True,
            )
            for name, cpu in run.cpu.items():
                print(
                    f"  CPU s {name:6}: PostgreSQL {cpu.pg:6.2f}, server {cpu.server:6.2f}, "
                    f"reader {cpu.reader:6.2f}, total {cpu.total:6.2f} "
                    f"= {cpu.total / total * 1e6:5.1f} µs/row",
                    flush=True,
                )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = total
    tf, ta = median([r.first for r in runs]), median([r.again for r in runs])
    tc, tw = median([r.copy for r in runs]), median([r.floor for r in runs])
    print(f"\nrows: {n:,} ({path.stat().st_size / 1e6:.0f} MB CSV), medians of {args.repeat} runs")
    print(f"import (empty registry): {tf:.1f} s = {n / tf:,.0f} rows/s")
    print(f"re-import (all unchanged): {ta:.1f} s = {n / ta:,.0f} rows/s")
    print(f"anchor raw COPY of the file: {tc:.1f} s = {n / tc:,.0f} rows/s")
    print(f"anchor typed COPY into cameras (write floor): {tw:.1f} s = {n / tw:,.0f} rows/s")
    print(f"ratio import/COPY (throughput): {tc / tf:.2f}; re-import/COPY: {tc / ta:.2f}")
    print(f"ratio import/write floor: {tw / tf:.2f}; write floor/COPY: {tc / tw:.2f}")
    for name in ("first", "again", "copy", "floor"):
        cpus = [r.cpu[name].total for r in runs]
        print(f"CPU s {name}: median {median(cpus):.2f} ({', '.join(f'{c:.2f}' for c in cpus)})")
    c0 = median([r.cpu["copy"].total for r in runs])
    print(
        f"CPU ratio import/COPY: {c0 / median([r.cpu['first'].total for r in runs]):.3f}; "
        f"re-import/COPY: {c0 / median([r.cpu['again'].total for r in runs]):.3f}"
    )
    print(f"peak RSS of the importing process: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
