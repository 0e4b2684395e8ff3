"""Shared benchmark plumbing: a database to measure in, and a fresh schema per run."""

from __future__ import annotations

import contextlib
import os
import statistics
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import asyncpg

from camera_registry.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """CAMREG_BENCH_DATABASE_URL, else CAMREG_TEST_DATABASE_URL, else the embedded cluster."""
    url = os.environ.get("CAMREG_BENCH_DATABASE_URL") or os.environ.get("CAMREG_TEST_DATABASE_URL")
    if url:
        yield url
        return
    pg = EmbeddedPostgres(ROOT / ".camreg" / "bench-pg")
    try:
        yield pg.start()
    finally:
        pg.stop()


@contextlib.asynccontextmanager
async def fresh_schema(url: str, prefix: str, keep: bool = False) -> AsyncIterator[str]:
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        if not keep:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
