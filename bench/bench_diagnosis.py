"""Frame diagnosis throughput (streams sampled and diagnosed per second) and memory per
concurrent capture, with the real FrameSampler process pool against GStreamer 360p streams.

    python bench/bench_diagnosis.py [--processes 32] [--streams 160] [--seconds 2] [--repeat 3]

Each stream is what a worker does for a camera whose daily diagnosis is due: open over RTSP
(TCP first), read `--seconds` of frames, downscale, diagnose, keep a JPEG thumbnail. The
sampler runs `--processes` captures at once (one per worker process). Memory: RSS and PSS of
the worker processes, sampled every 0.5 s while they capture (PSS shares the OpenCV/FFmpeg
libraries fairly between processes, so it is the figure to sum). Anchor, same run and same
streams: `ffmpeg -rtsp_transport tcp -i URI -t <seconds> -vf scale=320:-2 -f null -`,
`--processes` at a time (decode only, no diagnosis). The streams are a pre-encoded H.264 file
served as is (`--live`: encoded for every client, as the tests do), and the GStreamer server's
CPU is reported beside ours. Needs ffmpeg (Debian:
`apt-get install -y ffmpeg`) and GStreamer's RTSP server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, pct
from bench.rtsp_endpoints import cpu_seconds, gstreamer_servers
from health.frames import FrameSampler


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def worker_pids(sampler: FrameSampler) -> list[int]:
    return [w.process.pid for w in list(sampler._all) if w.process.pid is not None]


async def stagger(i: int, parallel: int, seconds: float) -> None:
    """Spread the first `parallel` starts over one window, as cameras falling due one by one
    do in a worker; without it every round opens, decodes and diagnoses in lock-step and the
    bench measures a thundering herd (≈ 1 s per round lost on 2 cores) instead of a pool."""
    if i < parallel:
        await asyncio.sleep(i * seconds / parallel)


def steady(done_at: list[float], parallel: int) -> float:
    """Streams/s while the pool is full: between the `parallel`-th completion (the ramp-up of
    staggered first starts is over) and the `parallel`-th from last (the drain, when slots
    empty with no camera left to start, has not begun). A worker's pool runs that way all day;
    the ends of a 160-stream run are this bench's, not the worker's."""
    ends = sorted(done_at)
    first, last = parallel, len(ends) - parallel
    if last - first < 2:
        return math.nan
    return (last - first) / (ends[last] - ends[first])


async def diagnose_rate(
    sampler: FrameSampler, uris: list[str], count: int, seconds: float
) -> tuple[float, float, int, list[tuple[int, int, int]]]:
    """(diagnosed streams/s end to end, in the steady state, failed, memory samples (workers,
    RSS KiB, PSS KiB)) for `count` streams."""
    cycle = itertools.cycle(uris)
    failed = 0
    samples: list[tuple[int, int, int]] = []
    first_ms: list[float] = []
    slot_s: list[float] = []
    held_s: list[float] = []
    seen: set[int] = set()
    done_at: list[float] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            pids = worker_pids(sampler)
            seen.update(pids)
            mem = [memory_kib(p) for p in pids]
            samples.append((len(pids), sum(m[0] for m in mem), sum(m[1] for m in mem)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)

    slots = asyncio.Semaphore(sampler.processes)

    async def one(i: int) -> None:
        nonlocal failed
        async with slots:
            await stagger(i, sampler.processes, seconds)
            t0 = time.perf_counter()
            result, diagnosis = await sampler.diagnose_stream(
                next(cycle), seconds=seconds, keep_frames=False
            )
            held_s.append(time.perf_counter() - t0)
        slot_s.append(result.elapsed_ms / 1000)
        if result.first_frame_ms is not None:
            first_ms.append(result.first_frame_ms)
        if result.failure is not None or "signal_loss" in diagnosis.fired:
            failed += 1
        else:
            done_at.append(time.perf_counter())

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    done.set()
    await watcher
    if first_ms:
        print(
            f"    first frame after {median(first_ms):.0f} ms (p90 {pct(first_ms, 90):.0f}); "
            f"sampling took {median(slot_s):.2f} s per stream (p90 {pct(slot_s, 90):.2f}), "
            f"the slot was held {median(held_s):.2f} s (p90 {pct(held_s, 90):.2f}); "
            f"{len(seen)} worker processes seen"
        )
    # Only streams that yielded frames count: a failed open is not a diagnosis.
    return (count - failed) / elapsed, steady(done_at, sampler.processes), failed, samples


async def ffmpeg_rate(
    ffmpeg: str, uris: list[str], parallel: int, count: int, seconds: float
) -> tuple[float, float, int]:
    """(streams/s end to end, in the steady state, failed) for `count` ffmpeg decodes."""
    cycle = itertools.cycle(uris)
    slots = asyncio.Semaphore(parallel)
    failed = 0
    done_at: list[float] = []

    async def one(i: int) -> None:
        nonlocal failed
        async with slots:
            await stagger(i, parallel, seconds)
            proc = await asyncio.create_subprocess_exec(
                ffmpeg,
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-analyzeduration",
                "100000",
                "-probesize",
                "32768",
                "-i",
                next(cycle),
                "-t",
                str(seconds),
                "-vf",
                "scale=320:-2",
                "-f",
                "null",
                "-",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await asyncio.wait_for(proc.wait(), seconds + 20)
            except TimeoutError:
                proc.kill()
                # Bounded: under a load average of 40 asyncio's child watcher once lost an
                # ffmpeg's exit ("Unknown child process") and this wait hung the bench.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode != 0:
                failed += 1
            else:
                done_at.append(time.perf_counter())

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return count / (time.perf_counter() - start), steady(done_at, parallel), failed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=32, help="concurrent captures")
    parser.add_argument("--streams", type=int, default=160, help="streams diagnosed per run")
    parser.add_argument("--seconds", type=float, default=2.0, help="sampling window (worker: 2)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--servers", type=int, default=2, help="GStreamer server processes")
    parser.add_argument(
        "--live",
        action="store_true",
        help="encode the test picture live for every client (default: serve a pre-encoded file)",
    )
    parser.add_argument("--size", default="640x360", help="stream picture size")
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print(
            "ffmpeg not found: the anchor of this benchmark is FFmpeg's command-line decoder. "
            "Install it (Debian/Ubuntu: sudo apt-get install -y ffmpeg) and run again.",
            file=sys.stderr,
        )
        return 2
    mounts = max(1, args.processes // args.servers)
    rates: list[float] = []
    steady_rates: list[float] = []
    steady_anchors: list[float] = []
    anchors: list[float] = []
    per_worker_rss: list[float] = []
    per_worker_pss: list[float] = []
    worker_cpu: list[float] = []
    # Cores used while timed (CPU seconds / wall seconds), per party, for each run.
    cores: dict[str, list[float]] = {"workers": [], "server": [], "parent": [], "ffmpeg": []}
    anchor_server: list[float] = []
    with gstreamer_servers(args.servers, mounts, args.size, live=args.live) as (uris, server_pids):
        print(f"{len(uris)} GStreamer {args.size} endpoints; {args.processes} sampler processes")
        # 32 processes importing OpenCV at once on a loaded 2-core machine can take > 30 s.
        load0 = os.getloadavg()
        print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
        up0 = time.perf_counter()
        async with FrameSampler(processes=args.processes, start_timeout=180.0) as sampler:
            # Spawn every worker (importing OpenCV) before timing: a worker lives for many
            # cameras, so its start-up is not a per-stream cost. Reported on its own.
            await asyncio.gather(
                *(sampler.sample(uris[i % len(uris)], seconds=0.2) for i in range(args.processes))
            )
            up_s = time.perf_counter() - up0
            up_cpu = cpu_seconds(worker_pids(sampler))
            print(
                f"start-up: {args.processes} worker processes ready and warm after {up_s:.1f} s, "
                f"{up_cpu:.1f} CPU-s in them ({up_cpu / args.processes:.2f} s each, one short "
                "sample included)",
                flush=True,
            )
            for i in range(args.repeat):
                cpu0, srv0 = time.process_time(), cpu_seconds(server_pids)
                pids = worker_pids(sampler)
                work0 = cpu_seconds(pids)
                wall0 = time.perf_counter()
                rate, steady_rate, failed, samples = await diagnose_rate(
                    sampler, uris, args.streams, args.seconds
                )
                steady_rates.append(steady_rate)
                wall = time.perf_counter() - wall0
                srv_s = cpu_seconds(server_pids) - srv0
                parent_s = time.process_time() - cpu0
                busy = [s for s in samples if s[0]]
                rss = max(s[1] for s in busy) / max(s[0] for s in busy) / 1024
                pss = max(s[2] for s in busy) / max(s[0] for s in busy) / 1024
                work_s = cpu_seconds(pids) - work0  # workers replaced mid-run are not counted
                worker_cpu.append(work_s / args.streams)
                cores["workers"].append(work_s / wall)
                cores["server"].append(srv_s / wall)
                cores["parent"].append(parent_s / wall)
                rates.append(rate)
                per_worker_rss.append(rss)
                per_worker_pss.append(pss)
                print(
                    f"  run {i + 1}: {rate:5.2f} streams/s end to end, {steady_rate:5.2f} in the "
                    f"steady state ({failed} failed; load {os.getloadavg()[0]:.1f}); per capture "
                    f"RSS {rss:.0f} MiB, PSS {pss:.0f} MiB; CPU: workers {work_s:.0f} s, GStreamer "
                    f"{srv_s:.1f} s, parent {parent_s:.1f} s over {wall:.1f} s",
                    flush=True,
                )
                kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                srv0, wall0 = cpu_seconds(server_pids), time.perf_counter()
                rate, steady_rate, failed = await ffmpeg_rate(
                    ffmpeg, uris, args.processes, args.streams, args.seconds
                )
                steady_anchors.append(steady_rate)
                wall = time.perf_counter() - wall0
                kids = resource.getrusage(resource.RUSAGE_CHILDREN)
                ff_s = kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime
                cores["ffmpeg"].append(ff_s / wall)
                anchor_server.append((cpu_seconds(server_pids) - srv0) / wall)
                anchors.append(rate)
                print(
                    f"  run {i + 1}: anchor ffmpeg decode: {rate:5.2f} streams/s, "
                    f"{steady_rate:5.2f} "
                    f"steady ({failed} failed; load {os.getloadavg()[0]:.1f});"
                    f" CPU: ffmpeg {ff_s:.1f} s, GStreamer {anchor_server[-1] * wall:.1f} s "
                    f"over {wall:.1f} s",
                    flush=True,
                )
    r, a = median(rates), median(anchors)
    print(f"\nmedians of {args.repeat} runs of {args.streams} streams, {args.seconds:g} s windows:")
    print(f"FrameSampler sample+diagnose, {args.processes} processes  {r:6.2f} streams/s")
    print(f"anchor: ffmpeg -f null, {args.processes} parallel          {a:6.2f} streams/s")
    print(f"ratio                                            {r / a:6.2f}")
    sr, sa = median(steady_rates), median(steady_anchors)
    print(
        f"steady state (pool full): ours {sr:.2f}, anchor {sa:.2f} streams/s, ratio {sr / sa:.2f}"
    )
    print(
        f"memory per concurrent capture: RSS {median(per_worker_rss):.0f} MiB, "
        f"PSS {median(per_worker_pss):.0f} MiB (worker process incl. OpenCV/FFmpeg)"
    )
    print(f"worker CPU per diagnosed stream: {median(worker_cpu):.3f} s")
    c = {k: median(v) for k, v in cores.items()}
    print(
        f"cores used (CPU s / wall s), sampler runs: workers {c['workers']:.2f}, GStreamer "
        f"server {c['server']:.2f}, bench parent {c['parent']:.2f}; anchor runs: ffmpeg "
        f"{c['ffmpeg']:.2f}, GStreamer server {median(anchor_server):.2f} (of {os.cpu_count()})"
    )
    print("target: ≥ 10 streams/s per 2-core machine")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
