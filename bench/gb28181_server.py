"""The service under test for bench_gb28181.py: the app with its SIP server, in its own process.

Argv: DSN SCHEMA. Prints `ready <sip port>` and serves until killed; the benchmark reads its
CPU time and peak RSS from /proc.
"""

from __future__ import annotations

import asyncio
import base64
import cProfile
import json
import os
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from api.app import Database, create_app
from api.state import SIP
from camera_registry.config import Gb28181Settings, Settings

SERVER_ID = "14000000002000000001"


async def main(dsn: str, schema: str) -> None:
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="camreg-gb-bench-")),
        secret_key=base64.b64encode(b"b" * 32).decode(),
        db_pool_max=20,
        gb28181=Gb28181Settings(
            sip_host="127.0.0.1",
            sip_port=0,
            server_id=SERVER_ID,
            rate_per_source=1000,
        ),
    )
    app = create_app(settings, Database(dsn=dsn, schema=schema), run_sip=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"ready {app[SIP].port}", flush=True)
    slow = os.environ.get("CAMREG_BENCH_SLOW_S")  # log each loop step longer than this (debug)
    if slow:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = float(slow)
    profile = os.environ.get("CAMREG_BENCH_PROFILE")  # a path: cProfile stats, dumped every 5 s
    metrics = os.environ.get("CAMREG_BENCH_METRICS")  # a path: the SIP counters, every 5 s
    if profile:
        prof = cProfile.Profile()
        prof.enable()
    try:
        while True:
            await asyncio.sleep(5)
            if profile:
                prof.dump_stats(profile)
            if metrics:
                text = json.dumps(app[SIP].metrics(), indent=1)
                await asyncio.to_thread(Path(metrics).write_text, text)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
