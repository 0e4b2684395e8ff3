"""Scan jobs belong to the app's lifecycle: at most two run at a time (the rest wait, queued),
and stopping the server cancels running and queued scans, which end as `cancelled` with their
credentials dropped, never left running.

The scans sweep 127.0.12.0/24 slowly (1 probe/s) towards a port nobody listens on, so they
are still running when the app stops; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.discovery import SCAN_CONFIG, SCAN_SLOTS_N
from api.state import TOKENS
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings


async def test_scans_are_bounded_and_cancelled_on_shutdown(
    settings: Settings, database_url: str, schema: str
) -> None:
    app = create_app(settings, Database(dsn=database_url, schema=schema))
    ids: list[str] = []
    async with TestClient(TestServer(app)) as client:
        client.app[SCAN_CONFIG].discovery_port = 9  # discard: nobody answers
        _, token = await client.app[TOKENS].create(
            Actor("test", Role.ADMIN), role=Role.TECHNICIAN, name="lifecycle", region="1401"
        )
        h = {"Authorization": f"Bearer {token}"}
        body = {"cidrs": ["127.0.12.0/24"], "rate": 1, "password": "never-logged"}
        for _ in range(SCAN_SLOTS_N + 1):
            resp = await client.post("/api/v1/discovery/scans", json=body, headers=h)
            assert resp.status == 202, await resp.text()
            ids.append((await resp.json())["id"])
        async with asyncio.timeout(30):  # upper bound: the first two start at once
            while True:
                states = [
                    (await (await client.get(f"/api/v1/discovery/scans/{i}", headers=h)).json())
                    for i in ids
                ]
                if sum(s["status"] == "running" for s in states) == SCAN_SLOTS_N:
                    break
                await asyncio.sleep(0.05)
        assert [s["status"] for s in states].count("queued") == 1
        running = next(s for s in states if s["status"] == "running")
        assert running["has_credentials"] is True and "password" not in running
    # The app has stopped: every scan task was cancelled and awaited, and recorded it.
    pool = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        rows = await pool.fetch(
            "SELECT status, credentials FROM discovery_scans WHERE id = ANY($1::uuid[])", ids
        )
    finally:
        await pool.close()
    assert [r["status"] for r in rows] == ["cancelled"] * len(ids)  # queued one included
    assert all(r["credentials"] is None for r in rows)
