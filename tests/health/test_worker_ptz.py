"""云台失控 end to end: a fake ONVIF PTZ device (a real HTTP server on loopback, real SOAP)
whose RelativeMove pans what a real GStreamer RTSP mount shows, diagnosed by the worker with
the composition's ONVIF mover: a head that moves raises no flag, a stuck one is `ptz_stuck`,
and every camera is moved back where it was."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.ptz import onvif_ptz_mover
from api.state import BOX, POOL
from health.diagnosis import DEFAULT_FAULTS, PTZ_CHECK, Thresholds
from health.frames import FrameSampler
from health.worker import Worker, WorkerConfig

from ..conftest import Tok, camera
from ..ingest.fake_onvif import FakeCamera, FakeOnvifServer

PAN = 0.05
THRESHOLDS = Thresholds(ptz_check=True, ptz_pan=PAN, ptz_settle_s=0.2,
                        faults=(*DEFAULT_FAULTS, PTZ_CHECK))  # fmt: skip


@pytest.fixture(scope="module")
async def sampler() -> AsyncIterator[FrameSampler]:
    async with FrameSampler(processes=2, thresholds=THRESHOLDS) as s:
        yield s


async def _register(
    client: TestClient, h: dict[str, str], serial: int, uri: str, onvif_port: int, password: str
) -> uuid.UUID:
    body = camera(
        gb_id=f"140105000013254{serial:05d}",
        streams={"main": uri},
        ip="127.0.0.1",
        onvif_port=onvif_port,
        username="admin",
        password=password,
    )
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    return uuid.UUID((await resp.json())["id"])


async def _interrogated(client: TestClient, camera_id: uuid.UUID, port: int, ptz: bool) -> None:
    """What a discovery scan leaves behind for a registered device: its inbox row."""
    await client.app[POOL].execute(
        "INSERT INTO discovered_devices (endpoint, address, port, found_by, status, ptz, "
        "camera_id) VALUES ($1, '127.0.0.1', $2, 'test', 'registered', $3, $4)",
        f"http://127.0.0.1:{port}",
        port,
        ptz,
        camera_id,
    )


def _worker(client: TestClient, sampler: FrameSampler) -> Worker:
    worker = Worker(
        client.app[POOL], client.app[BOX], WorkerConfig(sample_seconds=1.5), sampler=sampler
    )
    worker.ptz_mover = onvif_ptz_mover(client.app[POOL], client.app[BOX])
    return worker


async def test_a_moving_head_is_clean_a_stuck_one_is_ptz_stuck_and_both_are_moved_back(
    client: TestClient,
    auth: Tok,
    rtsp_server: str,
    rtsp_ptz_dir: Path,
    rtsp_password: str,
    sampler: FrameSampler,
) -> None:
    admin = await auth("admin")
    moving = FakeCamera(ptz=True, password=rtsp_password, ptz_file=str(rtsp_ptz_dir / "ptz-0"))
    stuck = FakeCamera(
        ptz=True, ptz_stuck=True, password=rtsp_password, ptz_file=str(rtsp_ptz_dir / "ptz-1")
    )
    worker = _worker(client, sampler)
    reports: dict[str, dict[str, Any]] = {}
    async with FakeOnvifServer(moving) as dev0, FakeOnvifServer(stuck) as dev1:
        for i, (name, dev) in enumerate((("moving", dev0), ("stuck", dev1))):
            cam = await _register(
                client, admin, i + 1, f"{rtsp_server}/ptz-{i}", dev.port, rtsp_password
            )
            await _interrogated(client, cam, dev.port, ptz=True)
            result = await worker.diagnose_now(cam)
            assert result["diagnosed"], result
            reports[name] = result["report"]

    ok = reports["moving"]
    flag = ok["flags"][PTZ_CHECK]
    assert ok["ptz"] == {"moved": True, "detail": None}
    assert flag["label"] == "云台失控" and flag["threshold"] == THRESHOLDS.ptz_min_change
    assert flag["value"] >= THRESHOLDS.ptz_min_change and not flag["fired"], flag
    assert ok["fired"] == [], ok["fired"]

    bad = reports["stuck"]
    flag = bad["flags"][PTZ_CHECK]
    assert bad["ptz"] == {"moved": True, "detail": None}
    assert flag["fired"] and flag["fault"], flag
    assert flag["value"] < THRESHOLDS.ptz_min_change
    assert bad["faults"] == [PTZ_CHECK], bad["fired"]

    # There and back, on the device's profile, and the moving head is where it started.
    for device in (moving, stuck):
        assert device.moves == [("Profile_101", PAN, 0.0), ("Profile_101", -PAN, 0.0)]
    assert moving.ptz_position == 0.0
    assert float((rtsp_ptz_dir / "ptz-0").read_text()) == 0.0


async def test_cameras_not_known_as_ptz_and_deployments_without_the_check_are_never_moved(
    client: TestClient,
    auth: Tok,
    rtsp_server: str,
    rtsp_ptz_dir: Path,
    rtsp_password: str,
    sampler: FrameSampler,
) -> None:
    admin = await auth("admin")
    fixed = FakeCamera(ptz=False, password=rtsp_password)  # interrogated: no PTZ service
    unknown = FakeCamera(ptz=True, password=rtsp_password)  # registered by hand
    worker = _worker(client, sampler)
    async with FakeOnvifServer(fixed) as dev0, FakeOnvifServer(unknown) as dev1:
        cam0 = await _register(client, admin, 11, f"{rtsp_server}/ptz-2", dev0.port, rtsp_password)
        await _interrogated(client, cam0, dev0.port, ptz=False)
        cam1 = await _register(client, admin, 12, f"{rtsp_server}/ptz-3", dev1.port, rtsp_password)
        for cam in (cam0, cam1):
            report = (await worker.diagnose_now(cam))["report"]
            assert report["ptz"]["moved"] is False
            assert "not known as a PTZ camera" in report["ptz"]["detail"]
            assert PTZ_CHECK not in report["flags"] and report["fired"] == [], report
        # A PTZ camera in a deployment that did not opt in: diagnosed, never moved.
        await _interrogated(client, cam1, dev1.port, ptz=True)
        off = Worker(client.app[POOL], client.app[BOX], WorkerConfig(sample_seconds=1.5))
        async with FrameSampler(processes=1) as plain:
            off.sampler = plain
            off.ptz_mover = onvif_ptz_mover(client.app[POOL], client.app[BOX])
            report = (await off.diagnose_now(cam1))["report"]
        assert "ptz" not in report and PTZ_CHECK not in report["flags"]
    assert fixed.moves == [] and unknown.moves == []
    assert "RelativeMove" not in fixed.requests + unknown.requests
