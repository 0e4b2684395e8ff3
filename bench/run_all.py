"""`make bench`: every benchmark, each printing its own figure beside its anchor's.

Set BENCH_ROWS to change the scale (default 2,400,000, Shanxi), BENCH_GB_DEVICES the number
of simulated GB/T 28181 devices (default 1,000; the issue's target is 50,000). Results are
recorded by hand in bench/RESULTS.md together with the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    rows = os.environ.get("BENCH_ROWS", "2400000")
    repeat = os.environ.get("BENCH_REPEAT", "3")
    for cmd in (
        [sys.executable, str(HERE / "bench_ledger_read.py")],
        [sys.executable, str(HERE / "bench_import.py"), "--rows", rows, "--repeat", repeat],
        [sys.executable, str(HERE / "bench_api.py"), "--rows", rows],
        # needs wrk (Debian package `wrk`) as the load generator
        [sys.executable, str(HERE / "bench_hot_paths.py"), "--rows", rows, "--repeat", repeat],
        [sys.executable, str(HERE / "bench_health_writes.py"), "--rows", rows, "--repeat", repeat],
        [sys.executable, str(HERE / "bench_discovery.py"), "--repeat", repeat],
        [sys.executable, str(HERE / "bench_probe.py"), "--repeat", repeat],
        [sys.executable, str(HERE / "bench_diagnosis.py"), "--repeat", repeat],
        [sys.executable, str(HERE / "bench_vqd.py"), "--repeat", repeat],
        [sys.executable, str(HERE / "bench_coverage_province.py"), "--cameras", rows],
        [sys.executable, str(HERE / "bench_map.py"), "--rows", rows],
        [sys.executable, str(HERE / "bench_cascade.py"), "--rows", rows, "--runs", repeat],
        [
            sys.executable,
            str(HERE / "bench_gb28181.py"),
            "--devices",
            os.environ.get("BENCH_GB_DEVICES", "1000"),
            "--repeat",
            repeat,
        ],
    ):
        print(
            "\n$", " ".join(Path(c).name if c.endswith(".py") else c for c in cmd[1:]), flush=True
        )
        if subprocess.run(cmd, check=False).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
