"""The 云台失控 check's ONVIF moves against the fake device (real HTTP, real SOAP digests):
there on entering, back on leaving whatever happened in between, and every refusal a
`PtzRefused` that names the step and never the password."""

from __future__ import annotations

import asyncio

import pytest

from ingest.onvif.ptz import PtzRefused, relative_pan

from .fake_onvif import FakeCamera, FakeOnvifServer


async def _fail_while_turned(cam: FakeCamera, port: int) -> None:
    async with relative_pan("127.0.0.1", port, cam.username, cam.password, 0.1):
        assert cam.moves == [("Profile_101", 0.1, 0.0)]
        assert cam.ptz_position == pytest.approx(0.1)
        raise RuntimeError("sample failed")


async def test_the_move_back_is_sent_when_the_block_fails() -> None:
    cam = FakeCamera(ptz=True)
    async with FakeOnvifServer(cam) as server:
        with pytest.raises(RuntimeError, match="sample failed"):
            await _fail_while_turned(cam, server.port)
    assert cam.moves == [("Profile_101", 0.1, 0.0), ("Profile_101", -0.1, 0.0)]
    assert cam.ptz_position == pytest.approx(0.0)


async def test_the_move_back_is_sent_when_the_check_is_cancelled() -> None:
    cam = FakeCamera(ptz=True)
    entered = asyncio.Event()

    async def check() -> None:
        async with relative_pan("127.0.0.1", server.port, cam.username, cam.password, 0.05):
            entered.set()
            await asyncio.Event().wait()

    async with FakeOnvifServer(cam) as server:
        task = asyncio.create_task(check())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [x for _, x, _ in cam.moves] == [0.05, -0.05]


async def test_a_camera_without_ptz_is_refused_and_never_moved() -> None:
    cam = FakeCamera(ptz=False)
    async with FakeOnvifServer(cam) as server:
        with pytest.raises(PtzRefused, match="no PTZ service"):
            async with relative_pan("127.0.0.1", server.port, cam.username, cam.password, 0.05):
                pytest.fail("entered without a PTZ service")
    assert "RelativeMove" not in cam.requests and cam.moves == []


async def test_a_wrong_password_is_named_without_the_password() -> None:
    cam = FakeCamera(ptz=True)
    async with FakeOnvifServer(cam) as server:
        with pytest.raises(PtzRefused) as err:
            async with relative_pan("127.0.0.1", server.port, "admin", "Wr0ng-Pa55", 0.05):
                pytest.fail("entered with a wrong password")
    assert "credentials" in str(err.value) and "Wr0ng-Pa55" not in str(err.value)
    assert cam.moves == []


async def test_a_device_that_never_answers_is_refused_after_the_call_timeout() -> None:
    cam = FakeCamera(ptz=True, hang=True)
    async with FakeOnvifServer(cam) as server:
        with pytest.raises(PtzRefused, match=r"did not answer within 0\.5 s"):
            async with relative_pan(
                "127.0.0.1", server.port, cam.username, cam.password, 0.05, timeout=0.5
            ):
                pytest.fail("entered a device that never answers")
