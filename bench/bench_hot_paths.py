"""The registry's read and stream-link hot paths beside bare aiohttp + asyncpg handlers.

    python bench/bench_hot_paths.py [--rows 2400000] [--repeat 3] [--duration 5]

Loads the generated ledger once into the schema `bench_registry` (shared with bench_api.py),
serves the real app and, on another port of the same process, the bare anchors:

- `GET /x/{id}`: the same `SELECT` of the public columns, the record as JSON (json.dumps);
- `GET /bbox?…`: the same bbox query with the JSON built by PostgreSQL (`json_agg`);
- `GET /link/{id}`: one audit row inserted per request, committed durably (a WAL flush
  each), and a constant link JSON answered;
- `GET /near?…`: the same KNN `SELECT … ORDER BY geom <-> point LIMIT k` as JSON.

Each pair is driven by wrk (its own process; a Lua script picks a random URL per request)
and, where the Python client is not the limit, by bench/load_client.py too; every figure is
the median of `--repeat` runs, ours and the anchor's alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import Database, create_app
from api.state import STREAMS, TOKENS
from bench.bench_import import ensure_cameras
from bench.common import ROOT, database_url, drive, median, pct
from bench.rtsp_endpoints import cpu_seconds
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings
from camera_registry.store.cameras import PUBLIC_COLUMNS

# CAMREG_BENCH_SCHEMA: a schema of one's own, when others benchmark on the same server.
SCHEMA = os.environ.get("CAMREG_BENCH_SCHEMA", "bench_registry")
KEY = base64.b64encode(b"b" * 32).decode()
RELAY_SECRET = "bench-relay-secret-0123"  # noqa: S105 - a loopback benchmark's relay
LINK_BODY = json.dumps(
    {
        "url": "http://relay/live/14010500001325000001_main.flv?sign=" + "a" * 120,
        "protocol": "flv",
        "profile": "main",
        "expires_at": "2026-11-27T00:05:00+00:00",
        "relay": "bench-relay",
    }
)

LUA = """
local items = {ITEMS}
local headers = {HEADERS}
math.randomseed(os.time())
request = function()
  local it = items[math.random(#items)]
  return wrk.format(it[1], it[2], headers, it[3])
end
"""


def _lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


def wrk(
    base: str, items: Sequence[tuple[str, str, str | None]], headers: dict[str, str], c: int, d: int
) -> dict[str, float]:
    """Run wrk against `items` (method, path, body); req/s and latency percentiles in ms."""
    rows = ",".join(
        "{" + ",".join([_lua_str(m), _lua_str(p), _lua_str(b) if b else "nil"]) + "}"
        for m, p, b in items
    )
    hdrs = "{" + ",".join(f"[ {_lua_str(k)} ]={_lua_str(v)}" for k, v in headers.items()) + "}"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(LUA.replace("{ITEMS}", "{" + rows + "}").replace("{HEADERS}", hdrs))
        script = fh.name
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{c}", f"-d{d}s", "--latency", "-s", script, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        Path(script).unlink()
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert bad is None, f"wrk saw non-2xx answers:\n{out}"
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+)", out)
    assert errors is None or set(errors.groups()) == {"0"}, out

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate, out
    return {"rps": float(rate.group(1)), "p50": ms("50%"), "p99": ms("99%")}


def py_client(urls: list[str], headers: dict[str, str], c: int) -> dict[str, float]:
    r = drive(urls, headers, c)
    lat = [x * 1000 for x in r["latencies"]]
    return {"rps": len(lat) / r["elapsed"], "p50": median(lat), "p99": pct(lat, 99)}


def med(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def fmt(r: dict[str, float]) -> str:
    return f"{r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms"


def cost(r: dict[str, float]) -> str:
    return (
        f"server {r['server_us']:,.0f} µs CPU ({r['server_share']:.0%} of a core), "
        f"PostgreSQL {r['db_us']:,.0f} µs CPU, {r['flushes']:.3f} WAL flushes"
    )


async def anchors(url: str, port_out: list[int]) -> web.AppRunner:
    """The bare handlers, each doing the database work of one of our routes and no more."""
    pool = await asyncpg.create_pool(
        url, min_size=2, max_size=10, server_settings={"search_path": SCHEMA}
    )
    assert pool is not None
    app = web.Application()

    async def get_one(request: web.Request) -> web.Response:
        rec = await pool.fetchrow(
            f"SELECT {PUBLIC_COLUMNS} FROM cameras WHERE id = $1::uuid", request.match_info["id"]
        )
        assert rec is not None
        return web.Response(
            text=json.dumps(dict(rec), default=str), content_type="application/json"
        )

    async def bbox(request: web.Request) -> web.Response:
        b = [float(x) for x in request.query["bbox"].split(",")]
        text = await pool.fetchval(
            f"""SELECT json_agg(c)::text FROM (SELECT {PUBLIC_COLUMNS} FROM cameras
                 WHERE geom <@ box(point($1, $2), point($3, $4)) ORDER BY id LIMIT 10000) c""",
            *b,
        )
        return web.Response(text=text or "[]", content_type="application/json")

    async def near(request: web.Request) -> web.Response:
        lon, lat = (float(x) for x in request.query["near"].split(","))
        rows = await pool.fetch(
            f"""SELECT {PUBLIC_COLUMNS} FROM cameras WHERE geom IS NOT NULL
                ORDER BY geom <-> point($1, $2) LIMIT 10""",
            lon,
            lat,
        )
        body = json.dumps([dict(r) for r in rows], default=str)
        return web.Response(text=body, content_type="application/json")

    async def link(request: web.Request) -> web.Response:
        await pool.execute(
            """INSERT INTO audit_log (actor, action, camera_id, detail)
               VALUES ('bare', 'stream.link', $1::uuid, '{"profile": "main"}')""",
            request.match_info["id"],
        )
        return web.Response(text=LINK_BODY, content_type="application/json")

    app.router.add_get("/x/{id}", get_one)
    app.router.add_get("/bbox", bbox)
    app.router.add_get("/near", near)
    app.router.add_get("/link/{id}", link)

    async def close_pool(_: web.Application) -> None:
        await pool.close()

    app.on_cleanup.append(close_pool)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port_out.append(runner.addresses[0][1])
    return runner


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--only", default="get,bbox,near,link,hook", help="comma-separated paths")
    args = ap.parse_args()
    only = set(args.only.split(","))
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
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ours = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ports: list[int] = []
        bare_runner = await anchors(url, ports)
        bare = f"http://127.0.0.1:{ports[0]}"
        admin = Actor("bench", Role.ADMIN)
        _, token = await app[TOKENS].create(admin, role=Role.PLANNER, name="bench-reads")
        _, ctoken = await app[TOKENS].create(admin, role=Role.COMMANDER, name="bench-wall")
        h = {"Authorization": f"Bearer {token}"}
        ch = {"Authorization": f"Bearer {ctoken}"}
        conn = await asyncpg.connect(url, server_settings={"search_path": SCHEMA})
        ids = [
            str(r["id"])
            for r in await conn.fetch("SELECT id FROM cameras TABLESAMPLE SYSTEM (1) LIMIT 5000")
        ]
        sample = await conn.fetch("SELECT lon, lat FROM cameras TABLESAMPLE SYSTEM (1) LIMIT 500")
        await conn.close()
        rnd = random.Random(7)
        loop = asyncio.get_running_loop()
        probe = await asyncpg.connect(url)

        async def costed(run: Awaitable[dict[str, float]]) -> dict[str, float]:
            """A wrk run with what it cost: this process's CPU (both servers live in it, one
            runs at a time), the database backends' CPU and WAL flushes, per request."""
            pids = [
                r["pid"]
                for r in await probe.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                )
            ]
            syncs0 = await probe.fetchval("SELECT wal_sync FROM pg_stat_wal")
            db0, cpu0, t0 = cpu_seconds(pids), time.process_time(), time.monotonic()
            r = await run
            elapsed = time.monotonic() - t0
            db1, cpu1 = cpu_seconds(pids), time.process_time()
            # the backends' counters are flushed to the view at the transactions' end
            syncs1 = await probe.fetchval("SELECT wal_sync FROM pg_stat_wal")
            n = max(r["rps"] * elapsed, 1.0)
            return {
                **r,
                "server_us": (cpu1 - cpu0) / n * 1e6,
                "db_us": (db1 - db0) / n * 1e6,
                "flushes": (syncs1 - syncs0) / n,
                "server_share": (cpu1 - cpu0) / elapsed,
            }

        results: dict[str, dict[str, Any]] = {}

        async def pair(
            name: str,
            mine: Sequence[tuple[str, str, str | None]],
            hdr: dict[str, str],
            anchor: Sequence[tuple[str, str, str | None]] | None,
            c: int,
            python_n: int = 0,
        ) -> None:
            runs_ours: list[dict[str, float]] = []
            runs_bare: list[dict[str, float]] = []
            for _ in range(args.repeat):
                runs_ours.append(
                    await costed(loop.run_in_executor(None, wrk, ours, mine, hdr, c, args.duration))
                )
                if anchor is not None:
                    runs_bare.append(
                        await costed(
                            loop.run_in_executor(None, wrk, bare, anchor, {}, c, args.duration)
                        )
                    )
            res: dict[str, Any] = {"ours": med(runs_ours), "c": c}
            line = f"{name} (wrk, c={c}, median of {args.repeat}): ours {fmt(res['ours'])}"
            if runs_bare:
                res["bare"] = med(runs_bare)
                res["ratio"] = res["ours"]["rps"] / res["bare"]["rps"]
                line += f"; anchor {fmt(res['bare'])}; ratio {res['ratio']:.2f}"
            print(line, flush=True)
            costs = f"  per request: ours {cost(res['ours'])}"
            if runs_bare:
                costs += f"; anchor {cost(res['bare'])}"
            print(costs, flush=True)
            if python_n and all(m == "GET" for m, _, _ in mine):
                py_ours = []
                py_bare = []
                for _ in range(args.repeat):
                    urls = [ours + p for _, p, _ in rnd.choices(mine, k=python_n)]
                    py_ours.append(await loop.run_in_executor(None, py_client, urls, hdr, c))
                    if anchor is not None:
                        urls = [bare + p for _, p, _ in rnd.choices(anchor, k=python_n)]
                        py_bare.append(await loop.run_in_executor(None, py_client, urls, {}, c))
                res["py_ours"] = med(py_ours)
                line = f"  python client: ours {fmt(res['py_ours'])}"
                if py_bare:
                    res["py_bare"] = med(py_bare)
                    ratio = res["py_ours"]["rps"] / res["py_bare"]["rps"]
                    line += f"; anchor {fmt(res['py_bare'])}; ratio {ratio:.2f}"
                print(line, flush=True)
            results[f"{name} c={c}"] = res

        if "get" in only:
            await pair(
                "GET /cameras/{id}",
                [("GET", f"/api/v1/cameras/{i}", None) for i in ids],
                h,
                [("GET", f"/x/{i}", None) for i in ids],
                16,
                python_n=3000,
            )
        if "bbox" in only:
            boxes = []
            for r in rnd.sample(list(sample), 20):
                d = 0.06
                boxes.append(f"{r['lon'] - d},{r['lat'] - d},{r['lon'] + d},{r['lat'] + d}")
            await pair(
                "GET /cameras?bbox=…&limit=10000",
                [("GET", f"/api/v1/cameras?bbox={b}&limit=10000", None) for b in boxes],
                h,
                [("GET", f"/bbox?bbox={b}", None) for b in boxes],
                2,
                python_n=40,
            )
        if "near" in only:
            pts = [f"{r['lon']},{r['lat']}" for r in sample]
            await pair(
                "GET /cameras?near=…&k=10",
                [("GET", f"/api/v1/cameras?near={p}&k=10", None) for p in pts],
                h,
                [("GET", f"/near?near={p}", None) for p in pts],
                1,
                python_n=500,
            )
            await pair(
                "GET /cameras?near=…&k=10",
                [("GET", f"/api/v1/cameras?near={p}&k=10", None) for p in pts],
                h,
                [("GET", f"/near?near={p}", None) for p in pts],
                8,
            )
        link_anchor: list[tuple[str, str, str | None]] = [("GET", f"/link/{i}", None) for i in ids]
        if "link" in only:
            mine = [("GET", f"/api/v1/cameras/{i}/stream?protocol=flv", None) for i in ids]
            for c in (1, 16, 64):
                await pair("GET /cameras/{id}/stream (audited)", mine, ch, link_anchor, c)
        if "hook" in only:
            commander = await app[TOKENS].authenticate(ctoken)
            hooks: list[tuple[str, str, str | None]] = []
            path = f"/api/v1/hooks/zlm/on_play?secret={RELAY_SECRET}"
            for cid in rnd.choices(ids, k=1000):
                link = await app[STREAMS].issue(commander, cid, profile="main", protocol="flv")
                key = link["url"].split("/live/")[1].split(".flv")[0]
                body = {
                    "app": "live",
                    "stream": key,
                    "ip": "127.0.0.1",
                    "params": "sign=" + link["url"].split("sign=")[1],
                }
                hooks.append(("POST", path, json.dumps(body)))
            for c in (1, 16, 64):
                await pair(
                    "POST /hooks/zlm/on_play (audited verdicts)",
                    hooks,
                    {"Content-Type": "application/json"},
                    link_anchor,
                    c,
                )
        out = ROOT / "bench" / "out" / "hot_paths.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        await probe.close()
        await bare_runner.cleanup()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
