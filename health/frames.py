"""Frame sampling (OpenCV/FFmpeg) in worker processes, and diagnosis of the sample.

The third and fourth rungs of the probe ladder (DESIGN.md §2 "Health and KPIs"): a DESCRIBE
proves the camera answers, only decoded frames prove it shows a picture, and only the diagnosis
says whether the picture is useful.

Why it is built this way (measured with opencv-python-headless 5.0 and its bundled FFmpeg):

- **Worker processes, not threads.** OpenCV serialises FFmpeg opens inside one process, and an
  open costs 0.2–2 s, so parallel sampling needs processes. Decoding and the diagnosis are CPU
  work that must stay off the event loop too, so both run in the worker.
- **Our own timeouts at every step.** FFmpeg's open and read timeouts
  (`CAP_PROP_OPEN_TIMEOUT_MSEC`, `CAP_PROP_READ_TIMEOUT_MSEC`) are passed, but a stream that
  stalls with its session open is noticed by FFmpeg only ~9 s later, and `cap.read()` cannot be
  interrupted. So the capture runs in a thread of the worker and the worker's main thread keeps a
  time-since-last-frame watchdog; a worker whose capture thread is still stuck exits after
  answering, and the parent kills any worker that overruns the overall deadline, so one dead
  camera never holds a slot for long.
- **TCP interleaved transport first** (`rtsp_transport;tcp` with a small probe): no UDP ports to
  get through firewalls and NAT, and 0.2–0.4 s to the first frame instead of ~2 s. When that
  fails for a reason another transport could fix, the default FFmpeg options are tried once.
  Authentication failures are never retried: cameras lock accounts after a few bad logins.
- **Decode only what the diagnosis keeps, on one thread.** Every frame must be decoded (H.264
  frames depend on each other), but only the frames kept for the diagnosis are converted to BGR
  and downscaled (`grab()` for the others, `retrieve()` for these), and each capture's decoder
  runs on one thread (`CAP_PROP_N_THREADS`): the parallelism is across worker processes, and
  FFmpeg's default thread per core only added CPU (≈ 25 % per stream, measured at 360p).
- **Errors carry the cause.** OpenCV only says "could not open"; FFmpeg's own log line (captured
  from the worker's stderr) says 401, 404 or refused, which is what the operator acts on. Every
  message is scrubbed of credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np
from numpy.typing import NDArray

from health.diagnosis import Baseline, Diagnosis, Thresholds, diagnose
from health.rtsp import redact_uri

__all__ = ["FrameSampler", "SampleFailure", "SampleResult", "sample_frames"]

SampleFailure = Literal[
    "auth_failed",
    "not_found",
    "unreachable",
    "timeout",
    "open_failed",
    "no_frames",
    "stalled",
    "worker",
]

OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
TCP_OPTIONS = "rtsp_transport;tcp|analyzeduration;100000|probesize;32768"
THUMBNAIL_WIDTH = 320
# Extra time FFmpeg may take beyond its own open timeout before the worker stops waiting.
OPEN_GRACE = 1.0
# Failures that another transport cannot fix; retrying them only costs the camera a session.
_NO_FALLBACK: frozenset[str] = frozenset({"auth_failed", "not_found", "unreachable", "timeout"})
_LOG_PATTERNS: tuple[tuple[re.Pattern[str], SampleFailure, str], ...] = (
    (
        re.compile(r"\b401\b|unauthori[sz]ed", re.I),
        "auth_failed",
        "authentication failed (401 Unauthorized): wrong or missing credentials",
    ),
    (re.compile(r"\b404\b|not found", re.I), "not_found", "stream path not found (404)"),
    (re.compile(r"connection refused", re.I), "unreachable", "connection refused"),
    (
        re.compile(r"no route to host|network is unreachable|name or service not known", re.I),
        "unreachable",
        "host unreachable",
    ),
    (
        re.compile(r"timed? ?out|timeout|immediate exit requested", re.I),
        "timeout",
        "timed out while opening",
    ),
)
# Frames a sample should hold: one more than `Thresholds.frozen_frames` (a frozen run of 10)
# plus one of slack; `health.worker` derives it from the deployment's thresholds.
MIN_FRAMES = 12
# A slow stream is read at most this long (after its first frame) to reach `min_frames`.
MAX_SECONDS_CAP = 8.0
_SAMPLE_ARGS = frozenset(
    {
        "seconds",
        "min_frames",
        "max_seconds",
        "max_frames",
        "open_timeout",
        "read_timeout",
        "stall_timeout",
        "width",
    }
)
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@", re.I)


@dataclass(slots=True)
class SampleResult:
    """What one sampling window saw; every duration is in milliseconds.

    `uri` is redacted. `open_ms` is the duration of the last open attempt, `first_frame_ms` the
    time from the start of sampling (all attempts included) to the first decoded frame, i.e.
    what a viewer waits for a picture. `frames` is at most `max_frames` of the
    `frames_read` frames, downscaled. `stalled` means frames stopped arriving before the window
    ended, whether the session stayed open (watchdog) or FFmpeg gave up. `extended` means the
    stream was too slow to deliver `min_frames` frames in `seconds`, so reading went on (up to
    `max_seconds`). `error` is an operator sentence without credentials; `failure` its
    machine-readable kind.
    """

    uri: str
    frames: list[NDArray[np.uint8]] = field(default_factory=list)
    open_ms: float | None = None
    first_frame_ms: float | None = None
    frames_read: int = 0
    fps_measured: float | None = None
    stalled: bool = False
    extended: bool = False
    error: str | None = None
    failure: SampleFailure | None = None
    thumbnail: bytes | None = None
    transport: Literal["tcp", "default"] | None = None
    elapsed_ms: float = 0.0


def _secrets(uri: str) -> list[str]:
    """The user name and password of `uri`, raw and unquoted, to scrub from log text."""
    try:
        parts = urlsplit(uri)
        found = [parts.password or "", parts.username or ""]
    except ValueError:
        return []
    found += [unquote(s) for s in found]
    # Very short strings would mangle ordinary words; URLs are scrubbed by pattern anyway.
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def _scrub(text: str, uri: str) -> str:
    """`text` with every URL userinfo and the URI's credentials replaced by `***`."""
    text = _USERINFO.sub(r"\1***@", text)
    for secret in _secrets(uri):
        text = text.replace(secret, "***")
    return text


def _classify(log: str, uri: str) -> tuple[SampleFailure, str]:
    """Failure kind and operator sentence for an open that failed, from FFmpeg's log."""
    for pattern, failure, sentence in _LOG_PATTERNS:
        if pattern.search(log):
            return failure, sentence
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and "WARN" not in ln]
    detail = _scrub(lines[-1][:200], uri) if lines else "no detail from FFmpeg"
    return "open_failed", f"could not open the stream ({detail})"


@contextlib.contextmanager
def _stderr_to_file() -> Iterator[Callable[[], str]]:
    """Redirect fd 2 (where FFmpeg logs) to a temporary file; yield a reader of its text.

    Only for worker processes: it redirects the whole process's stderr while active.
    """
    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)

        def read() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-4000:]

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _downscale(frame: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    height, current = frame.shape[:2]
    if current <= width:
        return np.ascontiguousarray(frame)
    size = (width, max(1, round(height * width / current)))
    return np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))


def _capture(
    uri: str,
    open_timeout: float,
    read_timeout: float,
    width: int,
    events: queue.Queue[tuple[Any, ...]],
    stop: threading.Event,
    stride: list[int],
) -> None:
    """Open (TCP first, default options as fallback) and read until `stop`; report via `events`.

    Runs in a thread because `cap.grab()` cannot be interrupted; the caller owns every timeout.
    Events: ("open", transport, ok, ms, log_text), ("frame", t, frame or None), ("end", reason).
    Frame i is converted and downscaled only when i is a multiple of `stride[0]`, which the
    caller may only grow by doubling (so a frame it wants is never skipped); others are None.
    """
    start = time.monotonic()
    cap: Any = None
    try:
        attempts: list[tuple[Literal["tcp", "default"], str | None]] = [
            ("tcp", TCP_OPTIONS),
            ("default", None),
        ]
        for transport, options in attempts:
            budget = open_timeout - (time.monotonic() - start)
            if transport == "default" and budget < 0.2:
                return
            if options is None:
                os.environ.pop(OPTIONS_ENV, None)
            else:
                os.environ[OPTIONS_ENV] = options
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                max(100, int(budget * 1000)),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                max(100, int(read_timeout * 1000)),
                cv2.CAP_PROP_N_THREADS,
                1,
            ]
            t0 = time.monotonic()
            with _stderr_to_file() as read_log:
                cap = cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
                ok = bool(cap.isOpened())
                log_text = "" if ok else read_log()
            events.put(("open", transport, ok, (time.monotonic() - t0) * 1000, log_text))
            if ok:
                break
            cap.release()
            cap = None
            if _classify(log_text, uri)[0] in _NO_FALLBACK:
                return
        if cap is None:
            return
        index = 0
        while not stop.is_set():
            if not cap.grab():
                events.put(("end", "read_failed"))
                return
            t = time.monotonic()
            if index % stride[0] == 0:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    events.put(("end", "read_failed"))
                    return
                events.put(("frame", t, _downscale(frame, width)))
            else:
                events.put(("frame", t, None))
            index += 1
    except Exception as exc:  # anything from OpenCV must reach the watchdog, not vanish
        events.put(("end", _scrub(f"{type(exc).__name__}: {exc}", uri)))
    finally:
        if cap is not None:
            cap.release()
        events.put(("end", "done"))


def _spread(frames: list[NDArray[np.uint8]], count: int) -> list[NDArray[np.uint8]]:
    """At most `count` frames at one fixed stride from the start of `frames`.

    A fixed stride, not an even spread with rounded positions: the motion checks (shake,
    noise, stripes) compare consecutive frames, and gaps of alternately 1 and 2 frames make a
    steady pan look like a shaking camera. The cost is that 30 frames thinned to 20 cover the
    first 20 (1.3 s of 2 s), which every check is content with.
    """
    if len(frames) <= count:
        return frames
    return frames[:: max(1, len(frames) // count)][:count]


def _max_seconds(seconds: float, max_seconds: float | None) -> float:
    """The longest window after the first frame: `max_seconds`, by default 3 × `seconds` capped
    at `MAX_SECONDS_CAP` (but never shorter than `seconds`), so a slow stream costs its capture
    slot a bounded few seconds more."""
    if max_seconds is None:
        return max(seconds, min(3 * seconds, MAX_SECONDS_CAP))
    return max_seconds


def _sample(
    uri: str,
    *,
    seconds: float = 3.0,
    min_frames: int = MIN_FRAMES,
    max_seconds: float | None = None,
    max_frames: int = 20,
    open_timeout: float = 4.0,
    read_timeout: float = 3.0,
    stall_timeout: float = 2.0,
    width: int = 320,
) -> tuple[SampleResult, bool]:
    """`sample_frames`, plus whether the capture thread is still stuck (the worker must exit)."""
    if max_frames < 1 or width < 8 or min(seconds, open_timeout, read_timeout, stall_timeout) <= 0:
        raise ValueError("seconds, timeouts, max_frames and width must be positive")
    if min_frames < 0:
        raise ValueError("min_frames must not be negative")
    longest = _max_seconds(seconds, max_seconds)
    if longest < seconds:
        raise ValueError("max_seconds must not be shorter than seconds")
    start = time.monotonic()
    result = SampleResult(uri=redact_uri(uri))
    events: queue.Queue[tuple[Any, ...]] = queue.Queue()
    stop = threading.Event()
    # Keep every stride-th frame; the stride doubles whenever the buffer fills. Shared with the
    # capture thread, which converts only the frames that will be kept.
    stride = [1]
    thread = threading.Thread(
        target=_capture,
        args=(uri, open_timeout, read_timeout, width, events, stop, stride),
        name="capture",
        daemon=True,
    )
    thread.start()

    kept: list[NDArray[np.uint8]] = []
    last: NDArray[np.uint8] | None = None  # the last converted frame: the thumbnail
    first_t = last_t = 0.0
    opened = False
    deadline = start + open_timeout + OPEN_GRACE
    try:
        while True:
            try:
                event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if not opened:
                    result.failure, result.error = "timeout", "timed out while opening"
                elif result.frames_read == 0:
                    result.failure = "no_frames"
                    result.error = f"stream opened but no frame arrived within {read_timeout} s"
                elif time.monotonic() < first_t + seconds:
                    # Judged on the base window only, as without the extension: a slow stream
                    # that stops during its extension ends the sample with what arrived.
                    result.stalled, result.failure = True, "stalled"
                    result.error = f"no new frame for {stall_timeout} s: the stream stalled"
                elif result.frames_read < min_frames:
                    result.extended = True  # waited past `seconds` for more frames
                break
            kind = event[0]
            if kind == "open":
                _, transport, ok, ms, log_text = event
                result.open_ms, result.transport = round(ms, 1), transport
                if ok:
                    # The fallback transport worked: the first attempt's failure is history.
                    opened, result.failure, result.error = True, None, None
                    deadline = time.monotonic() + read_timeout
                else:
                    result.failure, result.error = _classify(log_text, uri)
            elif kind == "frame":
                _, t, frame = event
                if result.frames_read == 0:
                    first_t = t
                    result.first_frame_ms = round((t - start) * 1000, 1)
                last_t = t
                # A frame converted under a smaller stride that has since doubled is dropped.
                if frame is not None and result.frames_read % stride[0] == 0:
                    last = frame
                    kept.append(frame)
                    if len(kept) >= 2 * max_frames:
                        kept, stride[0] = kept[::2], stride[0] * 2
                result.frames_read += 1
                # Too few frames after `seconds` (a 1–5 fps sub-stream): read on until
                # `min_frames` or `longest`, so a frozen run can be seen at all.
                enough = result.frames_read >= min_frames
                if t - first_t >= (seconds if enough else longest):
                    break
                if t - first_t >= seconds:
                    result.extended = True
                deadline = min(t + stall_timeout, first_t + (seconds if enough else longest))
            else:  # "end"
                if opened and event[1] != "done" and result.frames_read == 0:
                    result.failure = "no_frames"
                    result.error = f"stream opened but no frame could be read ({event[1]})"
                elif opened and event[1] != "done" and time.monotonic() < first_t + seconds:
                    result.stalled, result.failure = True, "stalled"
                    result.error = f"the stream ended after {result.frames_read} frames"
                elif not opened and result.error is None and event[1] != "done":
                    result.failure, result.error = "open_failed", event[1]
                break
    finally:
        stop.set()
    thread.join(timeout=0.2)
    stuck = thread.is_alive()

    if result.error is not None:
        result.error = f"{result.error} [{result.uri}]"
    result.frames = _spread(kept, max_frames)
    if result.frames_read >= 2 and last_t > first_t:
        result.fps_measured = round((result.frames_read - 1) / (last_t - first_t), 2)
    if last is not None:
        thumb = _downscale(last, THUMBNAIL_WIDTH)
        ok, jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
        result.thumbnail = jpeg.tobytes() if ok else None
    result.elapsed_ms = round((time.monotonic() - start) * 1000, 1)
    return result, stuck


def sample_frames(
    uri: str,
    *,
    seconds: float = 3.0,
    min_frames: int = MIN_FRAMES,
    max_seconds: float | None = None,
    max_frames: int = 20,
    open_timeout: float = 4.0,
    read_timeout: float = 3.0,
    stall_timeout: float = 2.0,
    width: int = 320,
) -> SampleResult:
    """Open `uri` and read frames for `seconds` after the first one; blocking, bounded.

    When fewer than `min_frames` frames arrived in `seconds` (a slow stream), reading goes on
    until `min_frames` or `max_seconds` (default 3 × `seconds`, at most 8 s) after the first
    frame, whichever comes first: the frozen check needs a run of `Thresholds.frozen_frames`
    consecutive frames, which 2 s of a 3 fps sub-stream never holds. 0 disables the extension.

    Meant for a worker process (it redirects the process's stderr while opening, and a stuck
    capture thread can only be ended with its process): use `FrameSampler` from async code.
    Returns at the latest after about
    open_timeout + 1 + read_timeout + max_seconds + stall_timeout.
    """
    return _sample(
        uri,
        seconds=seconds,
        min_frames=min_frames,
        max_seconds=max_seconds,
        max_frames=max_frames,
        open_timeout=open_timeout,
        read_timeout=read_timeout,
        stall_timeout=stall_timeout,
        width=width,
    )[0]


def _job(name: str, uri: str, kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """Run one job in the worker: (payload, worker must exit)."""
    kwargs = dict(kwargs)
    thresholds = kwargs.pop("thresholds", None)
    reference = kwargs.pop("reference", None)
    baseline = kwargs.pop("baseline", None)
    result, stuck = _sample(uri, **kwargs)
    if name in ("diagnose", "diagnose_lean"):
        diagnosis = diagnose(
            result.frames, thresholds=thresholds, reference=reference, baseline=baseline
        )
        if name == "diagnose_lean":
            result.frames = []
        return (result, diagnosis), stuck
    return result, stuck


def _worker_main(conn: Connection) -> None:
    """Loop of a worker process: jobs in, results out, exit on EOF or when a capture is stuck."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # One thread for OpenCV's own loops (resize, colour conversion, the diagnosis) too: a pool
    # runs many workers, so threads inside each only add switching and memory.
    cv2.setNumThreads(1)
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        name, uri, kwargs = job
        stuck = True
        try:
            payload, stuck = _job(name, uri, kwargs)
            message: tuple[str, Any, bool] = ("ok", payload, stuck)
        except Exception as exc:
            message = ("error", _scrub(f"{type(exc).__name__}: {exc}", uri), True)
        try:
            conn.send(message)
        except OSError:
            os._exit(1)
        if stuck:
            # A thread blocked inside FFmpeg cannot be stopped; a fresh process is cheaper.
            os._exit(0)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.conn.close()


async def _wait_readable(conn: Connection, limit: float) -> None:
    """Wait until `conn` has data (or EOF) without a thread; TimeoutError after `limit` s."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, limit)
    finally:
        loop.remove_reader(fd)


class FrameSampler:
    """Samples streams in a few long-lived worker processes, at most `processes` at a time.

    Each job has an overall deadline (worst-case sampling time + `margin`); a worker that
    overruns it is killed and replaced, so the slot frees whatever FFmpeg is stuck in. Workers
    are spawned (not forked: the parent runs an event loop and threads) on first use, and their
    start-up (importing OpenCV) is not charged to the camera's deadline.
    """

    def __init__(
        self,
        processes: int = 2,
        *,
        margin: float = 2.0,
        start_timeout: float = 30.0,
        thresholds: Thresholds | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._ctx = multiprocessing.get_context("spawn")
        self.processes = processes  # captures at once: callers size their demand by it
        # The deployment's diagnosis thresholds (config `health.diagnosis`), sent with each job.
        self.thresholds = thresholds or Thresholds()
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._margin = margin
        self._start_timeout = start_timeout
        self._closed = False

    async def __aenter__(self) -> FrameSampler:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def sample(
        self, uri: str, *, overall_timeout: float | None = None, **kw: Any
    ) -> SampleResult:
        """`sample_frames(uri, **kw)` in a worker; `overall_timeout` overrides the deadline."""
        payload = await self._run("sample", uri, kw, overall_timeout)
        if isinstance(payload, SampleResult):
            return payload
        return _failed(uri, *payload)

    async def diagnose_stream(
        self,
        uri: str,
        *,
        overall_timeout: float | None = None,
        keep_frames: bool = True,
        reference: NDArray[np.uint8] | None = None,
        baseline: Baseline | None = None,
        **kw: Any,
    ) -> tuple[SampleResult, Diagnosis]:
        """Sample and diagnose in the worker; a failed sample is diagnosed as signal loss.

        `reference` is the camera's accepted scene picture (`Diagnosis.picture` of an earlier
        clean sample, 160×90 BGR, ~43 KB through the pipe): with it scene_change and occlusion
        are judged, and colour_cast is measured against it; `baseline` (kept with it) lets
        noise, stripes and contrast be judged against the camera's own normal.

        With `keep_frames=False` the sampled frames stay in the worker (`result.frames` is
        empty; the thumbnail and every count are kept): the diagnosis already used them, and
        shipping ~3.5 MB of pixels per stream through a pipe to a busy parent cost ≈ 0.7 s of
        slot time per stream with 32 workers on 2 cores.
        """
        job = "diagnose" if keep_frames else "diagnose_lean"
        payload = await self._run(
            job,
            uri,
            {**kw, "thresholds": self.thresholds, "reference": reference, "baseline": baseline},
            overall_timeout,
        )
        if isinstance(payload, tuple) and isinstance(payload[0], SampleResult):
            return payload[0], payload[1]
        result = _failed(uri, *payload)
        return result, diagnose([], thresholds=self.thresholds)

    def close(self) -> None:
        """Stop every worker now (idle ones hold no state; running jobs end as failures)."""
        self._closed = True
        for worker in list(self._all):
            with contextlib.suppress(Exception):
                worker.conn.send(None)
            worker.kill()
        for worker in list(self._all):
            worker.process.join(timeout=1.0)
        self._all.clear()
        self._idle.clear()

    def _deadline(self, kw: dict[str, Any]) -> float:
        """Worst case of `sample_frames` with these arguments, plus the margin.

        Charged with the longest window (`max_seconds`), not `seconds`: a slow stream reading on
        to `min_frames` is working as intended and must never be killed for it.
        """
        get = kw.get
        max_seconds = get("max_seconds")
        return (
            float(get("open_timeout", 4.0))
            + OPEN_GRACE
            + float(get("read_timeout", 3.0))
            + _max_seconds(
                float(get("seconds", 3.0)), None if max_seconds is None else float(max_seconds)
            )
            + float(get("stall_timeout", 2.0))
            + self._margin
        )

    async def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child,), daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent)
        self._all.add(worker)
        try:
            await _wait_readable(parent, self._start_timeout)
            hello = parent.recv()  # tiny message, already complete
            if hello != ("ready", None):
                raise RuntimeError(f"unexpected worker greeting {hello!r}")
        except BaseException:
            self._discard(worker)
            raise
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self._all.discard(worker)

    async def _run(self, name: str, uri: str, kw: dict[str, Any], limit_s: float | None) -> Any:
        """Run a job; returns its payload or (failure, error) when the worker failed."""
        if self._closed:
            raise RuntimeError("FrameSampler is closed")
        unknown = set(kw) - _SAMPLE_ARGS - {"thresholds", "reference", "baseline"}
        if unknown:
            raise TypeError(f"unknown sampling arguments: {sorted(unknown)}")
        limit = self._deadline(kw) if limit_s is None else limit_s
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._spawn()
            healthy = False
            try:
                start = time.monotonic()
                worker.conn.send((name, uri, kw))
                try:
                    await _wait_readable(worker.conn, limit)
                    remaining = max(0.5, limit - (time.monotonic() - start))
                    # A few MB of frames: unpickle off the loop; a dead worker means EOF.
                    status, payload, exiting = await asyncio.wait_for(
                        asyncio.to_thread(worker.conn.recv), remaining
                    )
                except TimeoutError:
                    return (
                        "timeout",
                        f"sampling did not finish within {limit:.1f} s; worker killed",
                    )
                except (EOFError, OSError):
                    return ("worker", "the sampling worker died")
                if status != "ok":
                    return ("worker", f"sampling failed in the worker: {payload}")
                # A worker whose capture thread is stuck exits after answering: replace it.
                healthy = not exiting
                return payload
            finally:
                if healthy and not self._closed:
                    self._idle.append(worker)
                else:
                    self._discard(worker)


def _failed(uri: str, failure: SampleFailure, error: str) -> SampleResult:
    redacted = redact_uri(uri)
    return SampleResult(uri=redacted, failure=failure, error=f"{error} [{redacted}]")
