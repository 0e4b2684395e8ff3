"""A real GStreamer RTSP server for the frame-sampling tests (see rtsp_server.py).

The server runs under the system Python, which has PyGObject; the venv does not. A missing
GStreamer fails the run instead of skipping it, so a CI image without the packages cannot
report green while never sampling a frame.
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
PASSWORD = "s3cret-Pw"
APT = (
    "apt-get install -y --no-install-recommends gir1.2-gst-rtsp-server-1.0 python3-gi "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly"
)
CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "assert Gst.ElementFactory.find('x264enc'), 'x264enc missing (gstreamer1.0-plugins-ugly)'"
)


def _require_gstreamer() -> None:
    """Fail with the fix when the system Python cannot drive GStreamer's RTSP server."""
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", CHECK], capture_output=True, text=True, timeout=30, check=False
        )
        problem = proc.stderr.strip().splitlines()[-1:] if proc.returncode else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = [str(exc)]
    if not problem:
        return
    if os.environ.get("CI"):
        pytest.fail(
            f"{SYSTEM_PYTHON} cannot run the GStreamer RTSP server ({problem[0]}): "
            f".ci/run must install the packages: {APT}",
            pytrace=False,
        )
    pytest.fail(
        f"{SYSTEM_PYTHON} cannot run the GStreamer RTSP server ({problem[0]}); "
        f"install the packages as root: {APT}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def rtsp_password() -> str:
    """Password of user `admin` on the server's `/auth` mount."""
    return PASSWORD


@pytest.fixture(scope="session")
def rtsp_ptz_dir() -> Iterator[Path]:
    """Where the `/ptz-<i>` mounts read their pan position (file `ptz-<i>`, ONVIF generic
    pan), written by the fake ONVIF PTZ devices of the 云台失控 tests."""
    with tempfile.TemporaryDirectory(prefix="ptz-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def rtsp_server(rtsp_ptz_dir: Path) -> Iterator[str]:
    """Base URL `rtsp://127.0.0.1:<port>` of a server with one mount per fault pattern."""
    _require_gstreamer()
    # A file, not a pipe, for its log: nobody reads it while tests run, and a full pipe would
    # block the server.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                str(SERVER),
                "--port",
                "0",
                "--password",
                PASSWORD,
                "--ptz-dir",
                str(rtsp_ptz_dir),
                "--watch-stdin",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert proc.stdout is not None
        try:
            deadline = time.monotonic() + 20
            line = b""
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 1)
                    if not chunk:
                        break
                    line += chunk
            if not line.startswith(b"PORT "):
                proc.kill()
                proc.wait(timeout=5)
                log.seek(0)
                err = log.read().decode(errors="replace")[-500:]
                pytest.fail(f"RTSP test server did not start: {line!r} {err}", pytrace=False)
            yield f"rtsp://127.0.0.1:{int(line.split()[1])}"
        finally:
            proc.kill()
            proc.communicate(timeout=10)
