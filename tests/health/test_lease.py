"""Leasing without one lock for all workers: concurrent leases never exceed a host's cap, and
a worker's `LeaseCursor` resumes its scan of the due queue where the last one ended, yet no
due camera is ever left behind it (cameras skipped for a capped host, cameras made due behind
it, and expired leases are all leased again)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from health import store
from health.status import initial_state

from ..conftest import Tok, camera


async def _cameras(client: TestClient, auth: Tok, hosts: list[str], start: int) -> list[str]:
    """Cameras on `hosts` (one each), due one second apart in this order; all others later."""
    h = await auth("admin")
    ids = []
    for i, host in enumerate(hosts):
        body = camera(
            gb_id=f"14010500001326{start + i:06d}", streams={"main": f"rtsp://{host}/ch{i}"}
        )
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    await client.app[POOL].execute(
        """UPDATE camera_health SET next_probe_at = CASE WHEN camera_id = ANY($1::uuid[])
               THEN now() - make_interval(secs => 100 - array_position($1::uuid[], camera_id))
               ELSE now() + interval '1 hour' END""",
        ids,
    )
    return ids


async def _release(client: TestClient, owner: str, leases: list[store.Lease]) -> None:
    """Store a result for each lease: the camera is next due in 900 s."""
    records = [
        store.ProbeRecord(le, initial_state(0.0), None, {"ok": True}, 0, 900) for le in leases
    ]
    assert all(await store.record_many(client.app[POOL], owner, records))


async def test_cameras_of_a_capped_host_are_not_passed_by_the_cursor(
    client: TestClient, auth: Tok
) -> None:
    pool, box = client.app[POOL], client.app[BOX]
    # An NVR's four channels first, then six cameras of their own: every page is full, so
    # nothing but the cursor decides where each round starts.
    ids = await _cameras(client, auth, ["10.9.0.1"] * 4 + [f"10.9.0.{i}" for i in range(2, 8)], 100)
    cursor = store.LeaseCursor(sweep_s=3600)
    rounds = []
    for _ in range(3):
        got = await store.lease(pool, box, "w-c", batch=3, lease_s=60, per_host=2, cursor=cursor)
        rounds.append(sorted(str(le.camera_id) for le in got))
        await _release(client, "w-c", got)
    # Two of the NVR's channels in the first round (its cap), the two left in the second.
    assert rounds == [
        sorted([ids[0], ids[1], ids[4]]),
        sorted([ids[2], ids[3], ids[5]]),
        sorted(ids[6:9]),
    ]


async def test_a_camera_made_due_behind_the_cursor_is_leased_when_the_queue_ahead_runs_dry(
    client: TestClient, auth: Tok
) -> None:
    pool, box = client.app[POOL], client.app[BOX]
    ids = await _cameras(client, auth, [f"10.9.1.{i}" for i in range(1, 5)], 200)
    cursor = store.LeaseCursor(sweep_s=3600)  # only a short page sends it back to the head
    first = await store.lease(pool, box, "w-d", batch=2, lease_s=60, cursor=cursor)
    assert sorted(str(le.camera_id) for le in first) == sorted(ids[0:2])
    await _release(client, "w-d", first)
    # An operator puts the first camera back a day: behind the cursor, which is at camera 2.
    await pool.execute(
        "UPDATE camera_health SET next_probe_at = now() - interval '1 day' WHERE camera_id = $1",
        ids[0],
    )
    second = await store.lease(pool, box, "w-d", batch=2, lease_s=60, cursor=cursor)
    assert sorted(str(le.camera_id) for le in second) == sorted(ids[2:4])
    third = await store.lease(pool, box, "w-d", batch=2, lease_s=60, cursor=cursor)
    assert [str(le.camera_id) for le in third] == ids[0:1]


async def test_an_expired_lease_is_due_again_ahead_of_every_cursor(
    client: TestClient, auth: Tok
) -> None:
    pool, box = client.app[POOL], client.app[BOX]
    ids = await _cameras(client, auth, [f"10.9.2.{i}" for i in range(1, 4)], 300)
    dead = await store.lease(pool, box, "w-dead", batch=1, lease_s=0.5)  # its worker dies
    assert [str(le.camera_id) for le in dead] == ids[0:1]
    cursor = store.LeaseCursor(sweep_s=3600)
    heir = await store.lease(pool, box, "w-heir", batch=2, lease_s=60, cursor=cursor)
    assert sorted(str(le.camera_id) for le in heir) == sorted(ids[1:3])  # cursor past camera 0
    await _release(client, "w-heir", heir)
    await asyncio.sleep(0.6)
    again = await store.lease(pool, box, "w-heir", batch=2, lease_s=60, cursor=cursor)
    assert [str(le.camera_id) for le in again] == ids[0:1]


async def test_concurrent_leases_never_exceed_a_hosts_cap(client: TestClient, auth: Tok) -> None:
    pool, box = client.app[POOL], client.app[BOX]
    ids = await _cameras(client, auth, ["10.9.3.1"] * 12, 400)
    for _ in range(3):
        # Six workers at once, each taking a different slice of the NVR's channels.
        got = await asyncio.gather(
            *(store.lease(pool, box, f"w-{i}", batch=2, lease_s=60, per_host=2) for i in range(6))
        )
        live = await pool.fetchval(
            """SELECT count(*) FROM camera_health
               WHERE camera_id = ANY($1::uuid[]) AND lease_until > now()""",
            ids,
        )
        assert sum(len(g) for g in got) == live == 2
        for i, g in enumerate(got):
            await _release(client, f"w-{i}", g)
