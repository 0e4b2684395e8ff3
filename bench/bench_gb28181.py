"""GB/T 28181 device access at scale: simulated devices (one UDP source port each up to 15,000
devices, else 4 per port; 10 % NVRs with 32 channels) register with digest to the service's SIP
server, hand over their catalogs into the registry, and keep alive every 60 s once registered.
Devices beyond `--per-process` (15,000) are held by load processes of their own (one process
holds at most its open-file limit in sockets; 50,000 one-port devices would also exhaust the
machine's ephemeral ports, which the other users of the machine need).

Figures (each run on a fresh schema, the service in its own process):
1. time until every device is registered, and until every channel is in the registry
   (gb_catalog_items and cameras), lost and duplicated channels;
2. keepalives/s answered at full load (256 in flight), the service's CPU share;
3. keepalives at a paced rate (default 1,667/s: 100,000 devices every 60 s), its CPU share;
   both keepalive phases measure the steady state: before them each of their devices keeps
   alive once and the service's status transitions (unknown → online) are waited for;
4. anchor: the same keepalive client at full load against SIPp as a UAS answering 200 to
   every MESSAGE (the SIP engine limit of this machine with no application), and the ratio.
Peak RSS of the service process is read from /proc (VmHWM).

    CAMREG_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      .venv/bin/python bench/bench_gb28181.py --devices 5000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database_url, fresh_schema, median
from bench.gb28181_load import (
    SHED,
    Device,
    close_devices,
    device_ids,
    open_devices,
    quiet,
    raise_open_files,
    register_all,
)
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


async def keepalive_each(devices: list[Device], in_flight: int = 256) -> None:
    """One keepalive from each device, `in_flight` at a time."""
    sem = asyncio.Semaphore(in_flight)

    async def one(dev: Device, n: int) -> None:
        async with sem:
            with contextlib.suppress(TimeoutError):
                await dev.keepalive(n)

    await asyncio.gather(*(one(d, 500_000 + i) for i, d in enumerate(devices)))


def server_args(server: tuple[str, int]) -> tuple[str, str]:
    return server[0], str(server[1])


async def run_once(
    url: str,
    n: int,
    nvr_share: float,
    seconds: float,
    rate: float,
    reg_in_flight: int = 100,
    per_process: int = 15_000,
    per_port: int = 1,
) -> dict[str, float]:
    workers: list[asyncio.subprocess.Process] = []
    async with fresh_schema(url, "gb") as schema:
        started = dt.datetime.now(dt.UTC)
        metrics_path = HERE / "out" / f"gb-metrics-{schema}.json"
        metrics_path.parent.mkdir(exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "gb28181_server.py"), url, schema,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "CAMREG_BENCH_METRICS": str(metrics_path)},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode().split()
            assert line[:1] == ["ready"], f"server did not start: {line}"
            server = ("127.0.0.1", int(line[1]))
            specs = device_ids(n, nvr_share)
            expected = sum(c for _, c in specs)
            # this process holds the first `per_process` devices (the keepalive phases use
            # them); the others are held by load processes of their own (open-file limit)
            devices = await open_devices(specs[:per_process], server, per_port=per_port)
            workers = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.gb28181_load",
                    *server_args(server),
                    str(start),
                    str(min(per_process, n - start)),
                    str(n),
                    str(nvr_share),
                    str(max(1, reg_in_flight * min(per_process, n - start) // n)),
                    str(per_port),
                    cwd=HERE.parent,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                for start in range(per_process, n, per_process)
            ]
            for w in workers:
                assert w.stdout is not None
                ready = await w.stdout.readline()
                assert ready.strip() == b"ready", f"load process did not start: {ready!r}"
            conn = await asyncpg.connect(url, server_settings={"search_path": schema})
            cpu0 = cpu_seconds([proc.pid])
            own0 = time.process_time()
            worker_cpu0 = cpu_seconds([w.pid for w in workers])
            t0 = time.perf_counter()
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(b"go\n")
            own_share = max(1, reg_in_flight * len(devices) // n)

            shed = [0]

            async def registered(w: asyncio.subprocess.Process) -> None:
                assert w.stdout is not None
                line = await w.stdout.readline()
                assert line.split()[:1] == [b"registered"], f"a load process failed: {line!r}"
                shed[0] += int(line.split()[1])

            await asyncio.gather(
                register_all(devices, own_share), *(registered(w) for w in workers)
            )
            t_reg = time.perf_counter() - t0
            shed[0] += SHED["responses"]
            SHED["responses"] = 0
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
            client_load = (
                time.process_time() - own0 + cpu_seconds([w.pid for w in workers]) - worker_cpu0
            )
            # PostgreSQL backends opened by the service (since it started; the server is
            # shared, so another engineer's connection opened meanwhile would count too)
            backends = await conn.fetch(
                """SELECT pid FROM pg_stat_activity WHERE backend_start >= $1
                   AND backend_type = 'client backend' AND pid <> pg_backend_pid()""",
                started,
            )
            pg_load = cpu_seconds([r["pid"] for r in backends])
            # the measured keepalive phases are the only keepalives from here on
            quiet(devices)
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(b"quiet\n")
            await asyncio.sleep(2)  # let the registration tail (DeviceInfo) settle
            # The steady state of "100,000 devices keeping alive": each device of the phases
            # keeps alive once (its channels' second ok takes them unknown → online) and the
            # service writes those transitions; timed, and the phases below start after it.
            t_settle0 = time.perf_counter()
            await keepalive_each(devices)
            phase_ids = [d.device_id for d in devices]
            phase_channels = await conn.fetchval(
                """SELECT count(*) FROM gb_catalog_items
                   WHERE device_id = ANY($1::text[]) AND camera_id IS NOT NULL""",
                phase_ids,
            )
            online, still = -1, time.perf_counter()
            while time.perf_counter() - t_settle0 < 180:
                online = await conn.fetchval(
                    """SELECT count(*) FROM gb_catalog_items g JOIN cameras c ON c.id = g.camera_id
                       WHERE g.device_id = ANY($1::text[]) AND c.status = 'online'""",
                    phase_ids,
                )
                still = time.perf_counter()
                if online >= phase_channels:
                    break
                await asyncio.sleep(0.25)
            t_settle = still - t_settle0
            cpu1 = cpu_seconds([proc.pid])
            full = await keepalive_load(devices, seconds)
            cpu_full = (cpu_seconds([proc.pid]) - cpu1) / seconds
            cpu2 = cpu_seconds([proc.pid])
            paced = await keepalive_load(devices, seconds, rate=rate)
            cpu_paced = (cpu_seconds([proc.pid]) - cpu2) / seconds
            rss = peak_rss_mb(proc.pid)
            await asyncio.sleep(5.5)  # the server writes its counters every 5 s
            counters = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
            metrics_path.unlink(missing_ok=True)
            await conn.close()
            close_devices(devices)
        finally:
            for w in workers:
                if w.stdin is not None:
                    w.stdin.close()
                if w.returncode is None:  # a failed run: the others may still be registering
                    w.kill()
            for w in workers:
                await w.wait()
            proc.kill()
            await proc.wait()
    return {
        "devices": n,
        "ports": -(-n // per_port),
        "channels": expected,
        "t_registered_s": t_reg,
        "t_catalog_s": t_cat,
        "items": items,
        "cameras": cameras,
        "lost": expected - items,
        "duplicated": cameras - distinct,
        "cpu_s_load": cpu_load,
        "client_cpu_load": client_load / max(t_cat, 1e-9),
        "server_cpu_load": cpu_load / max(t_cat, 1e-9),
        "pg_cpu_load": pg_load / max(t_cat, 1e-9),
        "t_settle_s": t_settle,
        "online": online,
        "ka_full_per_s": full,
        "cpu_full": cpu_full,
        "ka_paced_per_s": paced,
        "cpu_paced": cpu_paced,
        "rss_mb": rss,
        "shed_503": shed[0],
        "retransmissions_absorbed": counters.get("retransmissions_absorbed", -1),
        "catalogs_partial": counters.get("catalogs_partial", -1),
        "overloaded": counters.get("overloaded", -1),
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
        close_devices(devices)
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
    ap.add_argument("--in-flight", type=int, default=100, help="registrations in flight")
    ap.add_argument("--per-process", type=int, default=15_000, help="devices per load process")
    ap.add_argument(
        "--per-port",
        type=int,
        default=0,
        help="devices per UDP source port (0: 1 up to 15,000 devices, else enough to stay "
        "within 12,500 ports, which leaves the machine's other users ephemeral ports)",
    )
    args = ap.parse_args()
    raise_open_files()
    per_port = args.per_port or (1 if args.devices <= 15_000 else -(-args.devices // 12_500))
    runs: list[dict[str, float]] = []
    anchors: list[tuple[float, float]] = []
    with database_url() as url:
        for i in range(args.repeat):
            r = asyncio.run(
                run_once(
                    url,
                    args.devices,
                    args.nvr_share,
                    args.seconds,
                    args.rate,
                    args.in_flight,
                    args.per_process,
                    per_port,
                )
            )
            a = asyncio.run(anchor(min(args.devices, 5000), args.seconds))
            runs.append(r)
            anchors.append(a)
            print(
                f"run {i + 1}: {r['devices']:.0f} devices / {r['channels']:.0f} channels "
                f"({r['ports']:.0f} source ports): "
                f"registered in {r['t_registered_s']:.1f} s, catalogs in the registry in "
                f"{r['t_catalog_s']:.1f} s ({r['channels'] / r['t_catalog_s']:.0f} channels/s; "
                f"lost {r['lost']:.0f}, duplicated {r['duplicated']:.0f}, cameras "
                f"{r['cameras']:.0f}; CPU while loading: service {r['server_cpu_load']:.0%}, "
                f"its PostgreSQL backends {r['pg_cpu_load']:.0%}, "
                f"load client {r['client_cpu_load']:.0%}); "
                f"settled ({r['online']:.0f} of their cameras online) {r['t_settle_s']:.1f} s "
                f"after one keepalive of {min(args.devices, args.per_process)} devices; "
                f"keepalives full {r['ka_full_per_s']:.0f}/s at "
                f"{r['cpu_full']:.0%} CPU, paced {r['ka_paced_per_s']:.0f}/s at "
                f"{r['cpu_paced']:.0%} CPU; peak RSS {r['rss_mb']:.0f} MB; shed (503) "
                f"{r['shed_503']:.0f}, retransmissions absorbed "
                f"{r['retransmissions_absorbed']:.0f}, dropped overloaded {r['overloaded']:.0f}, "
                f"partial catalogs {r['catalogs_partial']:.0f} | anchor SIPp UAS "
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
