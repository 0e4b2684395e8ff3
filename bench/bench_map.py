"""The web map's cameras layer at Shanxi scale: GET /api/v1/map/cameras per viewport.

    python bench/bench_map.py [--rows 2400000]

Loads the generated ledger once into the schema `bench_map` (kept between runs; the map grid
of migration 0010 is filled by its triggers during the import), serves the real app on a
loopback port and drives it from a separate client process, one request at a time, with
1280×800-pixel viewports: province (zoom 7), city (zoom 10) and street (zoom 16) around
sampled cameras. Anchors in the same run: the same province clusters computed by scanning
`cameras` (what the endpoint would cost without the grid), the street viewport's cameras
fetched by raw SQL through the GiST index (no HTTP), and a bare aiohttp handler returning the
province answer's bytes (the HTTP floor).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import Database, create_app
from api.state import TOKENS
from bench.bench_import import ensure_cameras
from bench.common import ROOT, database_url, drive, median, pct
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings
from camera_registry.store.db import create_pool
from camera_registry.store.mapgrid import choose_tier

SCHEMA = "bench_map"
KEY = base64.b64encode(b"m" * 32).decode()
W, H = 1280, 800


async def ensure_data(url: str, rows: int, schema: str) -> None:
    took = await ensure_cameras(url, rows, schema, KEY)
    if took is None:
        return
    print(f"import: {took:.1f} s", flush=True)
    pool = await create_pool(url, schema=schema, max_size=4, command_timeout=7200)
    try:
        # Statuses as probes would leave them, so clusters carry a realistic status mix.
        t = time.perf_counter()
        await pool.execute(
            """UPDATE cameras SET status = (ARRAY['online', 'online', 'online', 'online',
                   'online', 'online', 'degraded', 'offline', 'unknown', 'flapping'])
                   [1 + abs(hashtext(gb_id)) % 10]"""
        )
        print(f"status update of every camera (grid kept by trigger): "
              f"{time.perf_counter() - t:.1f} s", flush=True)  # fmt: skip
        await pool.execute("VACUUM ANALYZE cameras")
        await pool.execute("VACUUM ANALYZE map_grid")
    finally:
        await pool.close()


def viewport(lon: float, lat: float, zoom: int) -> tuple[float, float, float, float]:
    deg = 360.0 / (256 * 2**zoom)
    dx = W / 2 * deg
    dy = H / 2 * deg * math.cos(math.radians(lat))
    return (lon - dx, lat - dy, lon + dx, lat + dy)


def line(name: str, r: dict[str, Any]) -> str:
    lat = [x * 1000 for x in r["latencies"]]
    n = len(lat)
    return (
        f"{name}: n={n} median {median(lat):.1f} ms, p95 {pct(lat, 95):.1f} ms, "
        f"max {max(lat):.1f} ms, avg answer {r['bytes'] / n / 1024:.1f} KiB"
    )


def url_for(base: str, box: tuple[float, float, float, float], zoom: int) -> str:
    return f"{base}/api/v1/map/cameras?bbox={','.join(f'{v:.5f}' for v in box)}&zoom={zoom}"


async def scan_anchor(conn: asyncpg.Connection, box: tuple[float, ...], zoom: int) -> float:
    """The province clusters computed from `cameras` directly (no grid)."""
    _, size, k = choose_tier(zoom)
    cell = size * k
    t = time.perf_counter()
    await conn.fetch(
        """SELECT floor(lon / $5) AS gx, floor(lat / $5) AS gy, count(*), avg(lon), avg(lat),
                  count(*) FILTER (WHERE status = 'online'),
                  count(*) FILTER (WHERE status = 'degraded'),
                  count(*) FILTER (WHERE status = 'offline'),
                  count(*) FILTER (WHERE status = 'unknown'),
                  count(*) FILTER (WHERE status = 'flapping'),
                  count(*) FILTER (WHERE level = 1), count(*) FILTER (WHERE level = 2),
                  count(*) FILTER (WHERE level = 3), count(*) FILTER (WHERE level = 9)
             FROM cameras WHERE geom <@ box(point($1, $2), point($3, $4)) GROUP BY 1, 2""",
        *box,
        cell,
    )
    return time.perf_counter() - t


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--schema", default=SCHEMA, help="kept between runs; one per row count")
    args = ap.parse_args()
    with database_url() as url:
        await ensure_data(url, args.rows, args.schema)
        settings = Settings(data_dir=ROOT / ".camreg" / "bench", secret_key=KEY, db_pool_max=10)
        app = create_app(settings, Database(dsn=url, schema=args.schema))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        _, token = await app[TOKENS].create(
            Actor("bench", Role.ADMIN), role=Role.COMMANDER, name="bench-map"
        )
        h = {"Authorization": f"Bearer {token}"}
        conn = await asyncpg.connect(url, server_settings={"search_path": args.schema})
        cams = await conn.fetchval("SELECT count(*) FROM cameras")
        grid = await conn.fetch("SELECT tier, count(*) AS n FROM map_grid GROUP BY 1 ORDER BY 1")
        sample = await conn.fetch("SELECT lon, lat FROM cameras TABLESAMPLE SYSTEM (1) LIMIT 600")
        rnd = random.Random(11)
        province = [
            viewport(112.4 + rnd.uniform(-0.5, 0.5), 37.6 + rnd.uniform(-0.5, 0.5), 7)
            for _ in range(100)
        ]
        city = [viewport(r["lon"], r["lat"], 10) for r in rnd.choices(list(sample), k=200)]
        street = [viewport(r["lon"], r["lat"], 16) for r in rnd.choices(list(sample), k=300)]
        await asyncio.to_thread(drive, [url_for(base, b, 7) for b in province[:5]], h)  # warm-up
        prov = await asyncio.to_thread(drive, [url_for(base, b, 7) for b in province], h)
        cit = await asyncio.to_thread(drive, [url_for(base, b, 10) for b in city], h)
        st = await asyncio.to_thread(drive, [url_for(base, b, 16) for b in street], h)
        modes: dict[str, int] = {}
        async with aiohttp.ClientSession(headers=h) as s:
            for b in street[:60]:
                async with s.get(url_for(base, b, 16)) as resp:
                    mode = (await resp.json())["mode"]
                modes[mode] = modes.get(mode, 0) + 1
            async with s.get(url_for(base, province[0], 7)) as resp:
                prov_body = await resp.read()
        # Anchors, same run.
        scans = [await scan_anchor(conn, b, 7) for b in province[:5]]
        raw = []
        for b in street:
            t = time.perf_counter()
            await conn.fetch(
                """SELECT id, gb_id, name, level, status, lon, lat FROM cameras
                    WHERE geom <@ box(point($1, $2), point($3, $4)) LIMIT 2001""",
                *b,
            )
            raw.append(time.perf_counter() - t)
        one = await conn.fetchval("SELECT 1")
        assert one == 1
        await conn.close()
        bare_app = web.Application()

        async def bare(_: web.Request) -> web.Response:
            return web.Response(body=prov_body, content_type="application/json")

        bare_app.router.add_get("/x", bare)
        bare_runner = web.AppRunner(bare_app, access_log=None)
        await bare_runner.setup()
        await web.TCPSite(bare_runner, "127.0.0.1", 0).start()
        bare_port = bare_runner.addresses[0][1]
        bares = await asyncio.to_thread(drive, [f"http://127.0.0.1:{bare_port}/x"] * 300, {})
        tiers = ", ".join(f"{r['tier']}: {r['n']:,}" for r in grid)
        print(f"\ncameras: {cams:,}; map_grid rows by tier: {tiers}")
        print(line("GET /map/cameras province viewport (zoom 7, 1280x800)", prov))
        print(line("GET /map/cameras city viewport (zoom 10)", cit))
        print(line("GET /map/cameras street viewport (zoom 16)", st), f"modes of 60: {modes}")
        print(line("anchor: bare aiohttp handler, the province answer's bytes", bares))
        ms = [x * 1000 for x in scans]
        print(f"anchor: province clusters by scanning cameras (no grid): n={len(ms)} "
              f"median {median(ms):.1f} ms, max {max(ms):.1f} ms")  # fmt: skip
        rms = [x * 1000 for x in raw]
        print(f"anchor: street viewport cameras by raw SQL (GiST, no HTTP): n={len(rms)} "
              f"median {median(rms):.1f} ms, p95 {pct(rms, 95):.1f} ms")  # fmt: skip
        pm = median([x * 1000 for x in prov["latencies"]])
        print(f"ratio province scan / grid endpoint (medians): {median(ms) / pm:.1f}x")
        await bare_runner.cleanup()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
