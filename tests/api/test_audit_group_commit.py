"""Stream links and hook verdicts: every answered request's audit row is durable, even though
concurrent requests' rows are committed together (group commit)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.state import POOL, STREAMS

from ..conftest import Tok, camera, schema_dsn
from ..live import camreg_serve_empty


async def _cameras(
    session: aiohttp.ClientSession, base: str, admin: dict[str, str], n: int, first: int
) -> list[str]:
    ids = []
    for i in range(n):
        body = camera(
            gb_id=f"1401050000132590{first + i:04d}",
            streams={"main": f"rtsp://10.9.0.{i + 1}:554/main"},
        )
        async with session.post(f"{base}/api/v1/cameras", json=body, headers=admin) as resp:
            assert resp.status == 201, await resp.text()
            ids.append((await resp.json())["id"])
    return ids


async def _commander(session: aiohttp.ClientSession, base: str, admin: dict[str, str]) -> Any:
    body = {"role": "commander", "name": "video-wall"}
    async with session.post(f"{base}/api/v1/tokens", json=body, headers=admin) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def test_a_video_wall_of_64_links_shares_commits_and_every_link_is_audited(
    client: TestClient, auth: Tok
) -> None:
    session = client.session
    base = str(client.make_url(""))
    admin = await auth("admin")
    ids = await _cameras(session, base, admin, 8, 0)
    token = await _commander(session, base, admin)
    h = {"Authorization": f"Bearer {token['token']}"}
    group = client.app[STREAMS].links
    before = group.runs

    async def link(cid: str) -> int:
        async with session.get(f"{base}/api/v1/cameras/{cid}/stream", headers=h) as resp:
            return resp.status

    statuses = await asyncio.gather(*(link(ids[i % len(ids)]) for i in range(64)))
    assert statuses == [200] * 64
    rows = await client.app[POOL].fetch(
        "SELECT xmin::text AS tx FROM audit_log WHERE token_id = $1::uuid AND action = $2",
        token["id"],
        "stream.direct",
    )
    assert len(rows) == 64
    commits = len({r["tx"] for r in rows})
    assert commits == group.runs - before
    assert commits < 64  # rows of concurrent requests shared transactions


async def test_a_lone_link_is_committed_at_once_in_a_batch_of_its_own(
    client: TestClient, auth: Tok
) -> None:
    session = client.session
    base = str(client.make_url(""))
    admin = await auth("admin")
    ids = await _cameras(session, base, admin, 1, 100)
    token = await _commander(session, base, admin)
    h = {"Authorization": f"Bearer {token['token']}"}
    group = client.app[STREAMS].links
    before = (group.runs, group.keys)
    async with session.get(f"{base}/api/v1/cameras/{ids[0]}/stream", headers=h) as resp:
        assert resp.status == 200
    assert (group.runs, group.keys) == (before[0] + 1, before[1] + 1)


async def test_a_failed_audit_commit_fails_the_link_instead_of_answering_it(
    client: TestClient, auth: Tok
) -> None:
    session = client.session
    base = str(client.make_url(""))
    admin = await auth("admin")
    ids = await _cameras(session, base, admin, 1, 200)
    token = await _commander(session, base, admin)
    h = {"Authorization": f"Bearer {token['token']}"}
    pool = client.app[POOL]
    # the audit table refuses inserts for a moment: the link must not be handed out
    async with pool.acquire() as conn:
        await conn.execute(
            """CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'audit refused for the test'; END $$;
               CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log
               FOR EACH ROW EXECUTE FUNCTION refuse_audit()"""
        )
    try:
        async with session.get(f"{base}/api/v1/cameras/{ids[0]}/stream", headers=h) as resp:
            assert resp.status == 500
            assert "rtsp://" not in await resp.text()
    finally:
        await pool.execute("DROP TRIGGER refuse_audit ON audit_log; DROP FUNCTION refuse_audit()")
    async with session.get(f"{base}/api/v1/cameras/{ids[0]}/stream", headers=h) as resp:
        assert resp.status == 200


@pytest.fixture(scope="module")
def dsn(database_url: str, schema: str) -> str:
    return schema_dsn(database_url, schema)


async def test_a_server_killed_mid_batch_lost_no_audit_row_of_an_answered_link(
    dsn: str, tmp_path: Path
) -> None:
    with camreg_serve_empty(dsn, tmp_path / "serve") as live:
        admin = {"Authorization": f"Bearer {live.admin}"}
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            ids = await _cameras(session, live.base, admin, 16, 300)
            token = await _commander(session, live.base, admin)
            h = {"Authorization": f"Bearer {token['token']}"}
            answered = 0
            stop = asyncio.Event()
            enough = asyncio.Event()

            async def wall(i: int) -> None:
                nonlocal answered
                while not stop.is_set():
                    url = f"{live.base}/api/v1/cameras/{ids[i % len(ids)]}/stream"
                    try:
                        async with session.get(url, headers=h) as resp:
                            if resp.status == 200:
                                await resp.json()
                                answered += 1
                                if answered >= 400:
                                    enough.set()
                    except (TimeoutError, aiohttp.ClientError):
                        return  # the server is gone

            players = [asyncio.create_task(wall(i)) for i in range(64)]
            await asyncio.wait_for(enough.wait(), 60)
            live.proc.kill()  # SIGKILL with batches in flight: no cleanup, no final flush
            live.proc.wait(15)
            stop.set()
            for p in players:
                with contextlib.suppress(Exception):
                    await p
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT xmin::text AS tx FROM audit_log WHERE token_id = $1::uuid AND action = $2",
            token["id"],
            "stream.direct",
        )
    finally:
        await conn.close()
    assert answered >= 400
    assert len(rows) >= answered  # every link a player received has its audit row
    assert len({r["tx"] for r in rows}) < len(rows)  # and they were group-committed
