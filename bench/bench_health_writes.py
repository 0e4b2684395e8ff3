"""Province write load: probe results of 2.4 million cameras applied through the real health store.

    python bench/bench_health_writes.py [--rows 2400000] [--per-run 100000] [--repeat 3]

Shanxi's registry (the schema `bench_registry`, shared with bench_api.py) probed at the
default intervals (level 1 every 300 s, others every 900 s) needs about 3,500 stored probe
results a second. Here `--workers` concurrent workers (each its own lease owner, as
`camreg worker` processes are) lease due cameras in batches (`--batch`, default the worker's
200) with `health.store.lease`, feed each a probe outcome through the real status machine
(`health.status.step`: 97 % ok, 2 % fail, 1 % fault) and store the batch with
`health.store.record_many`, until `--per-run` results are stored. The anchor, in the same
run: a bare `UPDATE camera_health … FROM unnest(…)` of the same number of rows with state and
probe JSON of the same size, batches of the same size, as many concurrent connections, no
leasing.

Reported per side: sustained rows/s, the CPU seconds of the PostgreSQL backends serving it
(from /proc; the server is on this machine) per 1,000 rows and as cores, WAL bytes/s (from
`pg_current_wal_lsn()`, server-wide: other load on the server is included) and this process's
own CPU (the worker side). Median of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_api import KEY, SCHEMA
from bench.bench_import import ensure_cameras
from bench.common import database_url
from camera_registry.crypto import CredentialBox
from camera_registry.store.db import create_pool
from health import store
from health.status import Outcome, StatusPolicy, step
from health.worker import WorkerConfig, next_interval

PROVINCE_NEED = 360_025 / 300 + (2_400_000 - 360_025) / 900  # rows/s at the default intervals
TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def pool_pids(pool: asyncpg.Pool, n: int) -> list[int]:
    conns = [await pool.acquire() for _ in range(n)]
    try:
        return [int(await c.fetchval("SELECT pg_backend_pid()")) for c in conns]
    finally:
        for c in conns:
            await pool.release(c)


def probe_report(rnd: random.Random, outcome: str) -> dict[str, Any]:
    ok = outcome != "fail"
    return {
        "ok": ok,
        "failure": None if ok else "timeout",
        "connect_ms": round(rnd.uniform(0.5, 30), 2),
        "describe_ms": round(rnd.uniform(5, 200), 2) if ok else None,
        "codec": "H264" if ok else None,
        "width": 704 if ok else None,
        "height": 576 if ok else None,
    }


async def ours(
    pool: asyncpg.Pool, box: CredentialBox, rows: int, workers: int, seed: int, batch: int
) -> dict[str, int]:
    cfg = WorkerConfig(batch=batch)
    policy = StatusPolicy()
    done = 0
    transitions = 0

    async def worker(i: int) -> None:
        nonlocal done, transitions
        rnd = random.Random(seed * 100 + i)
        owner = f"bench-{seed}-{i}"
        cursor = store.LeaseCursor()  # one per worker, as each `camreg worker` has its own
        while done < rows:
            leases = await store.lease(
                pool, box, owner, batch=cfg.batch, lease_s=cfg.lease_s, cursor=cursor
            )
            if not leases:
                return
            now = time.time()
            records = []
            for le in leases:
                x = rnd.random()
                outcome: Outcome = "ok" if x < 0.98 else "fail"
                state, tr = step(le.state, outcome, max(now, le.state.since), policy)
                failures = 0 if outcome != "fail" else le.failures + 1
                transitions += tr is not None
                records.append(
                    store.ProbeRecord(
                        lease=le,
                        state=state,
                        transition=tr,
                        probe=probe_report(rnd, outcome),
                        failures=failures,
                        next_in_s=next_interval(le.level, failures, cfg, rnd),
                    )
                )
            kept = await store.record_many(pool, owner, records)
            done += sum(kept)

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return {"rows": done, "transitions": transitions}


_BARE = """
UPDATE camera_health h
SET state = u.state::jsonb, last_probe = u.probe::jsonb, last_probe_at = now(),
    failures = u.failures, next_probe_at = now() + make_interval(secs => u.next_s),
    lease_owner = NULL, lease_until = NULL, lease_host = NULL
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::float8[])
     AS u(camera_id, state, probe, failures, next_s)
WHERE h.camera_id = u.camera_id
"""


async def anchor(
    pool: asyncpg.Pool, ids: list[uuid.UUID], workers: int, batch: int
) -> dict[str, int]:
    rnd = random.Random(1)
    state = json.dumps(
        {"status": "unknown", "since": time.time(), "fail_streak": 0, "ok_streak": 1,
         "fault_streak": 0, "recent": ["ok"], "changes": [False], "settled": "unknown"}
    )  # fmt: skip
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    queue: asyncio.Queue[list[uuid.UUID]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def worker() -> None:
        while not queue.empty():
            b = queue.get_nowait()
            probes = [json.dumps(probe_report(rnd, "ok")) for _ in b]
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    _BARE, b, [state] * len(b), probes, [0] * len(b), [900.0] * len(b)
                )

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"rows": len(ids), "transitions": 0}


async def measure(url: str, pool: asyncpg.Pool, pids: list[int], work: Any) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        lsn = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8"
        lsn0 = await conn.fetchval(lsn)
        cpu0, own0, t0 = backend_cpu(pids), own_cpu(), time.perf_counter()
        res = await work
        elapsed = time.perf_counter() - t0
        cpu1, own1 = backend_cpu(pids), own_cpu()
        wal = await conn.fetchval(lsn) - lsn0
    finally:
        await conn.close()
    n = res["rows"]
    return {
        "rows": n,
        "transitions": res["transitions"],
        "rows_s": n / elapsed,
        "pg_cpu_s_per_1000": (cpu1 - cpu0) / n * 1000,
        "pg_cores": (cpu1 - cpu0) / elapsed,
        "wal_mb_s": float(wal) / elapsed / 1e6,
        "wal_bytes_per_row": float(wal) / n,
        "worker_cores": (own1 - own0) / elapsed,
    }


def show(name: str, r: dict[str, float]) -> str:
    return (
        f"{name}: {r['rows_s']:,.0f} rows/s; PostgreSQL {r['pg_cores']:.2f} cores "
        f"({r['pg_cpu_s_per_1000']:.3f} CPU-s per 1,000 rows); WAL {r['wal_mb_s']:.1f} MB/s "
        f"({r['wal_bytes_per_row']:,.0f} B/row); worker process {r['worker_cores']:.2f} cores"
    )


def med(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--per-run", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=WorkerConfig().batch, help="cameras per lease")
    args = ap.parse_args()
    with database_url() as url:
        await ensure_cameras(url, args.rows, SCHEMA, KEY)
        import base64

        box = CredentialBox(base64.b64decode(KEY))
        pool = await create_pool(url, schema=SCHEMA, min_size=args.workers, max_size=args.workers)
        try:
            await pool.execute(
                "UPDATE camera_health SET lease_owner = NULL, lease_until = NULL, "
                "lease_host = NULL WHERE lease_owner IS NOT NULL"
            )
            due = await pool.fetchval(
                "SELECT count(*) FROM camera_health WHERE next_probe_at <= now()"
            )
            if due < args.per_run * args.repeat:
                print(f"making cameras due again ({due:,} due)…", flush=True)
                await pool.execute(
                    "UPDATE camera_health SET next_probe_at = now() - interval '1 second'"
                )
            # what autovacuum would have done by now: a bulk-loaded table has no statistics,
            # and leasing's plans need them (live leases are few, not a third of the table)
            await pool.execute("VACUUM ANALYZE camera_health")
            pids = await pool_pids(pool, args.workers)
            need = PROVINCE_NEED
            print(f"province need at the default intervals: {need:,.0f} rows/s", flush=True)
            mine, bare = [], []
            for run in range(args.repeat):
                r = await measure(
                    url, pool, pids, ours(pool, box, args.per_run, args.workers, run, args.batch)
                )
                print(show(f"run {run + 1} ours (lease + step + record_many)", r), flush=True)
                mine.append(r)
                ids = [
                    rec["camera_id"]
                    for rec in await pool.fetch(
                        "SELECT camera_id FROM camera_health "
                        "ORDER BY last_probe_at DESC NULLS LAST LIMIT $1",
                        int(r["rows"]),
                    )
                ]
                a = await measure(url, pool, pids, anchor(pool, ids, args.workers, args.batch))
                print(show(f"run {run + 1} anchor (bare UPDATE … FROM unnest)", a), flush=True)
                bare.append(a)
            m, b = med(mine), med(bare)
            print()
            print(show(f"ours, median of {args.repeat}", m))
            print(show(f"anchor, median of {args.repeat}", b))
            print(
                f"ratio ours/anchor {m['rows_s'] / b['rows_s']:.2f}; "
                f"ours / province need {m['rows_s'] / need:.2f}× (target ≥ 2×); "
                f"transitions stored per run: {m['transitions']:,.0f}"
            )
        finally:
            await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
