"""Shared benchmark plumbing: a database to measure in, and a fresh schema per run."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from camera_registry.store.embedded import EmbeddedPostgres

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


def drive(urls: list[str], headers: dict[str, str], concurrency: int = 1) -> dict[str, Any]:
    """GET every URL from a separate client process (bench/load_client.py), so the server
    under test has the event loop to itself; every answer must be 200."""
    job = json.dumps({"urls": urls, "headers": headers, "concurrency": concurrency})
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load_client.py")],
        input=job,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    assert not bad, f"non-200 answers: {bad}"
    return result
