"""Read latency at Shanxi scale, and GET /cameras/{id} throughput beside a bare aiohttp handler.

    python bench/bench_api.py [--rows 2400000]

Loads the generated ledger once into the schema `bench_registry` (kept between runs), serves
the real app on a loopback port, and drives it from a separate client process:
bbox queries returning 10,000 cameras, nearest k=10, GET by id (latency median/p99, req/s),
and the same GET load against a bare aiohttp handler returning a camera-sized JSON body.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import Database, create_app
from api.state import STREAMS, TOKENS
from bench.bench_import import ensure_cameras
from bench.common import ROOT, database_url, drive, median, pct
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings

# CAMREG_BENCH_SCHEMA: a schema of one's own, when others benchmark on the same server.
SCHEMA = os.environ.get("CAMREG_BENCH_SCHEMA", "bench_registry")
KEY = base64.b64encode(b"b" * 32).decode()
RELAY_SECRET = "bench-relay-secret-0123"  # noqa: S105 - a loopback benchmark's relay


def line(name: str, r: dict[str, Any]) -> str:
    lat = [x * 1000 for x in r["latencies"]]
    n = len(lat)
    return (
        f"{name}: n={n} median {median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
        f"{n / r['elapsed']:,.0f} req/s, {r['bytes'] / n / 1024:.1f} KiB/answer"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    args = ap.parse_args()
    with database_url() as url:
        await ensure_cameras(url, args.rows, SCHEMA, KEY)
        relay = {
            "name": "bench-relay",
            "secret": RELAY_SECRET,
            "urls": {"flv": "http://relay/live/{stream_key}.flv?sign={sign}"},
        }
        settings = Settings(
            data_dir=ROOT / ".camreg" / "bench", secret_key=KEY, db_pool_max=10, relays=(relay,)
        )
        app = create_app(settings, Database(dsn=url, schema=SCHEMA))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        _, token = await app[TOKENS].create(
            Actor("bench", Role.ADMIN), role=Role.PLANNER, name="bench"
        )
        h = {"Authorization": f"Bearer {token}"}
        _, ctoken = await app[TOKENS].create(
            Actor("bench", Role.ADMIN), role=Role.COMMANDER, name="bench-wall"
        )
        ch = {"Authorization": f"Bearer {ctoken}"}
        pool = await asyncpg.connect(url, server_settings={"search_path": SCHEMA})
        ids = [
            str(r["id"])
            for r in await pool.fetch("SELECT id FROM cameras TABLESAMPLE SYSTEM (1) LIMIT 5000")
        ]
        sample = await pool.fetch("SELECT lon, lat FROM cameras TABLESAMPLE SYSTEM (1) LIMIT 500")
        camera_json = await pool.fetchval(
            "SELECT to_jsonb(c) - 'credentials' - 'credentials_mac' FROM cameras c LIMIT 1"
        )
        await pool.close()
        rnd = random.Random(7)
        # bbox: a box around a dense district large enough to hold >= 10,000 cameras.
        bbox_urls = []
        for r in rnd.sample(list(sample), 20):
            d = 0.06
            bbox_urls.append(
                f"{base}/api/v1/cameras?bbox={r['lon'] - d},{r['lat'] - d},"
                f"{r['lon'] + d},{r['lat'] + d}&limit=10000"
            )
        near_urls = [f"{base}/api/v1/cameras?near={r['lon']},{r['lat']}&k=10" for r in sample]
        get_urls = [f"{base}/api/v1/cameras/{i}" for i in rnd.choices(ids, k=3000)]

        bare_app = web.Application()
        body = json.dumps(camera_json, default=str, ensure_ascii=False)

        async def bare(_: web.Request) -> web.Response:
            return web.Response(text=body, content_type="application/json")

        bare_app.router.add_get("/x/{id}", bare)
        link_body = json.dumps(
            {
                "url": "http://relay/live/14010500001325000001_main.flv?sign=" + "a" * 120,
                "protocol": "flv",
                "profile": "main",
                "expires_at": "2026-11-27T00:05:00+00:00",
                "relay": "bench-relay",
            }
        )

        async def const(_: web.Request) -> web.Response:
            return web.Response(text=link_body, content_type="application/json")

        bare_app.router.add_get("/const", const)
        bare_runner = web.AppRunner(bare_app, access_log=None)
        await bare_runner.setup()
        await web.TCPSite(bare_runner, "127.0.0.1", 0).start()
        bare_port = bare_runner.addresses[0][1]
        bare_urls = [f"http://127.0.0.1:{bare_port}/x/{i}" for i in rnd.choices(ids, k=3000)]

        loop = asyncio.get_running_loop()

        async def run(urls: list[str], hdr: dict[str, str], c: int) -> dict[str, Any]:
            return await loop.run_in_executor(None, drive, urls, hdr, c)

        link_urls = [
            f"{base}/api/v1/cameras/{i}/stream?protocol=flv" for i in rnd.choices(ids, k=2000)
        ]
        links = await run(link_urls, ch, 8)
        # Hook verdicts: signs issued now, then judged by the ZLMediaKit hook.
        hook_url = f"{base}/api/v1/hooks/zlm/on_play?secret={RELAY_SECRET}"
        commander = await app[TOKENS].authenticate(ctoken)
        hook_items: list[Any] = []
        for cid in rnd.choices(ids, k=2000):
            link = await app[STREAMS].issue(commander, cid, profile="main", protocol="flv")
            key = link["url"].split("/live/")[1].split(".flv")[0]
            hook_body = {
                "app": "live",
                "stream": key,
                "ip": "127.0.0.1",
                "params": "sign=" + link["url"].split("sign=")[1],
            }
            hook_items.append({"method": "POST", "url": hook_url, "json": hook_body})
        hooks = await run(hook_items, {}, 8)
        consts = await run([f"http://127.0.0.1:{bare_port}/const"] * 2000, {}, 8)
        bbox = await run(bbox_urls, h, 1)
        sizes = bbox["bytes"] / len(bbox_urls)
        near = await run(near_urls, h, 4)
        gets = await run(get_urls, h, 8)
        bares = await run(bare_urls, {}, 8)
        print(f"\ncameras: {args.rows:,}")
        print(line("GET /cameras?bbox (limit 10000)", bbox), f"(avg {sizes / 1e6:.1f} MB)")
        print(line("GET /cameras?near k=10", near))
        print(line("GET /cameras/{id}", gets))
        print(line("anchor: bare aiohttp handler", bares))
        ratio = (len(gets["latencies"]) / gets["elapsed"]) / (
            len(bares["latencies"]) / bares["elapsed"]
        )
        print(f"ratio GET /cameras/{{id}} req/s to bare aiohttp: {ratio:.2f}")
        print(line("GET /cameras/{id}/stream (signed flv link, audited)", links))
        print(line("anchor: bare aiohttp handler, constant link JSON", consts))
        rate = len(links["latencies"]) / links["elapsed"]
        lr = rate / (len(consts["latencies"]) / consts["elapsed"])
        print(f"ratio link issuance req/s to bare aiohttp: {lr:.2f}")
        print(line("POST /hooks/zlm/on_play (verdicts, audited)", hooks))
        await bare_runner.cleanup()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
