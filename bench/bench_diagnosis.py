"""Frame diagnosis throughput (streams sampled and diagnosed per second) and memory per
concurrent capture, with the real FrameSampler process pool against GStreamer 360p streams.

    python bench/bench_diagnosis.py [--processes 32] [--streams 96] [--seconds 3] [--repeat 3]

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
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median
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


async def diagnose_rate(
    sampler: FrameSampler, uris: list[str], count: int, seconds: float
) -> tuple[float, int, list[tuple[int, int, int]]]:
    """(diagnosed streams/s, failed, memory samples (workers, RSS KiB, PSS KiB)) for `count`
    streams."""
    cycle = itertools.cycle(uris)
    failed = 0
    samples: list[tuple[int, int, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            pids = worker_pids(sampler)
            mem = [memory_kib(p) for p in pids]
            samples.append((len(pids), sum(m[0] for m in mem), sum(m[1] for m in mem)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)

    async def one() -> None:
        nonlocal failed
        result, diagnosis = await sampler.diagnose_stream(next(cycle), seconds=seconds)
        if result.failure is not None or "signal_loss" in diagnosis.fired:
            failed += 1

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - start
    done.set()
    await watcher
    # Only streams that yielded frames count: a failed open is not a diagnosis.
    return (count - failed) / elapsed, failed, samples


async def ffmpeg_rate(
    ffmpeg: str, uris: list[str], parallel: int, count: int, seconds: float
) -> tuple[float, int]:
    cycle = itertools.cycle(uris)
    slots = asyncio.Semaphore(parallel)
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with slots:
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
                await proc.wait()
            if proc.returncode != 0:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - start), failed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=32, help="concurrent captures")
    parser.add_argument("--streams", type=int, default=96, help="streams diagnosed per run")
    parser.add_argument("--seconds", type=float, default=3.0, help="sampling window (worker: 3)")
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
    anchors: list[float] = []
    per_worker_rss: list[float] = []
    per_worker_pss: list[float] = []
    worker_cpu: list[float] = []
    with gstreamer_servers(args.servers, mounts, args.size, live=args.live) as (uris, server_pids):
        print(f"{len(uris)} GStreamer {args.size} endpoints; {args.processes} sampler processes")
        async with FrameSampler(processes=args.processes) as sampler:
            # Spawn every worker (importing OpenCV) before timing: a worker lives for many
            # cameras, so its start-up is not a per-stream cost.
            await asyncio.gather(
                *(sampler.sample(uris[i % len(uris)], seconds=0.2) for i in range(args.processes))
            )
            for i in range(args.repeat):
                cpu0, srv0 = time.process_time(), cpu_seconds(server_pids)
                pids = worker_pids(sampler)
                work0 = cpu_seconds(pids)
                rate, failed, samples = await diagnose_rate(
                    sampler, uris, args.streams, args.seconds
                )
                busy = [s for s in samples if s[0]]
                rss = max(s[1] for s in busy) / max(s[0] for s in busy) / 1024
                pss = max(s[2] for s in busy) / max(s[0] for s in busy) / 1024
                work_s = cpu_seconds(pids) - work0  # workers replaced mid-run are not counted
                worker_cpu.append(work_s / args.streams)
                rates.append(rate)
                per_worker_rss.append(rss)
                per_worker_pss.append(pss)
                print(
                    f"  run {i + 1}: {rate:5.2f} streams/s ({failed} failed); per capture "
                    f"RSS {rss:.0f} MiB, PSS {pss:.0f} MiB; CPU: workers {work_s:.0f} s, GStreamer "
                    f"{cpu_seconds(server_pids) - srv0:.0f} s, parent CPU "
                    f"{time.process_time() - cpu0:.1f} s",
                    flush=True,
                )
                rate, failed = await ffmpeg_rate(
                    ffmpeg, uris, args.processes, args.streams, args.seconds
                )
                anchors.append(rate)
                print(
                    f"  run {i + 1}: anchor ffmpeg decode: {rate:5.2f} streams/s ({failed} failed)"
                )
    r, a = median(rates), median(anchors)
    print(f"\nmedians of {args.repeat} runs of {args.streams} streams, {args.seconds:g} s windows:")
    print(f"FrameSampler sample+diagnose, {args.processes} processes  {r:6.2f} streams/s")
    print(f"anchor: ffmpeg -f null, {args.processes} parallel          {a:6.2f} streams/s")
    print(f"ratio                                            {r / a:6.2f}")
    print(
        f"memory per concurrent capture: RSS {median(per_worker_rss):.0f} MiB, "
        f"PSS {median(per_worker_pss):.0f} MiB (worker process incl. OpenCV/FFmpeg)"
    )
    print(f"worker CPU per diagnosed stream: {median(worker_cpu):.2f} s")
    print("target: ≥ 10 streams/s per 2-core machine")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
