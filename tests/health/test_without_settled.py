"""`without_settled` drops exactly the ``ok`` observations the status machine would not act
on: those repeating the last observation of a camera settled online whose flap window holds
only unchanged ``ok``s, full or not. Anything that could move a status is kept."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from api.state import POOL
from health.status import Outcome
from health.store import observe_many, without_settled

from ..conftest import Tok, camera

KA = "keepalive; channel ON"


async def _camera(client: TestClient, auth: Tok, n: int) -> uuid.UUID:
    body = camera(gb_id=f"14010500001325{n:06d}", streams={"main": f"rtsp://10.9.0.{n % 250}/m"})
    resp = await client.post("/api/v1/cameras", json=body, headers=await auth("admin"))
    assert resp.status == 201, await resp.text()
    return uuid.UUID((await resp.json())["id"])


async def _state(client: TestClient, cid: uuid.UUID) -> Any:
    return await client.app[POOL].fetchrow(
        "SELECT state, last_probe_at AS at FROM camera_health WHERE camera_id = $1", cid
    )


def _but_window(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("ok_streak", "recent", "changes")}


async def test_only_no_ops_are_dropped(client: TestClient, auth: Tok) -> None:
    pool = client.app[POOL]
    short, flipped, other, fresh = [await _camera(client, auth, 8100 + i) for i in range(4)]
    await observe_many(pool, [(short, "ok", KA)] * 2)  # settled online, window of 2
    await observe_many(pool, [(flipped, o, KA) for o in ("ok", "ok", "fail", "ok", "ok", "ok")])
    await observe_many(pool, [(other, "ok", "registered; channel ON")] * 2)
    await observe_many(pool, [(fresh, "ok", KA)])  # one ok: not yet online
    obs: list[tuple[uuid.UUID, Outcome, str]] = [
        (c, "ok", KA) for c in (short, flipped, other, fresh)
    ] + [(short, "fail", KA)]
    kept = await without_settled(pool, obs)
    # `short` has a failure among this batch's observations: kept whole, in order
    assert kept == [(c, "ok", KA) for c in (short, flipped, other, fresh)] + [(short, "fail", KA)]
    kept = await without_settled(pool, obs[:4])
    assert [c for c, _, _ in kept] == [flipped, other, fresh]
    # what is dropped would have changed nothing but the ok streak and the window's length
    before = await _state(client, short)
    await observe_many(pool, [(short, "ok", KA)])
    after = await _state(client, short)
    assert _but_window(after["state"]) == _but_window(before["state"])


async def test_a_settled_row_past_the_freshness_bound_is_touched_not_stepped(
    client: TestClient, auth: Tok
) -> None:
    pool = client.app[POOL]
    cid = await _camera(client, auth, 8200)
    await observe_many(pool, [(cid, "ok", KA)] * 2)
    await pool.execute(
        "UPDATE camera_health SET last_probe_at = now() - interval '1 hour' WHERE camera_id = $1",
        cid,
    )
    stale = await _state(client, cid)
    assert await without_settled(pool, [(cid, "ok", KA)], fresh_s=180) == []
    touched = await _state(client, cid)
    assert touched["state"] == stale["state"]
    assert touched["at"] > stale["at"]
    # within the bound nothing is written at all
    version = await pool.fetchval("SELECT xmin::text FROM camera_health WHERE camera_id = $1", cid)
    assert await without_settled(pool, [(cid, "ok", KA)], fresh_s=180) == []
    assert (
        await pool.fetchval("SELECT xmin::text FROM camera_health WHERE camera_id = $1", cid)
        == version
    )
