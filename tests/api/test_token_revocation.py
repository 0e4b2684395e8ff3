"""Verified tokens are cached per process, yet revocation and expiry still bite at once.

Two real servers share one schema, as two `camreg serve` processes share a database: a token
verified (and cached) by one is revoked through the other.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import POOL, TOKENS
from camera_registry.config import Settings

from ..conftest import Tok


@pytest.fixture(scope="module")
async def other(settings: Settings, database_url: str, schema: str) -> AsyncIterator[TestClient]:
    """A second server process's app on the same schema."""
    app = create_app(settings, Database(dsn=database_url, schema=schema))
    async with TestClient(TestServer(app)) as c:
        yield c


async def _new_token(client: TestClient, auth: Tok, **over: Any) -> tuple[str, dict[str, str]]:
    body = {"role": "commander", "name": f"wall-{time.monotonic_ns()}", **over}
    resp = await client.post("/api/v1/tokens", json=body, headers=await auth("admin"))
    assert resp.status == 201, await resp.text()
    data = await resp.json()
    return data["id"], {"Authorization": f"Bearer {data['token']}"}


async def _status(client: TestClient, headers: dict[str, str]) -> int:
    async with client.get("/api/v1/cameras?limit=1", headers=headers) as resp:
        return resp.status


async def _until_refused(client: TestClient, headers: dict[str, str], within_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if await _status(client, headers) == 401:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"the token still worked {within_s} s after it was revoked")


async def _listening(client: TestClient) -> None:
    """Wait until the app hears revocations (its LISTEN connection is up)."""
    async with asyncio.timeout(5):
        while not client.app[TOKENS].listening:  # noqa: ASYNC110 - the store's state, polled
            await asyncio.sleep(0.02)


async def test_revocation_through_one_server_refuses_the_token_on_the_other_within_a_second(
    client: TestClient, other: TestClient, auth: Tok
) -> None:
    await _listening(other)
    token_id, h = await _new_token(client, auth)
    for _ in range(3):  # verified and cached by the other server
        assert await _status(other, h) == 200
    resp = await client.delete(f"/api/v1/tokens/{token_id}", headers=await auth("admin"))
    assert resp.status == 204, await resp.text()
    assert await _status(client, h) == 401  # the revoking server: at once
    took = await _until_refused(other, h, within_s=1.0)
    assert took < 1.0


async def test_a_revocation_the_listener_never_heard_still_ends_within_the_cache_ttl(
    client: TestClient, other: TestClient, auth: Tok
) -> None:
    await _listening(other)
    other.app[TOKENS].cache_ttl_s = 0.5
    try:
        token_id, h = await _new_token(client, auth)
        assert await _status(other, h) == 200
        # revoked behind the store's back: no NOTIFY, only the TTL backstop can notice
        await client.app[POOL].execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1::uuid", token_id
        )
        await _until_refused(other, h, within_s=0.5 + 1.0)
    finally:
        other.app[TOKENS].cache_ttl_s = 10.0


async def test_a_cached_token_is_refused_once_it_expires(
    client: TestClient, other: TestClient, auth: Tok
) -> None:
    await _listening(other)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    _, h = await _new_token(client, auth, expires_at=expires.isoformat())
    assert await _status(other, h) == 200
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()))
    assert await _status(other, h) == 401


async def test_a_server_whose_listener_died_stops_caching_and_hears_revocations_again(
    client: TestClient, other: TestClient, auth: Tok
) -> None:
    await _listening(other)
    pool = other.app[POOL]
    killed = await pool.fetchval(
        """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
           WHERE query LIKE 'LISTEN%' AND query LIKE '%camreg_tokens%'
             AND datname = current_database()
             AND pid IN (SELECT pid FROM pg_stat_activity
                         WHERE application_name = 'camreg')"""
    )
    assert killed >= 1
    await _listening(other)  # reconnected by itself
    token_id, h = await _new_token(client, auth)
    assert await _status(other, h) == 200
    resp = await client.delete(f"/api/v1/tokens/{token_id}", headers=await auth("admin"))
    assert resp.status == 204
    await _until_refused(other, h, within_s=1.0)


async def _read_event_stream_until_closed(
    server: TestClient, headers: dict[str, str], revoke: Any
) -> tuple[list[str], float]:
    lines: list[str] = []
    async with server.get("/api/v1/events", headers=headers) as stream:
        assert stream.status == 200
        lines.append((await stream.content.readline()).decode().strip())  # ": connected"
        await stream.content.readline()  # the blank line that ends it
        start = time.monotonic()
        await revoke()
        async with asyncio.timeout(3):
            while True:
                raw = await stream.content.readline()
                if not raw:  # the server ended the stream
                    break
                lines.append(raw.decode().strip())
        return lines, time.monotonic() - start


async def test_revoking_a_token_ends_its_open_event_stream_on_every_server(
    client: TestClient, other: TestClient, auth: Tok
) -> None:
    await _listening(other)
    token_id, h = await _new_token(client, auth)
    _, keep = await _new_token(client, auth)
    admin = await auth("admin")

    async def revoke() -> None:
        resp = await client.delete(f"/api/v1/tokens/{token_id}", headers=admin)
        assert resp.status == 204

    async with other.get("/api/v1/events", headers=keep) as kept:
        assert await kept.content.readline() == b": connected\n"
        assert await kept.content.readline() == b"\n"
        # the stream is held by the other server; the token is revoked through this one
        lines, took = await _read_event_stream_until_closed(other, h, revoke)
        assert lines[0] == ": connected"
        assert took < 1.5
        assert await _status(other, h) == 401
        # another token's stream stays open
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await kept.content.readline()
        assert not kept.content.at_eof()


async def test_revoking_a_token_ends_its_event_stream_on_the_revoking_server(
    client: TestClient, auth: Tok
) -> None:
    token_id, h = await _new_token(client, auth)
    admin = await auth("admin")

    async def revoke() -> None:
        resp = await client.delete(f"/api/v1/tokens/{token_id}", headers=admin)
        assert resp.status == 204

    lines, took = await _read_event_stream_until_closed(client, h, revoke)
    assert lines == [": connected"]
    assert took < 1.5
