"""Daily availability and KPIs over a date range, on a hand-computed history.

Transitions are recorded through `store.record` (the worker's own path) at constructed
timestamps in China's local time, so every expected second below can be checked by hand.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from health import store
from health.status import CameraState, Status, Transition, availability_seconds

from ..conftest import Tok, camera

CST = ZoneInfo("Asia/Shanghai")
DAY = 86_400.0
HOUR = 3_600.0
REGION = "140107"  # 杏花岭区: used by no other test of this module
MIGRATION = (
    Path(store.__file__).parent.parent / "camera_registry/store/migrations/0006_availability.sql"
)


def cst(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, tzinfo=CST)


async def _camera(
    client: TestClient, auth: Tok, serial: int, created: dt.datetime, level: int = 2
) -> str:
    body = camera(
        gb_id=f"{REGION}00001320{serial:06d}",
        level=level,
        record_days=90,
        streams={"main": "rtsp://127.0.0.1:9/h264"},
    )
    resp = await client.post("/api/v1/cameras", json=body, headers=await auth("admin"))
    assert resp.status == 201, await resp.text()
    cam_id = str((await resp.json())["id"])
    await client.app[POOL].execute(
        "UPDATE cameras SET created_at = $2 WHERE id = $1", uuid.UUID(cam_id), created
    )
    return cam_id


async def _history(
    client: TestClient, cam_id: str, steps: list[tuple[Status, dt.datetime]]
) -> None:
    """Record each (new status, at) as a transition, the way a worker does."""
    pool, box = client.app[POOL], client.app[BOX]
    old: Status = "unknown"
    for new, at in steps:
        lease = await store.lease_one(pool, box, "t-hist", uuid.UUID(cam_id), 60)
        assert lease is not None
        ts = at.timestamp()
        kept = await store.record(
            pool,
            "t-hist",
            lease,
            state=CameraState(
                status=new,
                since=ts,
                settled="online" if new in ("flapping", "degraded") else new,
                picture="faulty" if new == "degraded" else "clean",
            ),
            transition=Transition(old=old, new=new, at=ts, reason="scripted"),
            probe={"ok": new != "offline"},
            failures=0,
            next_in_s=3600,
        )
        assert kept
        old = new


@pytest.fixture(scope="module")
async def history(client: TestClient, auth: Tok) -> dict[str, str]:
    """A: changes often; B: online since the 1st, never again; C: registered mid-period, level 1,
    never probed."""
    a = await _camera(client, auth, 1, cst(1))
    b = await _camera(client, auth, 2, cst(1))
    c = await _camera(client, auth, 3, cst(4, 12), level=1)
    await _history(
        client,
        a,
        [
            ("online", cst(1, 6)),
            ("offline", cst(3, 12)),
            ("online", cst(3, 18)),
            ("degraded", cst(5)),
            ("flapping", cst(5, 12)),
            ("online", cst(6)),
        ],
    )
    await _history(client, b, [("online", cst(1, 6))])
    return {"a": a, "b": b, "c": c}


async def test_period_kpis_count_open_intervals_and_late_registrations(
    client: TestClient, auth: Tok, history: dict[str, str]
) -> None:
    h = await auth("planner")
    url = f"/api/v1/kpis?region={REGION}&group=6&from=2026-11-02&to=2026-11-05"
    body = await (await client.get(url, headers=h)).json()
    assert body["timezone"] == "Asia/Shanghai"
    assert dt.datetime.fromisoformat(body["period_start"]) == cst(2)
    assert dt.datetime.fromisoformat(body["period_end"]) == cst(6)
    (row,) = body["items"]
    # A: 2nd online; 3rd 18 h online + 6 h offline; 4th online; 5th 12 h degraded + 12 h flapping.
    # B: online all four days from its open interval. C: exposure from the 4th 12:00 only.
    camera_s = 4 * DAY * 2 + 36 * HOUR
    online_s = (DAY + 18 * HOUR + DAY) + 4 * DAY
    assert row["registered"] == 3
    assert row["camera_seconds"] == pytest.approx(camera_s)
    assert row["online_seconds"] == pytest.approx(online_s)
    assert row["degraded_seconds"] == pytest.approx(12 * HOUR)
    assert row["flapping_seconds"] == pytest.approx(12 * HOUR)
    assert row["offline_seconds"] == pytest.approx(6 * HOUR)
    assert row["online_rate"] == pytest.approx((online_s + 12 * HOUR) / camera_s)
    assert row["intact_rate"] == pytest.approx(online_s / camera_s)
    assert row["flapping_share"] == pytest.approx(12 * HOUR / camera_s)
    assert row["networked"] == 2 and row["networked_rate"] == pytest.approx(2 / 3)
    assert row["meets_target"] is None  # not split by level


async def test_period_kpis_by_level_and_level_filter(
    client: TestClient, auth: Tok, history: dict[str, str]
) -> None:
    h = await auth("commander", "1401")
    base = f"/api/v1/kpis?region={REGION}&group=6&from=2026-11-02&to=2026-11-05"
    rows = (await (await client.get(base + "&by_level=1", headers=h)).json())["items"]
    assert [(r["level"], r["registered"]) for r in rows] == [(1, 1), (2, 2)]
    level1, level2 = rows
    assert level1["online_rate"] == 0.0 and level1["camera_seconds"] == pytest.approx(36 * HOUR)
    assert level1["meets_target"] is False
    assert level2["camera_seconds"] == pytest.approx(8 * DAY)
    only1 = (await (await client.get(base + "&level=1", headers=h)).json())["items"]
    assert [(r["level"], r["registered"]) for r in only1] == [(None, 1)]
    # Snapshot with the same level filter: C is the only level-1 camera, still unknown.
    now = await (await client.get(f"/api/v1/kpis?region={REGION}&level=1", headers=h)).json()
    assert [(r["registered"], r["unknown"]) for r in now["items"]] == [(1, 1)]


async def test_period_reaching_today_ends_now(
    client: TestClient, auth: Tok, history: dict[str, str]
) -> None:
    h = await auth("planner")
    url = f"/api/v1/kpis?region={REGION}&group=6&from=2026-11-07&to=2027-11-06"
    body = await (await client.get(url, headers=h)).json()
    start = dt.datetime.fromisoformat(body["period_start"])
    end = dt.datetime.fromisoformat(body["period_end"])
    assert start == cst(7) and end <= dt.datetime.now(dt.UTC)
    (row,) = body["items"]
    # A and B have been online since before the 7th: every second up to now counts.
    assert row["online_seconds"] == pytest.approx(2 * (end - start).total_seconds())
    assert row["camera_seconds"] == pytest.approx(3 * (end - start).total_seconds())


async def test_a_camera_stays_online_without_transitions_for_the_whole_range(
    client: TestClient, auth: Tok, history: dict[str, str]
) -> None:
    h = await auth("planner")
    url = f"/api/v1/cameras/{history['b']}/availability?from=2026-10-31&to=2026-11-03"
    body = await (await client.get(url, headers=h)).json()
    days = [
        (d["date"], d["observed_seconds"], d["online_seconds"], d["share"]) for d in body["days"]
    ]
    # Not registered on the 31st: left out, not counted as offline.
    assert days == [
        ("2026-11-01", DAY, 18 * HOUR, 0.75),
        ("2026-11-02", DAY, DAY, 1.0),
        ("2026-11-03", DAY, DAY, 1.0),
    ]


async def test_daily_rows_of_a_changing_camera(
    client: TestClient, auth: Tok, history: dict[str, str]
) -> None:
    h = await auth("technician", "1401")
    url = f"/api/v1/cameras/{history['a']}/availability?from=2026-11-01&to=2026-11-06"
    days = (await (await client.get(url, headers=h)).json())["days"]
    got = [
        (
            d["date"],
            d["online_seconds"],
            d["degraded_seconds"],
            d["flapping_seconds"],
            d["offline_seconds"],
            d["share"],
        )
        for d in days
    ]
    assert got == [
        ("2026-11-01", 18 * HOUR, 0, 0, 0, 0.75),  # the first 6 h were unknown
        ("2026-11-02", DAY, 0, 0, 0, 1.0),
        ("2026-11-03", 18 * HOUR, 0, 0, 6 * HOUR, 0.75),
        ("2026-11-04", DAY, 0, 0, 0, 1.0),
        ("2026-11-05", 0, 12 * HOUR, 12 * HOUR, 0, 0.5),  # degraded is on line, flapping not
        ("2026-11-06", DAY, 0, 0, 0, 1.0),  # the open interval, counted up to now
    ]


async def test_the_migration_backfill_gives_the_rows_the_worker_path_wrote(
    client: TestClient, history: dict[str, str]
) -> None:
    pool = client.app[POOL]
    query = "SELECT * FROM camera_availability ORDER BY camera_id, day"
    live = [dict(r) for r in await pool.fetch(query)]
    assert live
    sql = MIGRATION.read_text()
    backfill = sql[sql.index("INSERT INTO camera_availability") :]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM camera_availability")
        await conn.execute(backfill)
        rebuilt = [dict(r) for r in await conn.fetch(query)]
    assert [(r["camera_id"], r["day"]) for r in rebuilt] == [
        (r["camera_id"], r["day"]) for r in live
    ]
    for a, b in zip(rebuilt, live, strict=True):
        for col in ("online_s", "degraded_s", "flapping_s", "offline_s", "unknown_s"):
            assert a[col] == pytest.approx(b[col]), (a, col)


async def test_the_health_answer_shows_flapping(client: TestClient, auth: Tok) -> None:
    cam = await _camera(client, auth, 4, cst(1))
    await _history(client, cam, [("online", cst(1, 6)), ("flapping", cst(2))])
    h = await auth("planner")
    health = await (await client.get(f"/api/v1/cameras/{cam}/health", headers=h)).json()
    assert health["status"] == "flapping"
    assert health["flapping"]["active"] is True
    assert health["flapping"]["settled_status"] == "online"
    snapshot = await (await client.get(f"/api/v1/kpis?region={REGION}&group=6", headers=h)).json()
    assert snapshot["items"][0]["flapping"] == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=2026-11-01", "to"),
        ("to=2026-11-01", "from"),
        ("from=2026-13-01&to=2026-11-02", "from"),
        ("from=20261101&to=2026-11-02", "from"),
        ("from=2026-W44-1&to=2026-11-02", "from"),
        ("from=2026-11-01&to=yesterday", "to"),
        ("from=2026-11-05&to=2026-11-01", "to"),
        ("from=2025-01-01&to=2026-01-02", "to"),  # 367 days
        ("from=2026-11-01&to=2026-11-02&level=5", "level"),
    ],
)
async def test_bad_ranges_are_problems_naming_the_field(
    client: TestClient, auth: Tok, query: str, field: str
) -> None:
    h = await auth("planner")
    resp = await client.get(f"/api/v1/kpis?{query}", headers=h)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    assert field in [e["field"] for e in (await resp.json())["errors"]]


async def test_availability_needs_a_range_and_accepts_a_leap_year(
    client: TestClient, auth: Tok, history: dict[str, str]
) -> None:
    h = await auth("planner")
    base = f"/api/v1/cameras/{history['a']}/availability"
    resp = await client.get(base, headers=h)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    assert (await resp.json())["errors"][0]["field"] == "from"
    resp = await client.get(base + "?from=2024-01-01&to=2024-12-31", headers=h)  # 366 days
    assert resp.status == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", (await resp.json())["to"])


async def test_metrics_show_cameras_by_status_and_leases_outstanding(
    client: TestClient, history: dict[str, str]
) -> None:
    pool, box = client.app[POOL], client.app[BOX]
    held = await store.lease_one(pool, box, "t-metrics", uuid.UUID(history["c"]), 60)
    assert held is not None
    try:
        text = await (await client.get("/metrics")).text()
    finally:
        await pool.execute(
            "UPDATE camera_health SET lease_owner = NULL, lease_until = NULL WHERE camera_id = $1",
            held.camera_id,
        )
    counts = dict(await pool.fetch("SELECT status, count(*)::float8 FROM cameras GROUP BY status"))
    for status in ("online", "degraded", "offline", "unknown", "flapping"):
        assert f'camreg_cameras{{status="{status}"}} {counts.get(status, 0.0)}' in text
    assert "camreg_leases_outstanding 1.0" in text
    assert "camreg_probes_total" in text or "camreg_probe_duration_seconds" in text


async def test_stored_availability_equals_the_status_module_on_a_random_history(
    client: TestClient, auth: Tok
) -> None:
    """The SQL day-splitting and open-interval arithmetic against `availability_seconds`, the
    pure reference, on 40 random transitions over two weeks (fixed seed)."""
    rng = random.Random(20261127)
    body = camera(gb_id="14010800001320000001", streams={"main": "rtsp://127.0.0.1:9/x"})
    resp = await client.post("/api/v1/cameras", json=body, headers=await auth("admin"))
    cam = str((await resp.json())["id"])
    await client.app[POOL].execute(
        "UPDATE cameras SET created_at = $2 WHERE id = $1", uuid.UUID(cam), cst(8)
    )
    lo, hi = cst(8).timestamp(), cst(20).timestamp()
    times = sorted(rng.uniform(lo, hi) for _ in range(40))
    steps: list[tuple[Status, dt.datetime]] = []
    transitions: list[Transition] = []
    old: Status = "unknown"
    for t in times:
        choices: list[Status] = ["online", "degraded", "offline", "flapping"]
        new = rng.choice([s for s in choices if s != old])
        steps.append((new, dt.datetime.fromtimestamp(t, CST)))
        transitions.append(Transition(old, new, t, "random"))
        old = new
    await _history(client, cam, steps)
    h = await auth("planner")
    for first, last in (("2026-11-10", "2026-11-15"), ("2026-11-19", "2026-11-24")):
        url = f"/api/v1/kpis?region=140108&group=6&from={first}&to={last}"
        got = await (await client.get(url, headers=h)).json()
        start = dt.datetime.fromisoformat(got["period_start"]).timestamp()
        end = dt.datetime.fromisoformat(got["period_end"]).timestamp()
        want = availability_seconds(transitions, start, end, "unknown")
        (row,) = got["items"]
        for status in ("online", "degraded", "offline", "flapping"):
            assert row[f"{status}_seconds"] == pytest.approx(want[status], abs=1e-3), status
        daily = await (
            await client.get(
                f"/api/v1/cameras/{cam}/availability?from={first}&to={last}", headers=h
            )
        ).json()
        assert sum(d["online_seconds"] for d in daily["days"]) == pytest.approx(
            want["online"], abs=1e-2
        )
