"""`record_many` stores a batch with one set-based UPDATE: each record still keeps only its own
lease's result, and transitions and diagnoses of lost leases are not stored."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from health import store
from health.status import Status, Transition

from ..conftest import Tok, camera


async def _cameras(client: TestClient, auth: Tok, n: int, start: int) -> list[str]:
    h = await auth("admin")
    ids = []
    for i in range(n):
        body = camera(
            gb_id=f"14010500001325{start + i:06d}", streams={"main": f"rtsp://10.7.0.{i + 1}/m"}
        )
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    await client.app[POOL].execute(
        """UPDATE camera_health SET next_probe_at = CASE
               WHEN camera_id = ANY($1::uuid[]) THEN now() ELSE now() + interval '1 hour' END""",
        ids,
    )
    return ids


async def test_a_batch_with_a_lost_lease_stores_the_others_and_none_of_the_lost_ones_extras(
    client: TestClient, auth: Tok
) -> None:
    pool = client.app[POOL]
    ids = await _cameras(client, auth, 4, 7000)
    leases = await store.lease(pool, client.app[BOX], "w-1", batch=10, lease_s=60)
    assert sorted(str(le.camera_id) for le in leases) == sorted(ids)
    by_id = {str(le.camera_id): le for le in leases}
    now = time.time()

    def rec(cid: str, *, new: Status | None = None, diag: bool = False) -> store.ProbeRecord:
        le = by_id[cid]
        tr = Transition(old="unknown", new=new, at=now, reason="test") if new else None
        return store.ProbeRecord(
            lease=le,
            state=le.state,
            transition=tr,
            probe={"ok": new != "offline", "note": "探测"},
            failures=3 if new == "offline" else 0,
            next_in_s=900,
            diagnosis={"faulty": False} if diag else None,
        )

    # camera 0's lease was taken over by another worker while the batch probed
    await pool.execute("UPDATE camera_health SET lease_owner = 'w-2' WHERE camera_id = $1", ids[0])
    records = [
        rec(ids[0], new="offline", diag=True),
        rec(ids[1], new="offline"),
        rec(ids[2], diag=True),
        rec(ids[3]),
    ]
    assert await store.record_many(pool, "w-1", records) == [False, True, True, True]
    rows = {
        str(r["camera_id"]): r
        for r in await pool.fetch(
            """SELECT h.camera_id, h.lease_owner, h.last_probe, h.failures,
                      h.last_diagnosis IS NOT NULL AS diagnosed, c.status,
                      h.next_probe_at - now() > interval '800 seconds' AS rescheduled
               FROM camera_health h JOIN cameras c ON c.id = h.camera_id
               WHERE h.camera_id = ANY($1::uuid[])""",
            ids,
        )
    }
    lost = rows[ids[0]]
    assert lost["lease_owner"] == "w-2" and lost["last_probe"] is None
    assert not lost["diagnosed"] and lost["status"] == "unknown"
    assert rows[ids[1]]["status"] == "offline" and rows[ids[1]]["failures"] == 3
    assert rows[ids[1]]["last_probe"] == {"ok": False, "note": "探测"}
    assert rows[ids[2]]["diagnosed"] and not rows[ids[3]]["diagnosed"]
    assert all(rows[c]["lease_owner"] is None and rows[c]["rescheduled"] for c in ids[1:])
    transitions = await pool.fetch(
        "SELECT camera_id::text AS c FROM status_transitions WHERE camera_id = ANY($1::uuid[])",
        ids,
    )
    assert [t["c"] for t in transitions] == [ids[1]]


async def test_the_same_camera_twice_in_a_batch_keeps_only_the_first_result(
    client: TestClient, auth: Tok
) -> None:
    pool = client.app[POOL]
    ids = await _cameras(client, auth, 1, 7100)
    (le,) = await store.lease(pool, client.app[BOX], "w-3", batch=10, lease_s=60)
    first = store.ProbeRecord(le, le.state, None, {"n": 1}, 0, 900)
    second = store.ProbeRecord(le, le.state, None, {"n": 2}, 0, 900)
    assert await store.record_many(pool, "w-3", [first, second]) == [True, False]
    probe = await pool.fetchval(
        "SELECT last_probe FROM camera_health WHERE camera_id = $1", le.camera_id
    )
    assert probe == {"n": 1} and str(le.camera_id) == ids[0]
