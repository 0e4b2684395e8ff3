"""Frame diagnosis in the probe worker, on real streams from GStreamer's RTSP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from health.diagnosis import Thresholds
from health.frames import FrameSampler
from health.worker import Worker, WorkerConfig

from ..conftest import Tok, camera


@pytest.fixture(scope="module")
def sampler() -> Iterator[FrameSampler]:
    s = FrameSampler(processes=3)  # one capture per camera below: none waits for a later probe
    yield s
    s.close()


async def test_a_black_picture_makes_a_camera_degraded_and_a_normal_one_online(
    client: TestClient, auth: Tok, rtsp_server: str, sampler: FrameSampler
) -> None:
    h = await auth("admin")
    ids = {}
    for i, pattern in enumerate(("normal", "black", "udp-only")):
        body = camera(
            gb_id=f"1401050000132500{i:04d}", streams={"main": f"{rtsp_server}/{pattern}"}
        )
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        ids[pattern] = (await resp.json())["id"]
    pool = client.app[POOL]
    worker = Worker(
        pool,
        client.app[BOX],
        WorkerConfig(batch=10, sample_seconds=1.5, diagnose_every_s=0.0),
        sampler=sampler,
    )
    for _ in range(2):  # two faulty diagnoses confirm a picture fault, two oks make online
        await pool.execute("UPDATE camera_health SET next_probe_at = now()")
        assert await worker.run_once() == 3
    black = await (await client.get(f"/api/v1/cameras/{ids['black']}/health", headers=h)).json()
    normal = await (await client.get(f"/api/v1/cameras/{ids['normal']}/health", headers=h)).json()
    assert black["status"] == "degraded", black
    assert black["last_diagnosis"]["faults"] == ["signal_loss"]  # a black screen: 信号丢失
    assert normal["status"] == "online" and normal["last_diagnosis"]["fired"] == []
    assert normal["last_diagnosis"]["transport"] == "tcp"
    # A device refusing RTP over TCP is sampled over the default transport, and it says so.
    udp = await (await client.get(f"/api/v1/cameras/{ids['udp-only']}/health", headers=h)).json()
    assert udp["status"] == "online" and udp["last_diagnosis"]["transport"] == "default"
    snap = await client.get(f"/api/v1/cameras/{ids['normal']}/snapshot", headers=h)
    assert snap.status == 200 and snap.content_type == "image/jpeg"
    assert (await snap.read())[:2] == b"\xff\xd8"  # a JPEG


async def test_probes_never_queue_for_the_sampler_so_leases_do_not_expire(
    client: TestClient, auth: Tok, rtsp_server: str
) -> None:
    """Three cameras due for diagnosis, one capture process: each batch diagnoses one, records
    the protocol probe of all three (no lease lost), and the others stay due for later."""
    h = await auth("admin")
    ids = []
    for i in range(3):
        body = camera(gb_id=f"1401050000132510{i:04d}", streams={"main": f"{rtsp_server}/normal"})
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    pool = client.app[POOL]
    async with FrameSampler(processes=1) as one:
        worker = Worker(
            pool,
            client.app[BOX],
            WorkerConfig(batch=10, sample_seconds=1.0, lease_s=30),
            sampler=one,
        )
        for expected in (1, 2, 3):
            await pool.execute(
                """UPDATE camera_health SET next_probe_at = CASE WHEN camera_id = ANY($1::uuid[])
                   THEN now() ELSE now() + interval '1 hour' END""",
                ids,
            )
            assert await worker.run_once() == 3
            rows = await pool.fetch(
                """SELECT last_probe_at IS NOT NULL AS probed, last_diagnosis IS NOT NULL AS diag,
                          lease_owner FROM camera_health WHERE camera_id = ANY($1::uuid[])""",
                ids,
            )
            assert all(r["probed"] and r["lease_owner"] is None for r in rows)
            assert sum(r["diag"] for r in rows) == expected


async def test_a_frozen_slow_sub_stream_makes_a_camera_degraded(
    client: TestClient, auth: Tok, rtsp_server: str
) -> None:
    """A frozen 3 fps sub-stream: 2 s hold ~7 frames, so the worker asks the sampler for
    `frozen_frames + 2` of the deployment's thresholds (here 14 + 2 = 16) and reads on."""
    h = await auth("admin")
    body = camera(gb_id="14010500001325200000", streams={"main": f"{rtsp_server}/frozen-slow"})
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    cam = (await resp.json())["id"]
    pool = client.app[POOL]
    async with FrameSampler(processes=1, thresholds=Thresholds(frozen_frames=14)) as one:
        worker = Worker(
            pool,
            client.app[BOX],
            WorkerConfig(batch=10, sample_seconds=2.0, diagnose_every_s=0.0),
            sampler=one,
        )
        for _ in range(2):  # the second faulty diagnosis confirms the picture fault
            await pool.execute(
                "UPDATE camera_health SET next_probe_at = CASE WHEN camera_id = $1::uuid "
                "THEN now() ELSE now() + interval '1 hour' END",
                cam,
            )
            assert await worker.run_once() == 1
    health = await (await client.get(f"/api/v1/cameras/{cam}/health", headers=h)).json()
    diagnosis = health["last_diagnosis"]
    assert health["status"] == "degraded", health
    assert "frozen" in diagnosis["fired"] and diagnosis["extended"] is True
    assert diagnosis["frames"] == 16


async def test_a_long_frozen_run_threshold_keeps_enough_frames(
    client: TestClient, auth: Tok, rtsp_server: str
) -> None:
    """A deployment asking for a frozen run of 24 frames: the sampler keeps 26 of the 30 a 2 s
    window holds at 15 fps instead of thinning them to 20, where no run of 24 could exist."""
    h = await auth("admin")
    body = camera(gb_id="14010500001325200001", streams={"main": f"{rtsp_server}/frozen"})
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    cam = (await resp.json())["id"]
    pool = client.app[POOL]
    async with FrameSampler(processes=1, thresholds=Thresholds(frozen_frames=24)) as one:
        worker = Worker(
            pool,
            client.app[BOX],
            WorkerConfig(batch=10, sample_seconds=2.0, diagnose_every_s=0.0),
            sampler=one,
        )
        await pool.execute(
            "UPDATE camera_health SET next_probe_at = CASE WHEN camera_id = $1::uuid "
            "THEN now() ELSE now() + interval '1 hour' END",
            cam,
        )
        assert await worker.run_once() == 1
    health = await (await client.get(f"/api/v1/cameras/{cam}/health", headers=h)).json()
    diagnosis = health["last_diagnosis"]
    assert diagnosis["frames"] >= 26, diagnosis
    assert "frozen" in diagnosis["fired"], diagnosis
