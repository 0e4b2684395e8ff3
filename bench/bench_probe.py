"""Protocol probes (OPTIONS + DESCRIBE, health/rtsp.py) per second from ONE process, beside
the usual operations script, `ffprobe`, 16 in parallel, over the same endpoints, same run.

    python bench/bench_probe.py [--seconds 8] [--repeat 3] [--concurrency 200]

Three measurements, each repeated, medians reported:
1. `probe_rtsp` against GStreamer RTSP servers on loopback (real H.264 streams served from a
   pre-encoded file; every DESCRIBE makes the server build a pipeline that demuxes it, or with
   `--live` one with an encoder), 16 probes in flight, like the anchor;
2. the anchor: `ffprobe -rtsp_transport tcp -analyzeduration 200000 -probesize 32768` over
   the same GStreamer endpoints, 16 processes in parallel;
3. `probe_rtsp` against a lightweight responder in a separate process (real sockets, fixed
   SDP), `--concurrency` in flight: the client's own rate, where the GStreamer server is not
   in the way.
Needs ffprobe (Debian: `apt-get install -y ffmpeg`) and GStreamer's RTSP server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median
from bench.rtsp_endpoints import cpu_seconds, gstreamer_servers, responder
from health.rtsp import probe_rtsp

FFPROBE_ARGS = ("-rtsp_transport", "tcp", "-analyzeduration", "200000", "-probesize", "32768")


CPU: dict[str, list[float]] = {}  # label -> [client CPU s, server CPU s, probes]


async def probe_rate(
    uris: list[str], concurrency: int, seconds: float, servers: list[int] | None = None
) -> tuple[float, int, int]:
    """(probes/s, ok, failed) of `concurrency` loops probing `uris` round-robin for `seconds`.

    With `servers`, also adds this process's and the servers' CPU seconds to `CPU`, to show
    which side is the bottleneck."""
    cpu0, srv0 = time.process_time(), cpu_seconds(servers or [])
    cycle = itertools.cycle(uris)
    ok = failed = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal ok, failed
        while time.perf_counter() < deadline:
            result = await probe_rtsp(
                next(cycle), username=None, password=None, connect_timeout=2, request_timeout=3
            )
            if result.ok:
                ok += 1
            else:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    if servers is not None:
        acc = CPU.setdefault(f"{concurrency} in flight, {len(uris)} endpoints", [0.0, 0.0, 0])
        acc[0] += time.process_time() - cpu0
        acc[1] += cpu_seconds(servers) - srv0
        acc[2] += ok + failed
    return (ok + failed) / elapsed, ok, failed


async def ffprobe_rate(
    ffprobe: str, uris: list[str], parallel: int, count: int
) -> tuple[float, int]:
    """(probes/s, failed) of `count` ffprobe runs, `parallel` at a time, over `uris`."""
    cycle = itertools.cycle(uris)
    slots = asyncio.Semaphore(parallel)
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with slots:
            proc = await asyncio.create_subprocess_exec(
                ffprobe,
                "-v",
                "error",
                *FFPROBE_ARGS,
                "-show_entries",
                "stream=codec_name,width,height",
                "-of",
                "csv=p=0",
                next(cycle),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                out = b""
            if proc.returncode != 0 or b"h264" not in out:
                failed += 1

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - start), failed


def show(run: int, what: str, rate: float, bad: int) -> None:
    print(f"  run {run}: {what:<40} {rate:8.1f}/s ({bad} failed)", flush=True)


def summary(what: str, rate: float, anchor: float | None) -> None:
    ratio = f"  ratio {rate / anchor:6.1f}×" if anchor else ""
    print(f"{what:<44} {rate:8.1f} probes/s{ratio}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each probe run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=200, help="probes in flight (responder)")
    parser.add_argument("--servers", type=int, default=2, help="GStreamer server processes")
    parser.add_argument(
        "--live",
        action="store_true",
        help="encode the test picture live for every client (default: serve a pre-encoded file)",
    )
    parser.add_argument("--mounts", type=int, default=32, help="mounts per GStreamer server")
    parser.add_argument("--ffprobe-count", type=int, default=48, help="ffprobe runs per repeat")
    args = parser.parse_args()
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        print(
            "ffprobe not found: the anchor of this benchmark is FFmpeg's ffprobe. "
            "Install it (Debian/Ubuntu: sudo apt-get install -y ffmpeg) and run again.",
            file=sys.stderr,
        )
        return 2

    ours_gst: list[float] = []
    ours_gst_wide: list[float] = []
    anchor: list[float] = []
    ours_light: list[float] = []
    wide = args.concurrency
    with gstreamer_servers(args.servers, args.mounts, live=args.live) as (gst, gst_pids):
        print(f"{len(gst)} GStreamer endpoints ({args.servers} servers × {args.mounts} mounts)")
        # Warm up both (first pipelines, page cache of ffprobe's libraries).
        await probe_rate(gst, 4, 1.0)
        await ffprobe_rate(ffprobe, gst, 4, 4)
        for i in range(args.repeat):
            rate, _, bad = await probe_rate(gst, 16, args.seconds, gst_pids)
            ours_gst.append(rate)
            show(i + 1, "probe_rtsp → GStreamer, 16 in flight", rate, bad)
            rate, _, bad = await probe_rate(gst, wide, args.seconds, gst_pids)
            ours_gst_wide.append(rate)
            show(i + 1, f"probe_rtsp → GStreamer, {wide} in flight", rate, bad)
            rate, bad = await ffprobe_rate(ffprobe, gst, 16, args.ffprobe_count)
            anchor.append(rate)
            show(i + 1, "ffprobe → GStreamer, 16 parallel", rate, bad)
    with responder(32, 8) as (light, light_pids):
        print(f"{len(light)} responder endpoints (32 ports × 8 paths, separate process)")
        await probe_rate(light, 16, 1.0)
        for i in range(args.repeat):
            rate, _, bad = await probe_rate(light, wide, args.seconds, light_pids)
            ours_light.append(rate)
            show(i + 1, f"probe_rtsp → responder, {wide} in flight", rate, bad)
    g, gw, a = median(ours_gst), median(ours_gst_wide), median(anchor)
    light_rate = median(ours_light)
    print(
        f"\nmedians of {args.repeat} runs ({args.seconds:g} s each; ffprobe {args.ffprobe_count})"
    )
    summary("probe_rtsp → GStreamer, 16 in flight", g, a)
    summary(f"probe_rtsp → GStreamer, {wide} in flight", gw, a)
    summary("anchor: ffprobe → GStreamer, 16 parallel", a, None)
    summary(f"probe_rtsp → responder, {wide} in flight", light_rate, a)
    print("CPU per probe (all runs), client process / server processes:")
    for label, (client_s, server_s, probes) in CPU.items():
        print(
            f"  {label:<34} {client_s / probes * 1e3:6.2f} ms / {server_s / probes * 1e3:6.2f} ms"
        )
    print("targets: ≥ 500 probes/s per process, ≥ 20× the ffprobe script")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
