"""视频质量诊断 driving camera status, end to end: GStreamer cameras registered through the API
and left to the probe scheduler end `degraded` with the right flag; the clean one stays
`online`; a fault that goes away clears; 完好率 counts the degraded seconds; a technician's
diagnosis on demand returns the report and a thumbnail and accepts the scene reference."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL, WORKER
from health.diagnosis import CHECKS, Thresholds
from health.frames import FrameSampler
from health.reference import decode_reference
from health.status import StatusPolicy
from health.worker import Worker, WorkerConfig

from ..conftest import Tok, camera

# mount -> the flag its camera must end degraded with
FAULTY = {
    "frozen": "frozen",
    "scene-snow": "noise",
    "scene-blue": "signal_loss",
    "scene-blur": "blur",
    "scene-dark": "too_dark",
    "scene-bright": "too_bright",
    "scene-stripes": "stripes",
    "scene-shake": "shake",
}
# Cameras whose fault appears after the reference was accepted on the clean scene (a cast is
# judged against the accepted colours: a camera installed with one would have it accepted).
LATER = {"scene-occluded": "occlusion", "scene-turned": "scene_change", "scene-cast": "colour_cast"}


@pytest.fixture(scope="module")
async def sampler() -> AsyncIterator[FrameSampler]:
    # One capture process per camera: the scheduler never queues for the sampler.
    async with FrameSampler(processes=6, thresholds=Thresholds(faults=CHECKS)) as s:
        yield s


async def _register(client: TestClient, h: dict[str, str], serial: int, uri: str) -> str:
    body = camera(
        gb_id=f"140105000013253{serial:05d}", level=1, record_days=90, streams={"main": uri}
    )
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def _health(client: TestClient, h: dict[str, str], cam: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/cameras/{cam}/health", headers=h)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_the_scheduler_makes_faulty_cameras_degraded_and_keeps_the_clean_one_online(
    client: TestClient, auth: Tok, rtsp_server: str, sampler: FrameSampler
) -> None:
    admin, tech = await auth("admin"), await auth("technician")
    pool = client.app[POOL]
    ids = {"scene": await _register(client, admin, 1, f"{rtsp_server}/scene")}
    for i, mount in enumerate(FAULTY, start=2):
        ids[mount] = await _register(client, admin, i, f"{rtsp_server}/{mount}")
    for i, mount in enumerate(LATER, start=20):
        ids[mount] = await _register(client, admin, i, f"{rtsp_server}/scene")

    # Installation: the technician diagnoses the clean view and accepts it as the reference.
    app_worker = client.app[WORKER]
    app_worker.sampler = sampler
    try:
        for mount in LATER:
            started = time.monotonic()
            resp = await client.post(
                f"/api/v1/cameras/{ids[mount]}/diagnose?accept_reference=1", headers=tech
            )
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert time.monotonic() - started < 15  # the sample window plus a few seconds
            assert body["diagnosed"] and body["reference_accepted"]
            assert body["report"]["fired"] == [], body["report"]
            assert body["thumbnail"].startswith("data:image/jpeg;base64,")
            assert body["report"]["flags"]["scene_change"]["label"] == "场景变更"
            assert body["reference"]["source"] == "accepted"
    finally:
        app_worker.sampler = None
    # Then someone covers one and knocks the other round.
    for mount in LATER:
        resp = await client.patch(
            f"/api/v1/cameras/{ids[mount]}",
            json={"streams": {"main": f"{rtsp_server}/{mount}"}},
            headers={**admin, "If-Match": '"1"'},
        )
        assert resp.status == 200, await resp.text()

    # New cameras are scheduled at a random moment of the next minutes (no herd at import);
    # these are due now.
    await pool.execute(
        "UPDATE camera_health SET next_probe_at = now() WHERE camera_id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids.values()],
    )
    worker = Worker(
        pool,
        client.app[BOX],
        WorkerConfig(
            batch=20,
            sample_seconds=1.5,
            interval_level1_s=1.0,
            interval_s=1.0,
            jitter=0.0,
            diagnose_every_s=5.0,  # the daily turn, compressed: the LATER faults are seen
        ),
        policy=StatusPolicy(recheck_s=1.0),
        sampler=sampler,
    )
    expected = {**FAULTY, **LATER}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await worker.run_once()
        statuses = {m: (await _health(client, admin, ids[m]))["status"] for m in ids}
        if all(statuses[m] == "degraded" for m in expected) and statuses["scene"] == "online":
            break
        await asyncio.sleep(0.5)
    for mount, flag in expected.items():
        health = await _health(client, admin, ids[mount])
        diagnosis = health["last_diagnosis"]
        assert diagnosis is not None, (mount, health["status"], health["last_probe"])
        assert health["status"] == "degraded", (
            mount,
            health["status"],
            {k: diagnosis["flags"][k]["value"] for k in ("occlusion", "scene_change", "too_dark")},
            health["reference"],
        )
        assert flag in diagnosis["faults"], (mount, diagnosis["fired"])
        assert health["picture"] == {
            "state": "faulty",
            "faults": diagnosis["faults"],
            "recheck_at": None,
        }
    clean = await _health(client, admin, ids["scene"])
    assert clean["status"] == "online"
    assert clean["reference"]["source"] == "first_clean"  # its first clean picture
    # The accepted reference keeps that sample's baseline with its picture.
    for cam in (ids["scene"], ids["scene-occluded"]):
        stored = await pool.fetchval(
            "SELECT reference FROM camera_health WHERE camera_id = $1", uuid.UUID(cam)
        )
        picture, baseline = decode_reference(stored)
        assert picture is not None and baseline is not None, cam
        assert baseline.contrast > 0
    # The history says why: confirmed by the second faulty diagnosis.
    reason = await pool.fetchval(
        "SELECT reason FROM status_transitions WHERE camera_id = $1 AND new = 'degraded'",
        uuid.UUID(ids["frozen"]),
    )
    assert "confirmed by 2 faulty diagnoses" in reason and "frozen" in reason

    # The frozen camera is repaired: the next probe's diagnosis clears it.
    resp = await client.patch(
        f"/api/v1/cameras/{ids['frozen']}",
        json={"streams": {"main": f"{rtsp_server}/scene"}},
        headers={**admin, "If-Match": '"1"'},
    )
    assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await worker.run_once()
        if (await _health(client, admin, ids["frozen"]))["status"] == "online":
            break
        await asyncio.sleep(0.5)
    repaired = await _health(client, admin, ids["frozen"])
    assert repaired["status"] == "online", repaired["last_diagnosis"]

    # 完好率 over today counts the degraded seconds: intact is below on line.
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    resp = await client.get(f"/api/v1/kpis?region=140105&from={today}&to={today}", headers=admin)
    assert resp.status == 200, await resp.text()
    (row,) = (await resp.json())["items"]
    assert row["degraded_seconds"] > 0
    assert row["intact_rate"] < row["online_rate"]
