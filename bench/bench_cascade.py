"""Catalog push of a province (2,400,000 cameras) to one upper platform, SIPp counting items.

    python bench/bench_cascade.py [--rows 2400000] [--runs 3] [--group 32] [--rate 5000]
                                  [--transport tcp] [--regions 1401 ...] [--schema NAME]

Uses the camera ledger of `bench_registry` (loaded once by bench_import.ensure_cameras and
kept between runs; it is only read here). Per run: SIPp (UAS) plays the upper platform, our
`UpstreamClient` registers to it, SIPp asks Query Catalog, we answer from the database cursor
in paced groups; SIPp logs Num, SumNum and the first DeviceID of every MESSAGE, and the
script checks those runs against the database: SumNum exact, every item once (lost and
duplicated counted). Anchor, same run: reading and formatting every item the same way (the
push's plan and pages) without sending (the pipeline's floor). Peak RSS is this process's
(the pusher's) high-water mark; SIPp runs in its own process.

`--receiver ours` pushes into our own device-access side instead: a province instance in a
process of its own (this script with `--province-child`), which reports its own peak RSS and
the highest RSS in each half of the push (flat memory shows the same in both).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.cascade import catalog
from api.cascade.client import UpstreamClient
from bench.bench_import import ensure_cameras
from bench.common import database_url, median
from camera_registry.config import UpstreamSettings
from camera_registry.crypto import CredentialBox
from camera_registry.store import upstreams as store
from camera_registry.store.db import create_pool

SCHEMA = "bench_registry"
KEY = base64.b64encode(b"b" * 32).decode()
SCENARIO = Path(__file__).resolve().parent / "sipp" / "upper_count.xml"
UPPER_ID = "14000000002000000001"
LOCAL_ID = "14010000002000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def expected(pool: asyncpg.Pool, regions: list[str]) -> AsyncIterator[str]:
    """Every DeviceID the upper platform must get, in our send order (tree, then gb_id)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        _, codes = await store.catalog_counts(conn, regions)
        for code in catalog.civil_nodes(codes):
            yield code
        async for rec in store.catalog_rows(conn, regions, prefetch=5000):
            yield rec["gb_id"]


async def check(
    pool: asyncpg.Pool, regions: list[str], runs: list[tuple[int, int, str]]
) -> dict[str, int]:
    """Walk the database's items against SIPp's (Num, SumNum, first) runs sorted by first."""
    runs = sorted(runs, key=lambda r: (len(r[2]), r[2]))
    total = 0
    lost = dup = 0
    i = 0
    left = 0  # items of the current run still to be matched
    async for device_id in expected(pool, regions):
        total += 1
        while (
            i < len(runs)
            and left == 0
            and (len(runs[i][2]), runs[i][2])
            < (
                len(device_id),
                device_id,
            )
        ):
            dup += runs[i][0]  # a run starting at an ID already covered
            i += 1
        if left == 0:
            if i < len(runs) and runs[i][2] == device_id:
                left = runs[i][0]
                i += 1
            else:
                lost += 1
                continue
        left -= 1
    dup += sum(r[0] for r in runs[i:]) + max(0, left)
    sums = {r[1] for r in runs}
    return {
        "expected": total,
        "received": sum(r[0] for r in runs),
        "messages": len(runs),
        "lost": lost,
        "duplicated": dup,
        "sumnum_exact": int(sums == {total}),
    }


async def anchor(pool: asyncpg.Pool, regions: list[str], group: int) -> float:
    t = time.perf_counter()
    n = 0
    async with (
        pool.acquire() as conn,
        contextlib.aclosing(catalog.catalog_batches(conn, regions, LOCAL_ID, group)) as batches,
    ):
        async for _, batch in batches:
            n += len(batch)
            "".join(batch).encode("gb18030")
    return time.perf_counter() - t


async def one_run(
    pool: asyncpg.Pool, box: CredentialBox, args: argparse.Namespace, workdir: Path
) -> dict[str, float]:
    port = free_port()
    sipp = shutil.which("sipp")
    assert sipp, "sipp not found: install the Debian package sip-tester"
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(port),
        "-t", "t1" if args.transport == "tcp" else "u1", "-nostdin", "-trace_logs",
        "-key", "local_id", LOCAL_ID, "-key", "domain", UPPER_ID[:10],
        "-key", "server_id", UPPER_ID, "-max_recv_loops", "10000",
        cwd=workdir, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.5)
    settings = UpstreamSettings(
        name="bench",
        server_id=UPPER_ID,
        host="127.0.0.1",
        port=port,
        transport=args.transport,
        password="x",  # noqa: S106 - SIPp answers 200 without a challenge here
        local_id=LOCAL_ID,
        regions=tuple(args.regions),
        catalog_group_size=args.group,
        catalog_items_per_s=args.rate,
        keepalive_s=60,
    )
    client = UpstreamClient(str(uuid.uuid4()), settings, pool, box)
    await client.start()
    try:
        async with asyncio.timeout(args.timeout):
            while client.timings["last_catalog"] is None:  # noqa: ASYNC110 - a peer's pace
                await asyncio.sleep(0.2)
    finally:
        await client.stop()
        await asyncio.sleep(1.0)  # SIPp flushes its log
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    last = client.timings["last_catalog"]
    runs: list[tuple[int, int, str]] = []
    for log in workdir.glob("*_logs.log"):  # noqa: ASYNC240 - after the run, not timed
        for line in log.read_text(errors="replace").splitlines():
            bits = line.split()
            if len(bits) == 4 and bits[0] == "CAT" and bits[1].isdigit():
                runs.append((int(bits[1]), int(bits[2]), bits[3]))
        log.unlink()
    verdict = await check(pool, list(args.regions), runs)
    return {
        "seconds": float(last["seconds"]),
        "sent": float(last["items_sent"]),
        "error": 0.0 if last["error"] is None else 1.0,
        **{k: float(v) for k, v in verdict.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


async def province(url: str, transport: str, keep_schema: str | None, trace: bool) -> None:
    """The province instance, in a process of its own (`--province-child`): its SIP server
    accepting us as a type-200 lower platform, on a fresh schema. It prints its SIP port and
    schema, samples its RSS and intake each second, and at a line on stdin prints them.
    `keep_schema`: an existing province schema, kept (to push into a registry that already
    holds millions); `trace`: the allocations that grew most, on stderr at the end."""
    import tracemalloc

    from aiohttp.test_utils import TestClient, TestServer

    from api.app import Database, create_app
    from api.state import SIP
    from bench.common import ROOT, fresh_schema
    from camera_registry.config import Settings

    if trace:
        tracemalloc.start(8)
    holder = contextlib.nullcontext(keep_schema) if keep_schema else fresh_schema(url, "province")
    async with holder as schema:
        settings = Settings(
            data_dir=ROOT / ".camreg" / "bench-province",
            secret_key=KEY,
            gb28181={
                "server_id": UPPER_ID,
                "sip_host": "127.0.0.1",
                "sip_port": 0,
                "password": "bench-pw",
                "regions": ["14"],
                "catalog_idle_timeout_s": 60,
                # one lower platform pushing its catalog is one source: above the flood limit
                "rate_per_source": 5000,
            },
        )
        app = create_app(settings, Database(dsn=url, schema=schema), run_sip=True)
        async with TestClient(TestServer(app)) as client:
            sip = client.app[SIP]
            loop = asyncio.get_running_loop()
            base = rss_mb()
            samples: list[float] = []
            backlog = 0

            async def watch() -> None:
                nonlocal backlog
                while True:
                    backlog = max(backlog, sip.catalog_backlog)
                    samples.append(rss_mb())
                    await asyncio.sleep(1.0)

            watcher = loop.create_task(watch())
            print(json.dumps({"port": sip.port, "schema": schema}), flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            watcher.cancel()
            if trace:
                for stat in tracemalloc.take_snapshot().statistics("traceback")[:12]:
                    print(f"{stat.size / 2**20:.1f} MB in {stat.count} blocks", file=sys.stderr)
                    for line in stat.traceback.format()[-8:]:
                        print("   ", line, file=sys.stderr)
            half = len(samples) // 2
            print(
                json.dumps(
                    {
                        "peak_rss_mb": peak_rss_mb(),
                        "rss_before_mb": base,
                        # the highest RSS in each half of the push: flat memory has the same
                        "rss_first_half_mb": max(samples[:half], default=0),
                        "rss_second_half_mb": max(samples[half:], default=0),
                        "max_items_waiting": backlog,
                        "backpressure": sip.counters["catalog_backpressure"],
                        "held": sip.counters["catalog_messages_held"],
                        "deferred": sip.counters["catalog_messages_deferred"],
                        "partial": sip.counters["catalogs_partial"],
                    }
                ),
                flush=True,
            )


async def to_ours(
    url: str, pool: asyncpg.Pool, box: CredentialBox, args: argparse.Namespace
) -> dict[str, float]:
    """The same push into our own device-access side: the province instance in a process of
    its own (`province`), as a real upper registry is, so neither side's event loop or
    memory is counted against the other."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--province-child", "--transport", args.transport,
        *(["--province-schema", args.province_schema] if args.province_schema else []),
        *(["--trace-memory"] if args.trace_memory else []),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        hello = json.loads(await child.stdout.readline())
        up = UpstreamSettings(
            name="province",
            server_id=UPPER_ID,
            host="127.0.0.1",
            port=hello["port"],
            transport=args.transport,
            password="bench-pw",  # noqa: S106 - a loopback benchmark
            local_id=LOCAL_ID,
            regions=tuple(args.regions),
            catalog_group_size=min(args.group, 16 if args.transport == "udp" else 200),
            catalog_items_per_s=args.rate,
        )
        client = UpstreamClient(str(uuid.uuid4()), up, pool, box)
        want = await store.count_visible(pool, args.regions)
        ppool = await create_pool(url, schema=hello["schema"], min_size=1, max_size=1)
        await ppool.execute(  # a kept province schema holds an earlier push's verdict
            "UPDATE gb_devices SET catalog_complete = NULL WHERE device_id = $1", LOCAL_ID
        )
        t = time.perf_counter()
        await client.start()
        try:
            async with asyncio.timeout(args.timeout):
                while True:
                    done = await ppool.fetchval(
                        "SELECT catalog_complete FROM gb_devices WHERE device_id = $1", LOCAL_ID
                    )
                    if done is not None:
                        break
                    await asyncio.sleep(0.5)
            took = time.perf_counter() - t
        finally:
            await client.stop()
        got = await ppool.fetchval("SELECT count(*) FROM cameras")
        distinct = await ppool.fetchval("SELECT count(DISTINCT gb_id) FROM cameras")
        await ppool.close()
        child.stdin.write(b"stop\n")
        await child.stdin.drain()
        stats = json.loads(await child.stdout.readline())
    finally:
        if child.returncode is None:
            child.stdin.close()
            try:
                async with asyncio.timeout(60):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()
    return {
        "seconds": took,
        "cameras": float(want),
        "in_province": float(got),
        "lost": float(want - distinct),
        "duplicated": float(got - distinct),
        "complete": 1.0 if done else 0.0,
        "push_seconds": float(client.timings["last_catalog"]["seconds"]),
        "pusher_peak_rss_mb": peak_rss_mb(),
        **{k: float(v) for k, v in stats.items()},
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--rate", type=float, default=None, help="items/s; default: the setting's")
    ap.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    ap.add_argument("--regions", nargs="*", default=[])
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument(
        "--schema",
        default=SCHEMA,
        help="where the ledger is loaded once; another name for a smaller --rows",
    )
    ap.add_argument(
        "--receiver",
        choices=("sipp", "ours"),
        default="sipp",
        help="sipp: a SIPp UAS counting items; ours: our own device-access side",
    )
    ap.add_argument("--province-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--province-schema", help="ours: push into this existing schema (kept)")
    ap.add_argument("--trace-memory", action="store_true", help="ours: top allocations")
    args = ap.parse_args()
    if args.province_child:
        with database_url() as url:
            await province(url, args.transport, args.province_schema, args.trace_memory)
        return
    with database_url() as url:
        conn = await asyncpg.connect(url)
        try:
            have = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = $1 AND table_name = 'cameras'",
                args.schema,
            )
            rows = await conn.fetchval(f"SELECT count(*) FROM {args.schema}.cameras") if have else 0
        finally:
            await conn.close()
        if rows < args.rows:
            await ensure_cameras(url, args.rows, args.schema, KEY)
        pool = await create_pool(
            url, schema=args.schema, min_size=2, max_size=4, command_timeout=3600
        )
        box = CredentialBox(base64.b64decode(KEY))
        try:
            n = await store.count_visible(pool, args.regions)
            rate = UpstreamSettings(
                name="x", server_id=UPPER_ID, host="h", password="x", local_id=LOCAL_ID,  # noqa: S106
                transport=args.transport, catalog_group_size=args.group,
                catalog_items_per_s=args.rate,
            ).items_per_s  # fmt: skip
            print(
                f"catalog push of {n:,} cameras over {args.transport.upper()}, "
                f"{args.group} items/MESSAGE, pacing {rate:,.0f} items/s, {args.runs} run(s)",
                flush=True,
            )
            if args.receiver == "ours":
                for i in range(args.runs):
                    r = await to_ours(url, pool, box, args)
                    print(
                        f"  run {i + 1}: {r['cameras']:,.0f} cameras into our device-access "
                        f"side in {r['seconds']:.1f} s ({r['cameras'] / r['seconds']:,.0f}/s; "
                        f"push {r['push_seconds']:.1f} s), province holds "
                        f"{r['in_province']:,.0f}, lost {r['lost']:.0f}, dup "
                        f"{r['duplicated']:.0f}, complete {bool(r['complete'])}, catalogs "
                        f"partial {r['partial']:.0f}; province peak RSS {r['peak_rss_mb']:.0f} "
                        f"MB ({r['rss_before_mb']:.0f} before, highest "
                        f"{r['rss_first_half_mb']:.0f} / "
                        f"{r['rss_second_half_mb']:.0f} MB in the push's first / second half); "
                        f"most items waiting for the store {r['max_items_waiting']:,.0f}, "
                        f"backpressure engaged {r['backpressure']:.0f}, answers held "
                        f"{r['held']:.0f}, deferred {r['deferred']:.0f}; pusher peak RSS "
                        f"{r['pusher_peak_rss_mb']:.0f} MB",
                        flush=True,
                    )
                return
            anchors = [await anchor(pool, args.regions, args.group) for _ in range(args.runs)]
            results = []
            for i in range(args.runs):
                with tempfile.TemporaryDirectory(prefix="bench_cascade_") as tmp:
                    r = await one_run(pool, box, args, Path(tmp))
                results.append(r)
                print(
                    f"  run {i + 1}: {r['seconds']:.1f} s, "
                    f"{r['sent'] / r['seconds']:,.0f} items/s, "
                    f"SIPp got {r['received']:,.0f} of {r['expected']:,.0f} in "
                    f"{r['messages']:,.0f} MESSAGEs, lost {r['lost']:.0f}, dup "
                    f"{r['duplicated']:.0f}, SumNum exact {bool(r['sumnum_exact'])}, "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            t = median([r["seconds"] for r in results])
            a = median(anchors)
            total = results[0]["expected"]
            print(
                f"median push {t:.1f} s ({total / t:,.0f} items/s); anchor (read + format, "
                f"no sending) {a:.1f} s ({total / a:,.0f} items/s); ratio {a / t:.2f}; "
                f"peak RSS {max(r['peak_rss_mb'] for r in results):.0f} MB; lost "
                f"{sum(r['lost'] for r in results):.0f}, duplicated "
                f"{sum(r['duplicated'] for r in results):.0f}",
                flush=True,
            )
        finally:
            await pool.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main())
