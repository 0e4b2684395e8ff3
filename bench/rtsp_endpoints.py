"""RTSP endpoints on loopback for the health benchmarks.

- `gstreamer_servers`: GStreamer RTSP server processes (tests/health/rtsp_server.py under the
  system Python, which has PyGObject), each with extra `/cam/<i>` mounts: real H.264 streams,
  by default served from a file encoded once (`encoded_stream`) instead of encoded live for
  every client, so the test rig's encoders do not eat the cores being measured.
- `responder`: a lightweight RTSP responder in a separate process (bench/rtsp_responder.py):
  real sockets, answers OPTIONS and DESCRIBE with a fixed SDP and nothing else, so a probe
  client's own rate can be measured where the GStreamer server is the bottleneck.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
GST_SERVER = ROOT / "tests" / "health" / "rtsp_server.py"
RESPONDER = Path(__file__).with_name("rtsp_responder.py")
MEDIA = ROOT / "bench" / "out" / "media"  # pre-encoded test streams (bench/out is not committed)
GST_APT = (
    "apt-get install -y --no-install-recommends gir1.2-gst-rtsp-server-1.0 python3-gi "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)


def _first_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    return line


def encoded_stream(size: str, seconds: int = 30) -> Path:
    """The `/normal` moving picture at `size`, H.264 (keyframe every second, no B-frames) in
    Matroska, encoded once by the GStreamer server script and cached under bench/out/media."""
    path = MEDIA / f"normal-{size}-{seconds}s.mkv"
    if path.exists():
        return path
    MEDIA.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    done = subprocess.run(
        [
            SYSTEM_PYTHON,
            str(GST_SERVER),
            "--encode-only",
            str(partial),
            "--size",
            size,
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        timeout=600,
    )
    if done.returncode != 0 or not partial.exists():
        err = done.stderr.decode(errors="replace")[-400:].strip()
        sys.exit(f"could not pre-encode the test stream ({err}); install as root: {GST_APT}")
    partial.rename(path)
    return path


@contextlib.contextmanager
def gstreamer_servers(
    count: int, mounts: int, size: str = "320x180", *, live: bool = False
) -> Iterator[tuple[list[str], list[int]]]:
    """`count` GStreamer servers with `mounts` extra mounts each; yields every endpoint URI
    and the servers' process ids (for their CPU time). The mounts serve a pre-encoded file
    as is, or with `live` encode the picture for every client (the tests' `/normal`)."""
    source = [] if live else ["--cam-file", str(encoded_stream(size))]
    procs: list[subprocess.Popen[bytes]] = []
    uris: list[str] = []
    with tempfile.TemporaryFile() as log:
        try:
            for _ in range(count):
                proc = subprocess.Popen(
                    [
                        SYSTEM_PYTHON,
                        str(GST_SERVER),
                        "--port",
                        "0",
                        "--extra-mounts",
                        str(mounts),
                        "--size",
                        size,
                        "--watch-stdin",
                        *source,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
                procs.append(proc)
                line = _first_line(proc, 20)
                if not line.startswith(b"PORT "):
                    log.seek(0)
                    err = log.read().decode(errors="replace")[-400:]
                    sys.exit(
                        f"the GStreamer RTSP server did not start ({err.strip()}); "
                        f"install as root: {GST_APT}"
                    )
                port = int(line.split()[1])
                uris += [f"rtsp://127.0.0.1:{port}/cam/{i}" for i in range(mounts)]
            yield uris, [p.pid for p in procs]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=10)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextlib.contextmanager
def responder(ports: int, paths: int) -> Iterator[tuple[list[str], list[int]]]:
    """One responder process listening on `ports` loopback ports; yields ports × paths URIs
    and its process id."""
    proc = subprocess.Popen(
        [sys.executable, str(RESPONDER), "--ports", str(ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        line = _first_line(proc, 20)
        if not line.startswith(b"PORTS "):
            sys.exit(f"the RTSP responder did not start: {line!r}")
        found = [int(p) for p in line.split()[1:]]
        yield [f"rtsp://127.0.0.1:{p}/ch{i}/sub" for p in found for i in range(paths)], [proc.pid]
    finally:
        proc.kill()
        proc.wait(timeout=10)
