"""`camreg serve` stops on SIGTERM while a command centre holds an event stream open."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from ..conftest import schema_dsn
from ..live import camreg_serve


async def test_sigterm_ends_open_event_streams_and_the_server_exits(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    with camreg_serve(schema_dsn(database_url, schema), tmp_path / "data") as live:
        auth = {"Authorization": f"Bearer {live.admin}"}
        async with (
            aiohttp.ClientSession() as s,
            s.get(live.base + "/api/v1/events", headers=auth) as resp,
        ):
            assert resp.status == 200
            assert await resp.content.readline() == b": connected\n"
            live.proc.send_signal(signal.SIGTERM)
            # The stream ends (EOF) because the server ends it, long before the 15 s
            # heartbeat or aiohttp's 60 s shutdown timeout would have.
            async with asyncio.timeout(30):
                rest = await resp.content.read()
            assert b"keep-alive" not in rest
        rc = await asyncio.to_thread(live.proc.wait, 30)
        assert rc == 0, live.log.read_text()
