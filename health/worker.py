"""The probe worker: lease due cameras, probe them under global and per-host caps, record.

Run in-process by `camreg serve` or as any number of `camreg worker` processes on any number
of machines; they coordinate only through their leases in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from camera_registry.crypto import CredentialBox
from camera_registry.store.streams import with_credentials
from health import store
from health.diagnosis import Diagnosis, with_ptz
from health.errors import (
    DiagnosisUnavailable,
    HealthError,
    MediaBusy,
    MediaUnavailable,
    PtzUnavailable,
)
from health.frames import FrameSampler
from health.media import MediaOpener
from health.ptz import PtzMover, picture_change
from health.reference import decode_reference, encode_reference
from health.rtsp import ProbeResult, probe_rtsp
from health.status import (
    Outcome,
    StatusPolicy,
    Transition,
    Verdict,
    diagnosis_due,
    judge,
    step,
)

log = logging.getLogger(__name__)

Prober = Callable[[store.Lease], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    batch: int = 200
    lease_s: float = 60.0
    concurrency: int = 200  # protocol probes in flight per worker
    per_host: int = 4  # sessions per device host: an NVR's 64 channels never get 64 at once
    interval_level1_s: float = 300.0
    interval_s: float = 900.0
    max_backoff_s: float = 3600.0
    jitter: float = 0.1
    idle_sleep_s: float = 2.0
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 3.0
    diagnose_every_s: float = 86_400.0  # frames checked at least daily, on a rotating sample
    # 2 s of frames: every check but `frozen` is a per-frame median, and `frozen` needs a run of
    # 10 similar frames, which 2 s holds at ≥ 5.5 fps (30 frames at a sub-stream's usual 15).
    # Slower streams (1–5 fps sub-streams) are read on to frozen_frames + 2 frames, for at most
    # 3 × this (≤ 8 s): see `health.frames.sample_frames`.
    # Each extra second costs a capture slot a second and ≈ 0.03 CPU-s of decoding (360p).
    sample_seconds: float = 2.0


def next_interval(level: int, failures: int, cfg: WorkerConfig, rnd: random.Random) -> float:
    """Level 1 every 5 min, others every 15; offline cameras back off, all jittered so a
    province's cameras never fall due in lock-step."""
    base = cfg.interval_level1_s if level == 1 else cfg.interval_s
    if failures > 0:
        base = min(base * 2 ** min(failures - 1, 10), max(cfg.max_backoff_s, base))
    return base * (1 + rnd.uniform(-cfg.jitter, cfg.jitter))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        box: CredentialBox,
        cfg: WorkerConfig | None = None,
        *,
        owner: str | None = None,
        policy: StatusPolicy | None = None,
        prober: Prober | None = None,
        on_probe: Callable[[ProbeResult, float], None] | None = None,
        sampler: FrameSampler | None = None,
    ) -> None:
        self.pool = pool
        self.box = box
        self.cfg = cfg or WorkerConfig()
        self.owner = owner or worker_id()
        self.policy = policy or StatusPolicy()
        self.prober = prober or self._probe
        self.on_probe = on_probe  # metrics hook: (result, seconds)
        self.sampler = sampler  # frame diagnosis; None = protocol probes only
        # Frame diagnosis of channels without a stream URI (GB/T 28181), through the media
        # server; None: such channels are never diagnosed here (set by the composition).
        self.media_opener: MediaOpener | None = None
        # 云台失控 checks (`Thresholds.ptz_check`): moves PTZ cameras over ONVIF; None: never
        # (set by the composition).
        self.ptz_mover: PtzMover | None = None
        self.media_idle_s = 15.0
        self._media_poke = asyncio.Event()
        self.media_diagnosed = 0
        self._global = asyncio.Semaphore(self.cfg.concurrency)
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.cfg.per_host)
        )
        self._rnd = random.Random()
        self._frames_in_flight = 0
        self._cursor = store.LeaseCursor()  # where this worker's scan of the due queue resumes
        self.probed = 0

    async def _probe(self, lease: store.Lease) -> ProbeResult:
        if not lease.uri:
            return ProbeResult(
                uri="",
                ok=False,
                failure="not_found",
                detail="no stream URI is registered for this camera",
            )
        try:
            return await probe_rtsp(
                lease.uri,
                username=lease.username,
                password=lease.password,
                connect_timeout=self.cfg.connect_timeout_s,
                request_timeout=self.cfg.request_timeout_s,
            )
        except HealthError as exc:  # a registry row to fix, e.g. not an rtsp:// URI
            return ProbeResult(uri="", ok=False, failure="protocol_error", detail=str(exc))

    async def _one(
        self, lease: store.Lease, *, now_please: bool = False, accept_reference: bool = False
    ) -> store.ProbeRecord:
        """Probe (and maybe diagnose) one leased camera; the result is stored by the caller.

        The probe feeds reachability, the diagnosis (when one ran) the picture: two
        dimensions of one status (`health.status`). Both land at the same instant, so when
        both move the status, one transition from the old status to the final one is kept.
        `now_please` (an operator asked) diagnoses whether due or not, waiting for a capture
        process instead of skipping; `accept_reference` keeps the picture as the scene
        reference.
        """
        diagnosis: dict[str, Any] | None = None
        thumbnail: bytes | None = None
        verdict: tuple[Verdict, tuple[str, ...]] | None = None
        reference: bytes | None = None
        async with self._global, self._hosts[lease.host]:
            started = time.perf_counter()
            result = await self.prober(lease)
            if self.on_probe is not None:
                self.on_probe(result, time.perf_counter() - started)
            outcome: Outcome = "ok" if result.ok else "fail"
            wanted = now_please and self.sampler is not None and bool(lease.uri)
            if result.ok and (wanted or (self._diagnosis_due(lease) and self._take_frame_slot())):
                # A DESCRIBE does not prove frames flow: sample and judge the picture.
                if wanted:
                    self._frames_in_flight += 1
                try:
                    outcome, verdict, diagnosis, thumbnail, picture = await self._diagnose(lease)
                finally:
                    self._frames_in_flight -= 1
                if picture is not None and (
                    accept_reference or (lease.reference is None and verdict == ("clean", ()))
                ):
                    reference = picture
        now = max(time.time(), lease.state.since)
        state, transition = step(lease.state, outcome, now, self.policy)
        if verdict is not None:
            state, second = judge(state, verdict[0], now, self.policy, verdict[1])
            transition = _merged(transition, second)
        failures = 0 if result.ok else lease.failures + 1
        next_in_s = next_interval(lease.level, failures, self.cfg, self._rnd)
        if state.recheck_at is not None:
            # A suspect picture is diagnosed again soon, not at the next daily turn.
            next_in_s = min(next_in_s, max(1.0, state.recheck_at - now))
        self.probed += 1
        return store.ProbeRecord(
            lease,
            state,
            transition,
            _summary(result),
            failures,
            next_in_s,
            diagnosis,
            thumbnail,
            reference,
            "accepted" if accept_reference else "first_clean",
        )

    async def _store(self, records: list[store.ProbeRecord]) -> None:
        kept = await store.record_many(self.pool, self.owner, records)
        for rec, ok in zip(records, kept, strict=True):
            if not ok:
                log.warning("lease on %s expired before its probe finished", rec.lease.camera_id)

    def _diagnosis_due(self, lease: store.Lease) -> bool:
        if self.sampler is None or not lease.uri:
            return False
        if diagnosis_due(lease.state, time.time()):
            return True  # a suspect picture's re-diagnosis
        if lease.state.picture == "faulty":
            # A degraded camera is looked at again at each probe (a few per cent of cameras),
            # so a repaired one clears within a probe interval, not at the next daily turn.
            return True
        return lease.diagnosed_at is None or (
            time.time() - lease.diagnosed_at >= self.cfg.diagnose_every_s
        )

    def _take_frame_slot(self) -> bool:
        """Claim a capture slot now, or skip this camera's diagnosis until its next probe.

        Never queue for the sampler: a batch of 200 leased cameras all due for diagnosis (a
        fresh deployment) behind two capture processes would take minutes, every lease would
        expire, and the probes' results would be thrown away. A camera skipped here stays due
        and is diagnosed at a later probe, so the sampler runs at full capacity without ever
        holding a lease hostage. Check and claim happen without an await in between, so
        concurrent probes cannot overbook.
        """
        if self.sampler is None or self._frames_in_flight >= self.sampler.processes:
            return False
        self._frames_in_flight += 1
        return True

    async def _diagnose(
        self, lease: store.Lease
    ) -> tuple[
        Outcome,
        tuple[Verdict, tuple[str, ...]] | None,
        dict[str, Any],
        bytes | None,
        bytes | None,
    ]:
        """(probe outcome, picture verdict and its fault flags, report, thumbnail, this
        sample's picture as a PNG reference candidate).

        The camera's scene reference goes with the job, so 场景变更 and 遮挡 are judged. A
        stream that opens but sends no frames (or stalls before the first) is 信号丢失, a
        picture fault of a reachable camera; one that cannot be opened at all (refused,
        timed out, authentication) is a failed probe, as before.
        """
        assert self.sampler is not None and lease.uri
        return await self._diagnose_uri(
            lease, with_credentials(lease.uri, lease.username, lease.password), ptz=True
        )

    async def _ptz_check(
        self, lease: store.Lease, uri: str, diag: Diagnosis
    ) -> tuple[Diagnosis, dict[str, Any]]:
        """云台失控: move the camera a little, sample again, compare, move it back (the mover
        does that on the way out, whatever happens in between). Only a picture that was there
        before and is not frozen or lost can show a move; a camera the mover cannot move is
        not judged. Bounded: each ONVIF call by the mover, the settle wait by
        `ptz_settle_s` (≤ 10 s), the second sample by the sampler's deadline."""
        assert self.sampler is not None and self.ptz_mover is not None
        t = self.sampler.thresholds
        if diag.picture is None or any(n in diag.fired for n in ("signal_loss", "frozen")):
            return diag, {"moved": False, "detail": "no live picture to move"}
        try:
            async with self.ptz_mover(lease.camera_id, t.ptz_pan):
                await asyncio.sleep(t.ptz_settle_s)
                # Every check but the move is already judged: a short sample is enough for a
                # median picture.
                _, moved = await self.sampler.diagnose_stream(
                    uri, seconds=1.0, min_frames=3, max_frames=10, keep_frames=False
                )
        except PtzUnavailable as exc:
            return diag, {"moved": False, "detail": str(exc)[:300]}
        except (OSError, asyncpg.PostgresError) as exc:
            # The registry could not be read for the camera's address: the picture is still
            # judged and recorded, the head at the next diagnosis.
            return diag, {"moved": False, "detail": f"PTZ target unavailable: {type(exc).__name__}"}
        if moved.picture is None:
            value = float("nan")
            detail: str | None = "no picture after the move"
        else:
            value = picture_change(diag.picture, moved.picture)
            detail = None if value == value else "the view has too little structure to judge"
        return with_ptz(diag, value, t), {"moved": True, "detail": detail}

    async def _diagnose_uri(
        self, lease: store.Lease, uri: str, *, ptz: bool = False
    ) -> tuple[
        Outcome,
        tuple[Verdict, tuple[str, ...]] | None,
        dict[str, Any],
        bytes | None,
        bytes | None,
    ]:
        assert self.sampler is not None
        reference, baseline = decode_reference(lease.reference)
        # One frame more than a frozen run needs, plus slack, however slow the stream.
        min_frames = self.sampler.thresholds.frozen_frames + 2
        sample, diag = await self.sampler.diagnose_stream(
            uri,
            seconds=self.cfg.sample_seconds,
            min_frames=min_frames,
            # keep at least a frozen run's worth: a thinned sample could never show one
            max_frames=max(20, min_frames),
            keep_frames=False,
            reference=reference,
            baseline=baseline,
        )
        ptz_report: dict[str, Any] | None = None
        if ptz and self.ptz_mover is not None and self.sampler.thresholds.ptz_check:
            diag, ptz_report = await self._ptz_check(lease, uri, diag)
        flags = {
            name: {
                "label": f.label,
                "fired": f.fired,
                "fault": f.fault,
                "masked_by": f.masked_by,
                "value": None if f.value != f.value else f.value,
                "threshold": f.threshold,
            }
            for name, f in diag.flags.items()
        }
        report = {
            "faulty": diag.faulty,
            "fired": list(diag.fired),
            "faults": list(diag.faults),
            "warnings": list(diag.warnings),
            "frames": diag.frames,
            "flags": flags,
            "open_ms": sample.open_ms,
            "transport": sample.transport,  # "tcp", or "default" when the device refused TCP
            "fps": sample.fps_measured,
            "stalled": sample.stalled,
            "extended": sample.extended,  # too slow for `seconds`: read on to min_frames
            "failure": sample.failure,
            "error": sample.error,
        }
        if ptz_report is not None:
            report["ptz"] = ptz_report
        if diag.frames == 0 and sample.failure not in ("no_frames", "stalled"):
            return "fail", None, report, None, None  # the stream could not be opened at all
        verdict: Verdict = "fault" if diag.faulty else "clean"
        picture = None
        if diag.picture is not None:
            # The sample's statistics go with its picture: if it becomes the reference, they
            # are the camera's baseline.
            picture = encode_reference(diag.picture, diag.baseline)
        return "ok", (verdict, diag.faults), report, sample.thumbnail, picture

    async def run_media_once(self) -> int:
        """Diagnose the frames of due channels that stream only through the media server
        (GB/T 28181); returns how many were diagnosed. As many as there are free capture
        slots, so no lease waits for one; a channel whose device is at its session cap, or
        that found no slot, is given back and stays due."""
        if self.media_opener is None or self.sampler is None:
            return 0
        free = self.sampler.processes - self._frames_in_flight
        if free <= 0:
            return 0
        leases = await store.lease_media(
            self.pool,
            self.owner,
            batch=free,
            lease_s=self.cfg.lease_s,
            diagnose_every_s=self.cfg.diagnose_every_s,
            faulty_every_s=self.cfg.interval_s,
        )
        results = await asyncio.gather(*(self._one_media(le) for le in leases))
        records = [r for r in results if r is not None]
        skipped = [le.camera_id for le, r in zip(leases, results, strict=True) if r is None]
        await store.release(self.pool, self.owner, skipped)
        kept = await store.record_media_many(self.pool, self.owner, records, self.policy)
        for rec, ok in zip(records, kept, strict=True):
            if not ok:
                log.warning("lease on %s expired before its diagnosis", rec.lease.camera_id)
        return len(records)

    async def _one_media(self, lease: store.Lease) -> store.MediaDiagnosis | None:
        """One channel through the media server: open its leg, sample the server's output,
        hang up. Reachability is its device's keepalives' business: only the picture is
        judged. None: not now (session cap or no capture slot)."""
        assert self.media_opener is not None
        if not self._take_frame_slot():
            return None
        verdict: tuple[Verdict, tuple[str, ...]] | None = None
        thumbnail = picture = None
        try:
            async with self._global, self.media_opener(lease.camera_id) as url:
                _, verdict, report, thumbnail, picture = await self._diagnose_uri(lease, url)
        except MediaBusy:
            return None
        except MediaUnavailable as exc:
            report = {"faulty": False, "frames": 0, "failure": "media_unavailable",
                      "error": str(exc)[:300]}  # fmt: skip
        finally:
            self._frames_in_flight -= 1
        self.media_diagnosed += 1
        return store.MediaDiagnosis(lease, verdict, report, thumbnail, picture)

    async def run_once(self) -> int:
        """Lease one batch and probe it; returns how many cameras were leased."""
        leases = await store.lease(
            self.pool,
            self.box,
            self.owner,
            batch=self.cfg.batch,
            lease_s=self.cfg.lease_s,
            per_host=self.cfg.per_host,
            cursor=self._cursor,
        )
        if leases:
            # One transaction for the batch: one commit per batch, not one per camera.
            await self._store(list(await asyncio.gather(*(self._one(le) for le in leases))))
        return len(leases)

    async def diagnose_now(
        self, camera_id: uuid.UUID, *, accept_reference: bool = False
    ) -> dict[str, Any]:
        """Probe and diagnose one camera out of turn (a technician on the ladder asked), with
        the same capture processes and limits as the schedule; recorded like any other.
        `accept_reference` keeps this picture as the camera's scene reference."""
        if self.sampler is None:
            raise DiagnosisUnavailable(
                "frame diagnosis is not running here: start `camreg serve` without "
                "--no-health, or ask a server that runs it"
            )
        lease = await store.lease_one(self.pool, self.box, self.owner, camera_id, self.cfg.lease_s)
        if lease is None:
            return {"diagnosed": False, "detail": "a worker is probing this camera right now"}
        record = await self._one(lease, now_please=True, accept_reference=accept_reference)
        await self._store([record])
        health = await store.camera_health(self.pool, camera_id)
        thumbnail = (
            "data:image/jpeg;base64," + base64.b64encode(record.thumbnail).decode()
            if record.thumbnail
            else None
        )
        return {
            "diagnosed": record.diagnosis is not None,
            "report": record.diagnosis,
            "thumbnail": thumbnail,
            "reference_accepted": accept_reference and record.reference is not None,
            **(health or {}),
        }

    async def probe_now(self, camera_id: uuid.UUID) -> dict[str, Any]:
        """Probe one camera out of turn (an operator asked); it is recorded like any other."""
        leases = await store.lease_one(self.pool, self.box, self.owner, camera_id, self.cfg.lease_s)
        if leases is None:
            return {"probed": False, "detail": "a worker is probing this camera right now"}
        await self._store([await self._one(leases)])
        health = await store.camera_health(self.pool, camera_id)
        return {"probed": True, **(health or {})}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        # Channels diagnosed through the media server wait on an INVITE and a sample, seconds
        # each: their own loop, so they never hold up the RTSP probes' batches.
        media = (
            asyncio.create_task(self._run_media(stop), name="health-media-diagnosis")
            if self.media_opener is not None
            else None
        )
        try:
            await self._run_probes(stop)
        finally:
            if media is not None:
                media.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await media

    async def _run_media(self, stop: asyncio.Event) -> None:
        """Diagnose due channels back to back; when none was (none due, all busy), wait
        `media_idle_s` or a poke: diagnoses are daily, and the due query walks every such
        channel. Ends when `run` cancels it (its stop)."""
        while not stop.is_set():
            try:
                n = await self.run_media_once()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("health worker (media diagnosis): %s; retrying", exc)
                n = 0
            if n == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._media_poke.wait(), max(self.cfg.idle_sleep_s, self.media_idle_s)
                    )
                self._media_poke.clear()

    def poke_media(self) -> None:
        """Look for due channels now (new channels arrived), not after the idle wait."""
        self._media_poke.set()

    async def _run_probes(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.run_once()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("health worker: %s; retrying", exc)
                n = 0
            if n == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.cfg.idle_sleep_s)


def _merged(first: Transition | None, second: Transition | None) -> Transition | None:
    """One transition for two at the same instant (probe, then diagnosis), or none if the
    second undid the first."""
    if first is None or second is None:
        return first or second
    if first.old == second.new:
        return None
    return Transition(first.old, second.new, second.at, f"{first.reason}; {second.reason}")


def _summary(result: ProbeResult) -> dict[str, Any]:
    """What is kept of a probe: outcome, timings, stream facts; never credentials."""
    sdp = asdict(result.sdp) if result.sdp is not None else None
    if sdp is not None:
        sdp.pop("media", None)
    return {
        "ok": result.ok,
        "failure": result.failure,
        "detail": result.detail,
        "status_code": result.status_code,
        "connect_ms": result.connect_ms,
        "options_ms": result.options_ms,
        "describe_ms": result.describe_ms,
        "sdp": sdp,
    }
