"""A lower platform (type 200) hands up a big catalog to our device-access side: memory and
time with the assembler's bounded buffer against the old whole-catalog assembly.

    CAMREG_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python bench/bench_catalog_intake.py --items 100000 --runs 3

Each run is a process of its own (peak RSS is a process's high-water mark) on a fresh schema:
the app's store and the real SIP server with the bridge, and one platform pushing `--items`
camera items in MESSAGEs of 8 (as `gb28181_load` does), `--window` in flight, retransmitted
over UDP on RFC 3261's timers when unanswered. Modes: `paced` (buffer 2,000 items and
backpressure beyond 16,000 items waiting for the store: the default), `batched` (the same
buffer without backpressure, as before it) and the anchor `whole` (a buffer larger than the
catalog, no backpressure: the assembler holds all of it until SumNum arrived, as before issue
14's fix). Figures: time until the end of the catalog is in the store, items stored, peak RSS
minus the RSS before the push (the catalog's own memory; sender and server share the
process, the sender builds each MESSAGE as it goes), the most items waiting for the store,
MESSAGEs left unanswered by backpressure, the response cache's size at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from api.app import Database, create_app
from api.gb28181 import Bridge
from api.state import GB_DEVICES, POOL
from bench.common import database_url, fresh_schema, median
from bench.gb28181_load import DOMAIN, SERVER_ID, Device, Port, catalog_item
from camera_registry.config import Gb28181Settings, Settings
from ingest.gb28181.server import SipServer, SipServerConfig

PLATFORM = "14010000002000000009"


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def child(
    url: str, mode: str, items: int, window: int, backlog_items: int
) -> dict[str, float]:
    async with fresh_schema(url, "intake") as schema:
        settings = Settings(
            data_dir=Path(tempfile.mkdtemp(prefix="camreg-intake-")),
            secret_key=base64.b64encode(b"b" * 32).decode(),
            db_pool_max=10,
            gb28181=Gb28181Settings(server_id=SERVER_ID),
        )
        app = create_app(settings, Database(dsn=url, schema=schema))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        bridge = Bridge(app[GB_DEVICES], settings.gb28181)
        config = SipServerConfig(
            server_id=SERVER_ID,
            domain=DOMAIN,
            port=0,
            catalog_idle_timeout_s=30,
            query_after_register=False,
            catalog_batch_items=items + 1 if mode == "whole" else 2_000,
            catalog_backlog_items=backlog_items if mode == "paced" else 10 * items + 10,
        )
        server = SipServer(config, bridge, bridge)
        await server.start()
        loop = asyncio.get_running_loop()
        _, port = await loop.create_datagram_endpoint(Port, local_addr=("127.0.0.1", 0))
        dev = Device(PLATFORM, 0, ("127.0.0.1", server.port), port)
        port.devices[PLATFORM] = dev
        await dev.register()
        base = _rss_kb()
        ids = [f"14010700001310{n:06d}" for n in range(items)]
        per = 8
        parts = [ids[i : i + per] for i in range(0, items, per)]
        room = asyncio.Semaphore(window)
        started = time.perf_counter()

        async def send(part: list[str]) -> None:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>Catalog</CmdType>'
                b"<SN>77</SN><DeviceID>" + PLATFORM.encode() + b"</DeviceID><SumNum>"
                + str(items).encode() + b"</SumNum><DeviceList>"
                + b"".join(catalog_item(c, PLATFORM) for c in part) + b"</DeviceList></Response>"
            )  # fmt: skip
            try:
                await dev.ask(dev.request("MESSAGE", body))
            finally:
                room.release()

        backlog = cached = 0

        async def watch() -> None:  # items handed over and not yet written; retransmit cache
            nonlocal backlog, cached
            while True:
                backlog = max(backlog, server.catalog_backlog)
                cached = max(cached, len(server.responses))
                await asyncio.sleep(0.2)

        watcher = loop.create_task(watch())
        tasks = set()
        for part in parts:
            await room.acquire()
            task = loop.create_task(send(part))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        pool = app[POOL]
        while True:  # only the end of a catalog writes catalog_at
            at = await pool.fetchval(
                "SELECT catalog_at FROM gb_devices WHERE device_id = $1", PLATFORM
            )
            if at is not None:
                break
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        watcher.cancel()
        row = await pool.fetchrow(
            "SELECT catalog_complete, catalog_items FROM gb_devices WHERE device_id = $1",
            PLATFORM,
        )
        stored = await pool.fetchval("SELECT count(*) FROM gb_catalog_items")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await server.stop()
        port.close()
        await runner.cleanup()
        return {
            "seconds": elapsed,
            "items_stored": stored,
            "complete": bool(row["catalog_complete"]),
            "catalog_items": row["catalog_items"],
            "peak_over_base_mb": (peak - base) / 1024,
            "max_items_waiting": backlog,
            "max_responses_cached": cached,
            "backpressure": server.counters["catalog_backpressure"],
            "deferred": server.counters["catalog_messages_deferred"],
            "partial": server.counters["catalogs_partial"],
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--child", choices=("paced", "batched", "whole"))
    ap.add_argument("--modes", nargs="+", default=["paced", "batched", "whole"])
    ap.add_argument("--backlog", type=int, default=16_000, help="items waiting; paced mode")
    args = ap.parse_args()
    if args.child:
        with database_url() as url:
            got = asyncio.run(child(url, args.child, args.items, args.window, args.backlog))
            print(json.dumps(got))
        return
    results: dict[str, list[dict[str, float]]] = {m: [] for m in args.modes}
    for _ in range(args.runs):
        for mode in results:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--items", str(args.items),
                 "--window", str(args.window), "--backlog", str(args.backlog)],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            results[mode].append(json.loads(out.strip().splitlines()[-1]))
            print(mode, results[mode][-1], flush=True)
    for mode, runs in results.items():
        print(
            f"{mode}: median {median([r['seconds'] for r in runs]):.1f} s, "
            f"peak over base {median([r['peak_over_base_mb'] for r in runs]):.0f} MB, "
            f"stored {[r['items_stored'] for r in runs]}, complete {[r['complete'] for r in runs]}"
        )
    if "whole" in results:
        w = median([r["peak_over_base_mb"] for r in results["whole"]])
        for mode in results:
            if mode != "whole" and w > 0:
                b = median([r["peak_over_base_mb"] for r in results[mode]])
                print(f"memory ratio {mode}/whole: {b / w:.2f}")


if __name__ == "__main__":
    main()
