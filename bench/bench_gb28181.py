"""GB/T 28181 device access at scale: simulated devices (one UDP source port each; 10 % NVRs
with 32 channels) register with digest to the service's SIP server, hand over their catalogs
into the registry, then keep alive.

Figures (each run on a fresh schema, the service in its own process):
1. time until every device is registered, and until every channel is in the registry
   (gb_catalog_items and cameras), lost and duplicated channels;
2. keepalives/s answered at full load (256 in flight), the service's CPU share;
3. keepalives at a paced rate (default 1,667/s: 100,000 devices every 60 s), its CPU share;
4. anchor: the same keepalive client at full load against SIPp as a UAS answering 200 to
   every MESSAGE (the SIP engine limit of this machine with no application), and the ratio.
Peak RSS of the service process is read from /proc (VmHWM).

    CAMREG_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python bench/bench_gb28181.py --devices 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database_url, fresh_schema, median
from bench.gb28181_load import Device, device_ids, open_devices
from bench.rtsp_endpoints import cpu_seconds

HERE = Path(__file__).resolve().parent


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def keepalive_load(
    devices: list[Device], seconds: float, *, in_flight: int = 256, rate: float | None = None
) -> float:
    """Keepalives answered per second over `seconds` (paced at `rate`, else as fast as answered)."""
    done = 0
    stop = time.perf_counter() + seconds
    sem = asyncio.Semaphore(in_flight)
    sn = 0

    async def one(dev: Device, n: int) -> None:
        nonlocal done
        try:
            await dev.keepalive(n)
            if time.perf_counter() <= stop:
                done += 1
        except TimeoutError:
            pass
        finally:
            sem.release()

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    i = 0
    while time.perf_counter() < stop:
        await sem.acquire()
        if rate is not None:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sn += 1
        task = asyncio.create_task(one(devices[i % len(devices)], sn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)
    return done / seconds


async def run_once(
    url: str, n: int, nvr_share: float, seconds: float, rate: float
) -> dict[str, float]:
    async with fresh_schema(url, "gb") as schema:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "gb28181_server.py"), url, schema,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode().split()
            assert line[:1] == ["ready"], f"server did not start: {line}"
            server = ("127.0.0.1", int(line[1]))
            specs = device_ids(n, nvr_share)
            expected = sum(c for _, c in specs)
            devices = await open_devices(specs, server)
            conn = await asyncpg.connect(url, server_settings={"search_path": schema})
            cpu0 = cpu_seconds([proc.pid])
            t0 = time.perf_counter()
            sem = asyncio.Semaphore(100)  # registrations in flight (devices boot over time)

            async def register(dev: Device) -> None:
                async with sem:
                    await dev.register()

            await asyncio.gather(*(register(d) for d in devices))
            t_reg = time.perf_counter() - t0
            items, last_change = 0, time.perf_counter()
            while time.perf_counter() - last_change < 30:  # stalled 30 s: count what is lost
                now_items = await conn.fetchval("SELECT count(*) FROM gb_catalog_items")
                if now_items != items:
                    items, last_change = now_items, time.perf_counter()
                if items >= expected:
                    break
                await asyncio.sleep(0.25)
            t_cat = last_change - t0
            cameras = await conn.fetchval("SELECT count(*) FROM cameras")
            distinct = await conn.fetchval("SELECT count(DISTINCT gb_id) FROM cameras")
            cpu_load = cpu_seconds([proc.pid]) - cpu0
            await asyncio.sleep(2)  # let the registration tail (DeviceInfo) settle
            cpu1 = cpu_seconds([proc.pid])
            full = await keepalive_load(devices, seconds)
            cpu_full = (cpu_seconds([proc.pid]) - cpu1) / seconds
            cpu2 = cpu_seconds([proc.pid])
            paced = await keepalive_load(devices, seconds, rate=rate)
            cpu_paced = (cpu_seconds([proc.pid]) - cpu2) / seconds
            rss = peak_rss_mb(proc.pid)
            await conn.close()
            for d in devices:
                assert d.transport is not None
                d.transport.close()
        finally:
            proc.kill()
            await proc.wait()
    return {
        "devices": n,
        "channels": expected,
        "t_registered_s": t_reg,
        "t_catalog_s": t_cat,
        "items": items,
        "cameras": cameras,
        "lost": expected - items,
        "duplicated": cameras - distinct,
        "cpu_s_load": cpu_load,
        "ka_full_per_s": full,
        "cpu_full": cpu_full,
        "ka_paced_per_s": paced,
        "cpu_paced": cpu_paced,
        "rss_mb": rss,
    }


async def anchor(n: int, seconds: float) -> tuple[float, float]:
    sipp = shutil.which("sipp")
    assert sipp is not None, "SIPp (Debian sip-tester) is needed for the anchor"
    from bench.gb28181_load import device_ids as ids
    from tests.ingest.gb28181.peers import free_udp_port

    port = free_udp_port()
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(HERE / "sipp_uas_200.xml"), "-i", "127.0.0.1", "-p", str(port),
        "-t", "u1", "-nostdin", cwd=out,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1)
    try:
        devices = await open_devices(ids(n, 0.1), ("127.0.0.1", port))
        cpu0 = cpu_seconds([proc.pid])
        rate = await keepalive_load(devices, seconds)
        cpu = (cpu_seconds([proc.pid]) - cpu0) / seconds
        for d in devices:
            assert d.transport is not None
            d.transport.close()
    finally:
        proc.kill()
        await proc.wait()
    return rate, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--nvr-share", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=10.0, help="each keepalive phase")
    ap.add_argument("--rate", type=float, default=100_000 / 60, help="paced keepalives/s")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs: list[dict[str, float]] = []
    anchors: list[tuple[float, float]] = []
    with database_url() as url:
        for i in range(args.repeat):
            r = asyncio.run(run_once(url, args.devices, args.nvr_share, args.seconds, args.rate))
            a = asyncio.run(anchor(min(args.devices, 5000), args.seconds))
            runs.append(r)
            anchors.append(a)
            print(
                f"run {i + 1}: {r['devices']:.0f} devices / {r['channels']:.0f} channels: "
                f"registered in {r['t_registered_s']:.1f} s, catalogs in the registry in "
                f"{r['t_catalog_s']:.1f} s ({r['channels'] / r['t_catalog_s']:.0f} channels/s; "
                f"lost {r['lost']:.0f}, duplicated {r['duplicated']:.0f}, cameras "
                f"{r['cameras']:.0f}); keepalives full {r['ka_full_per_s']:.0f}/s at "
                f"{r['cpu_full']:.0%} CPU, paced {r['ka_paced_per_s']:.0f}/s at "
                f"{r['cpu_paced']:.0%} CPU; peak RSS {r['rss_mb']:.0f} MB | anchor SIPp UAS "
                f"{a[0]:.0f}/s at {a[1]:.0%} CPU; ratio {r['ka_full_per_s'] / a[0]:.2f}",
                flush=True,
            )
    med = {k: median([r[k] for r in runs]) for k in runs[0]}
    anc = median([a[0] for a in anchors])
    print(
        f"median of {len(runs)}: catalogs in {med['t_catalog_s']:.1f} s "
        f"({med['channels'] / med['t_catalog_s']:.0f} channels/s), registered in "
        f"{med['t_registered_s']:.1f} s, keepalives {med['ka_full_per_s']:.0f}/s "
        f"(CPU {med['cpu_full']:.0%}) vs SIPp UAS {anc:.0f}/s: ratio "
        f"{med['ka_full_per_s'] / anc:.2f}; paced {med['ka_paced_per_s']:.0f}/s at "
        f"{med['cpu_paced']:.0%} CPU; peak RSS {med['rss_mb']:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
