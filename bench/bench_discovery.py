"""How fast a discovery sweep fills the inbox (not a timed test: prints seconds and a ratio).

    python bench/bench_discovery.py [--repeat 3] [--sample 64] [--rate 4000]

4,096 addresses in 127.66.0.0/20 + 127.66.16.0/31 hold 512 simulated devices (one every 8th
address; WS-Discovery unicast responders and ONVIF SOAP servers in two helper processes of
256 devices each, `tests.ingest.fake_fleet`) and 3,584 silent addresses. Measured: seconds
from the start of a scan job (`ingest.scan_job.run_scan`, as `POST /discovery/scans` runs it)
until all 512 devices are in the inbox fully interrogated (polling PostgreSQL), the whole
job's duration, and the scanner's peak RSS. **Anchor**: the same addresses one at a time by
the same client in the same run: a directed probe (same retransmits and listening window),
then the interrogation if something answered. That takes over an hour, so it is measured on
`--sample` addresses spread over the block (the same 1-in-8 share of devices) and
extrapolated linearly to 4,096; the script says so in its output.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, database_url, fresh_schema, median
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings
from camera_registry.store.inbox import DiscoveryScans, Inbox
from camera_registry.store.runtime import open_database
from ingest.onvif.probe import interrogate, load_onvif
from ingest.onvif.scan_job import run_scan
from ingest.onvif.wsdiscovery import Discovery

BLOCK = ipaddress.IPv4Network("127.66.0.0/20")
CIDRS = ["127.66.0.0/20", "127.66.16.0/31"]  # 4,094 + 2 = 4,096 addresses
DEVICES, STEP, PER_HELPER = 512, 8, 256
USER, PASSWORD = "admin", "Secr3t!pass"
KEY = base64.b64encode(b"d" * 32).decode()


def addresses() -> list[str]:
    out = [str(h) for h in BLOCK.hosts()]
    out += [str(a) for a in ipaddress.IPv4Network(CIDRS[1])]
    assert len(out) == 4096
    return out


def device_addresses() -> list[str]:
    first = BLOCK.network_address + 1
    return [str(first + i * STEP) for i in range(DEVICES)]


def start_helpers() -> tuple[list[subprocess.Popen[str]], int]:
    """Two helper processes of 256 fake devices each, sharing one UDP discovery port."""
    procs: list[subprocess.Popen[str]] = []
    port = 0
    first = BLOCK.network_address + 1
    for h in range(DEVICES // PER_HELPER):
        start = first + h * PER_HELPER * STEP
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ingest.fake_fleet", "--first", str(start),
             "--count", str(PER_HELPER), "--step", str(STEP), "--udp-port", str(port)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        port = int(ready["udp_port"])
        procs.append(proc)
    return procs, port


async def sweep(pool_url: str, port: int, args: argparse.Namespace) -> dict[str, float]:
    """One scan job into a fresh schema; seconds until 512 interrogated devices are inboxed."""
    settings = Settings(data_dir=ROOT / ".camreg" / "bench", secret_key=KEY)
    async with (
        fresh_schema(pool_url, "discovery") as schema,
        open_database(settings, dsn=pool_url, schema=schema, pool_max=4) as db,
    ):
        scans, inbox = DiscoveryScans(db.pool, db.box), Inbox(db.pool, db.box)
        actor = Actor("bench", Role.TECHNICIAN, scope="1401")
        spec = {"cidrs": CIDRS, "rate": args.rate, "concurrency": args.concurrency,
                "timeout": args.timeout}  # fmt: skip
        scan = await scans.create(actor, spec, USER, PASSWORD, 4096)
        started = time.perf_counter()
        job = asyncio.create_task(
            run_scan(scans, inbox, actor, scan["id"], spec, discovery_port=port)
        )
        all_in = None
        while all_in is None:
            await asyncio.sleep(0.05)
            ended = job.done()  # before counting: the count must cover everything it did
            n = await db.pool.fetchval(
                """SELECT count(*) FROM discovered_devices d JOIN discovery_scan_devices s
                   ON s.device_id = d.id WHERE s.scan_id = $1::uuid AND d.failure IS NULL
                   AND jsonb_array_length(d.profiles) = 2""",
                scan["id"],
            )
            if n >= DEVICES:
                all_in = time.perf_counter() - started
            if ended and all_in is None:
                job.result()
                final = await scans.get(actor, scan["id"])
                raise SystemExit(
                    f"scan ended with {n} of {DEVICES} devices in the inbox: found "
                    f"{final['found']}, failed {final['failed']}"
                )
        await job
        total = time.perf_counter() - started
        final = await scans.get(actor, scan["id"])
        assert final["status"] == "done", final
    return {"all_in_s": all_in, "job_s": total}


async def sequential(port: int, sample: list[str], args: argparse.Namespace) -> float:
    """The anchor: each address alone, directed probe then interrogation; seconds for `sample`."""
    started = time.perf_counter()
    found = 0
    for address in sample:
        async with Discovery() as disco:
            hits = await disco.scan(unicast_targets=[address], port=port, timeout=args.timeout)
        for hit in hits:
            url = hit.candidate_urls()[0]
            host, _, rest = url.split("//", 1)[1].partition(":")
            facts = await interrogate(host, int(rest.split("/", 1)[0]), USER, PASSWORD)
            assert facts.ok, facts.detail
            found += 1
    assert found == sum(1 for a in sample if a in set(device_addresses()))
    return time.perf_counter() - started


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sample", type=int, default=64, help="addresses in the sequential run")
    ap.add_argument("--rate", type=float, default=4000.0, help="probe packets per second")
    ap.add_argument("--concurrency", type=int, default=64, help="interrogations at a time")
    ap.add_argument("--timeout", type=float, default=1.0, help="listening window after probes")
    args = ap.parse_args()
    await load_onvif()
    procs, port = start_helpers()
    try:
        with database_url() as url:
            runs = [await sweep(url, port, args) for _ in range(args.repeat)]
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        every = addresses()
        stride = len(every) // args.sample
        # Spread over the block, with the block's share of devices (1 in 8).
        sample = [every[i * stride + i % STEP] for i in range(args.sample)]
        seq_s = await sequential(port, sample, args)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=30)
    all_in = median([r["all_in_s"] for r in runs])
    job = median([r["job_s"] for r in runs])
    seq_full = seq_s / len(sample) * len(every)
    devices_in_sample = len(set(sample) & set(device_addresses()))
    print(f"sweep of 4,096 addresses, 512 devices (rate {args.rate:g}/s, "
          f"{args.concurrency} interrogations at a time, {args.timeout:g} s window)")  # fmt: skip
    each = ", ".join(f"{r['all_in_s']:.2f}" for r in runs)
    print(f"  all 512 in the inbox, interrogated: median {all_in:.2f} s of {args.repeat} "
          f"({each}); whole job {job:.2f} s")  # fmt: skip
    print(f"  scanner peak RSS {peak_mib:.0f} MiB (bench process, helpers apart)")
    print(f"anchor, one address at a time: {seq_s:.1f} s for {len(sample)} addresses "
          f"({devices_in_sample} devices), extrapolated to 4,096: {seq_full:.0f} s")  # fmt: skip
    print(f"ratio sequential / sweep: {seq_full / all_in:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
