"""Frame sampling and diagnosis against a real RTSP server (GStreamer, see rtsp_server.py).

Each mount reproduces one camera fault after real H.264 encoding, RTP over RTSP and FFmpeg
decoding, so these tests check that the thresholds of health/diagnosis.py, calibrated on
synthetic frames, still fire on what a worker actually decodes, and that every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from health.diagnosis import Thresholds
from health.frames import OPEN_GRACE, FrameSampler, _scrub, sample_frames

# Every item of the check list, on a fixed scene and against its reference, is in
# test_vqd_streams.py; these are the sampler's own paths on the classic mounts.
FAULTS = {
    "normal": None,
    "black": "signal_loss",
    "frozen": "frozen",
    "snow": "noise",
    "colour-cast": "colour_cast",
}


@pytest.fixture(scope="module")
async def sampler() -> AsyncIterator[FrameSampler]:
    async with FrameSampler(processes=2) as s:
        yield s


@pytest.mark.parametrize(("mount", "expected"), FAULTS.items())
async def test_pattern_is_diagnosed(
    sampler: FrameSampler, rtsp_server: str, mount: str, expected: str | None
) -> None:
    result, diagnosis = await sampler.diagnose_stream(f"{rtsp_server}/{mount}", seconds=2.0)
    values = {name: round(flag.value, 2) for name, flag in diagnosis.flags.items()}
    print(
        f"{mount}: fired={diagnosis.fired} open_ms={result.open_ms} "
        f"first_frame_ms={result.first_frame_ms} fps={result.fps_measured} "
        f"read={result.frames_read} values={values}"
    )
    assert result.error is None, result.error
    assert result.transport == "tcp"
    assert not result.stalled
    assert 10 <= len(result.frames) <= 20 and result.frames_read >= len(result.frames)
    assert all(f.dtype == np.uint8 and f.shape == (180, 320, 3) for f in result.frames)
    assert result.thumbnail is not None and result.thumbnail.startswith(b"\xff\xd8")
    assert result.open_ms is not None and result.open_ms < 4000
    assert result.first_frame_ms is not None and result.first_frame_ms < 4000
    assert result.fps_measured is not None and result.fps_measured > 5
    if expected is None:
        assert diagnosis.fired == (), values
    else:
        assert expected in diagnosis.fired, values


async def test_stalled_stream_is_noticed_by_the_watchdog(
    sampler: FrameSampler, rtsp_server: str
) -> None:
    """Frames stop ~2 s in with the session open; FFmpeg alone would notice only ~9 s later."""
    started = time.monotonic()
    result = await sampler.sample(f"{rtsp_server}/stopping", seconds=8.0, stall_timeout=1.0)
    wall = time.monotonic() - started
    print(f"stopping: read={result.frames_read} elapsed_ms={result.elapsed_ms} wall={wall:.2f}")
    assert result.stalled and result.failure == "stalled"
    assert result.frames_read > 5 and result.frames
    assert result.error is not None and "stalled" in result.error
    # 2 s of frames + 1 s stall timeout + open and slack; the 8 s window never completes.
    assert result.elapsed_ms < 4500
    assert wall < 5.5


@pytest.mark.parametrize(("mount", "expected"), [("normal", None), ("frozen", "frozen")])
async def test_frames_can_stay_in_the_worker(
    sampler: FrameSampler, rtsp_server: str, mount: str, expected: str | None
) -> None:
    """What `health.worker` uses: the same diagnosis, without shipping the frames back."""
    result, diagnosis = await sampler.diagnose_stream(
        f"{rtsp_server}/{mount}", seconds=2.0, keep_frames=False
    )
    assert result.error is None, result.error
    assert result.frames == [] and result.frames_read >= 10
    assert 10 <= diagnosis.frames <= 20
    assert result.thumbnail is not None and result.thumbnail.startswith(b"\xff\xd8")
    if expected is None:
        assert diagnosis.fired == ()
    else:
        assert expected in diagnosis.fired


async def test_auth_with_the_right_password(
    sampler: FrameSampler, rtsp_server: str, rtsp_password: str
) -> None:
    uri = rtsp_server.replace("://", f"://admin:{rtsp_password}@") + "/auth"
    result, diagnosis = await sampler.diagnose_stream(uri, seconds=1.0)
    assert result.error is None and result.frames
    assert rtsp_password not in result.uri and "***@" in result.uri
    assert "signal_loss" not in diagnosis.fired


async def test_auth_with_a_wrong_password(sampler: FrameSampler, rtsp_server: str) -> None:
    wrong = "Wr0ngPassw0rd"
    uri = rtsp_server.replace("://", f"://admin:{wrong}@") + "/auth"
    started = time.monotonic()
    result, diagnosis = await sampler.diagnose_stream(uri, seconds=1.0)
    assert time.monotonic() - started < 3
    assert result.failure == "auth_failed"
    assert result.error is not None and "authentication" in result.error
    assert wrong not in repr(result) and wrong not in result.error
    assert result.thumbnail is None and not result.frames
    assert diagnosis.fired == ("signal_loss",)


async def test_closed_port_fails_within_the_open_timeout(sampler: FrameSampler) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result, diagnosis = await sampler.diagnose_stream(
        f"rtsp://u:pw1234@127.0.0.1:{port}/x", open_timeout=2.0
    )
    assert time.monotonic() - started < 2.0 + 1.5
    assert result.failure == "unreachable"
    assert result.error is not None and "refused" in result.error and "pw1234" not in result.error
    assert diagnosis.fired == ("signal_loss",)


async def test_a_stuck_worker_is_killed_and_its_slot_freed(rtsp_server: str) -> None:
    """A camera that accepts TCP and never answers: the deadline kills the worker."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, FrameSampler(processes=1) as one:
        # Start the worker first: its start-up (importing OpenCV) is not charged to a camera.
        assert (await one.sample(f"{rtsp_server}/normal", seconds=0.5)).frames
        started = time.monotonic()
        result = await one.sample(
            f"rtsp://127.0.0.1:{port}/x", open_timeout=20.0, overall_timeout=1.5
        )
        assert time.monotonic() - started < 2.5
        assert result.failure == "timeout" and result.error is not None
        # The only slot is free again: the next camera is sampled by a fresh worker.
        result = await one.sample(f"{rtsp_server}/normal", seconds=0.5)
        assert result.error is None and result.frames


async def test_concurrent_samples_use_both_workers(sampler: FrameSampler, rtsp_server: str) -> None:
    # Warm both workers (spawn + importing OpenCV happen once per worker, not per camera).
    await asyncio.gather(*(sampler.sample(f"{rtsp_server}/black", seconds=0.2) for _ in range(2)))
    started = time.monotonic()
    results = await asyncio.gather(
        *(sampler.sample(f"{rtsp_server}/normal", seconds=1.5) for _ in range(2))
    )
    assert all(r.error is None and r.frames for r in results)
    # Two 1.5 s windows side by side, not one after the other.
    assert time.monotonic() - started < 3.2


def test_scrub_removes_credentials_from_ffmpeg_text() -> None:
    uri = "rtsp://admin:p%40ss-word@10.0.0.1/stream"
    text = "method DESCRIBE failed for rtsp://admin:p%40ss-word@10.0.0.1/stream; p@ss-word"
    scrubbed = _scrub(text, uri)
    assert "p%40ss-word" not in scrubbed and "p@ss-word" not in scrubbed
    assert "rtsp://***@10.0.0.1/stream" in scrubbed


async def test_a_server_refusing_tcp_is_sampled_over_the_default_transport(
    sampler: FrameSampler, rtsp_server: str
) -> None:
    """TCP interleaved first; a device that only offers RTP over UDP still yields frames."""
    result, diagnosis = await sampler.diagnose_stream(f"{rtsp_server}/udp-only", seconds=1.0)
    print(
        f"udp-only: transport={result.transport} open_ms={result.open_ms} read={result.frames_read}"
    )
    assert result.error is None and result.failure is None, result.error
    assert result.transport == "default"
    assert result.frames and result.thumbnail is not None
    assert "signal_loss" not in diagnosis.fired


async def test_configured_thresholds_reach_the_capture_process(rtsp_server: str) -> None:
    """A deployment's `[health.diagnosis]` thresholds are what the worker process applies:
    with `dark_mean` above white, the normal picture counts as too dark."""
    async with FrameSampler(processes=1, thresholds=Thresholds(dark_mean=255.0)) as strict:
        for keep in (True, False):
            result, diagnosis = await strict.diagnose_stream(
                f"{rtsp_server}/normal", seconds=1.0, keep_frames=keep
            )
            assert result.error is None, result.error
            assert "too_dark" in diagnosis.fired
            assert diagnosis.flags["too_dark"].threshold == 255.0


# What `health.worker` asks for: one frame more than a frozen run, plus slack.
MIN_FRAMES = Thresholds().frozen_frames + 2


@pytest.mark.parametrize(("mount", "expected"), [("frozen-slow", "frozen"), ("normal-slow", None)])
async def test_a_slow_stream_is_read_on_until_a_frozen_run_fits(
    sampler: FrameSampler, rtsp_server: str, mount: str, expected: str | None
) -> None:
    """A 3 fps sub-stream holds ~7 frames in 2 s, too few for a run of 10 similar frames: the
    window is extended until `min_frames` arrived, and the diagnosis then sees what it is."""
    started = time.monotonic()
    result, diagnosis = await sampler.diagnose_stream(
        f"{rtsp_server}/{mount}", seconds=2.0, min_frames=MIN_FRAMES
    )
    wall = time.monotonic() - started
    values = {name: round(flag.value, 2) for name, flag in diagnosis.flags.items()}
    print(
        f"{mount}: fired={diagnosis.fired} fps={result.fps_measured} read={result.frames_read} "
        f"extended={result.extended} elapsed_ms={result.elapsed_ms} values={values}"
    )
    assert result.error is None and result.failure is None, result.error
    assert result.extended and not result.stalled
    assert result.fps_measured is not None and result.fps_measured < 5
    assert result.frames_read >= MIN_FRAMES and diagnosis.frames >= MIN_FRAMES
    if expected is None:
        assert diagnosis.fired == (), values
    else:
        assert expected in diagnosis.fired, values
    # Generous: open + 12 frames at 3 fps (≈ 3.7 s), far below the 6 s extension's limit.
    assert wall < 10


async def test_without_the_extension_a_slow_frozen_stream_goes_unnoticed(
    sampler: FrameSampler, rtsp_server: str
) -> None:
    """Why the extension exists: 2 s of the 3 fps frozen stream cannot show a run of 10."""
    result, diagnosis = await sampler.diagnose_stream(
        f"{rtsp_server}/frozen-slow", seconds=2.0, min_frames=0
    )
    assert result.error is None, result.error
    assert not result.extended and result.frames_read < Thresholds().frozen_frames
    assert "frozen" not in diagnosis.fired


async def test_a_normal_stream_is_not_extended(sampler: FrameSampler, rtsp_server: str) -> None:
    result = await sampler.sample(f"{rtsp_server}/normal", seconds=2.0, min_frames=MIN_FRAMES)
    assert result.error is None, result.error
    assert not result.extended and result.frames_read >= MIN_FRAMES


async def test_the_extension_ends_at_max_seconds(sampler: FrameSampler, rtsp_server: str) -> None:
    """A stream too slow for `min_frames` is read for `max_seconds`, then judged as it is:
    not stalled, not failed, just extended."""
    started = time.monotonic()
    result = await sampler.sample(
        f"{rtsp_server}/normal-slow", seconds=1.0, min_frames=1000, max_seconds=2.5
    )
    wall = time.monotonic() - started
    assert result.error is None and not result.stalled, result.error
    assert result.extended and 3 < result.frames_read < 1000
    assert wall < 8  # generous: open + 2.5 s, never the minutes 1000 frames would take


def test_the_hard_deadline_covers_the_extension() -> None:
    """The parent kills a worker only after the longest window, so a slow stream reading on to
    `min_frames` is never killed for it."""
    s = FrameSampler(processes=1, margin=2.0)  # no worker is spawned before the first job
    base = 4.0 + OPEN_GRACE + 3.0 + 2.0 + 2.0  # open, grace, read, stall timeouts, margin
    assert s._deadline({"seconds": 2.0}) == base + 6.0  # 3 × seconds
    assert s._deadline({"seconds": 5.0}) == base + 8.0  # capped at 8 s
    assert s._deadline({"seconds": 10.0}) == base + 10.0  # never shorter than seconds
    assert s._deadline({"seconds": 2.0, "max_seconds": 4}) == base + 4.0
    s.close()


def test_max_seconds_shorter_than_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        sample_frames("rtsp://127.0.0.1:9/x", seconds=2.0, max_seconds=1.0)
    with pytest.raises(ValueError, match="min_frames"):
        sample_frames("rtsp://127.0.0.1:9/x", min_frames=-1)
