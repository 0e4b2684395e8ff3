"""Ledger import at Shanxi scale, beside a raw COPY of the same file in the same run.

    python bench/bench_import.py [--rows 2400000] [--repeat 3]

Reports rows/s end to end (read, validate, CRS conversion, stage, merge, commit) for a
first import into an empty registry and for a re-import of the same file (all unchanged),
the anchor's rows/s (server-side `COPY … FROM STDIN (FORMAT csv)` of the same file into a
bare table with no indexes), the ratio, and the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.common import OUT, ROOT, database_url, fresh_schema, median
from camera_registry.actor import Actor, Role
from camera_registry.crypto import CredentialBox
from camera_registry.fields import BY_NAME
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


async def anchor_copy(url: str, path: Path) -> float:
    async with fresh_schema(url, "copy") as schema:
        import asyncpg

        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            header = path.open(encoding="utf-8-sig").readline().rstrip("\n").split(",")
            cols = ", ".join(f'"c{i}" text' for i in range(len(header)))
            await conn.execute(f"CREATE TABLE bare ({cols})")
            start = time.perf_counter()
            with path.open("rb") as fh:
                fh.read(3)  # BOM
                await conn.copy_to_table("bare", source=fh, format="csv", header=True)
            return time.perf_counter() - start
        finally:
            await conn.close()


async def ours(url: str, path: Path) -> tuple[float, float, int, int]:
    async with fresh_schema(url, "import") as schema:
        pool = await create_pool(url, schema=schema, min_size=1, max_size=4, command_timeout=3600)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            box = CredentialBox(base64.b64decode(base64.b64encode(b"b" * 32)))
            actor = Actor("bench", Role.ADMIN)
            start = time.perf_counter()
            first = await import_ledger(pool, box, actor, path)
            t_first = time.perf_counter() - start
            assert first.committed and not first.rows_bad, first.summary()
            start = time.perf_counter()
            again = await import_ledger(pool, box, actor, path)
            t_again = time.perf_counter() - start
            assert again.unchanged == first.rows_total, again.summary()
            return t_first, t_again, first.inserted, first.rows_total
        finally:
            await pool.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = ledger_file(args.rows)
    assert BY_NAME  # the ledger's headers are the registry's own field labels
    firsts, agains, anchors = [], [], []
    with database_url() as url:
        for _ in range(args.repeat):
            t_first, t_again, _, total = await ours(url, path)
            anchors.append(await anchor_copy(url, path))
            firsts.append(t_first)
            agains.append(t_again)
            print(
                f"run: import {t_first:.1f} s, re-import {t_again:.1f} s, "
                f"raw COPY {anchors[-1]:.1f} s",
                flush=True,
            )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = total
    tf, ta, tc = median(firsts), median(agains), median(anchors)
    print(f"\nrows: {n:,} ({path.stat().st_size / 1e6:.0f} MB CSV), medians of {args.repeat} runs")
    print(f"import (empty registry): {tf:.1f} s = {n / tf:,.0f} rows/s")
    print(f"re-import (all unchanged): {ta:.1f} s = {n / ta:,.0f} rows/s")
    print(f"anchor raw COPY of the file: {tc:.1f} s = {n / tc:,.0f} rows/s")
    print(f"ratio import/COPY (throughput): {tc / tf:.2f}; re-import/COPY: {tc / ta:.2f}")
    print(f"peak RSS of the importing process: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
