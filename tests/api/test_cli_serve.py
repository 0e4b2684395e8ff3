"""The newcomer's path: `camreg serve --demo` on the embedded database, then Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CAMREG = [sys.executable, "-m", "api.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMREG_")}
    env["CAMREG_DATA_DIR"] = str(data_dir)
    return env


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url)  # noqa: S310 - loopback http only (asserted above)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return resp.status, resp.read()


def test_serve_demo_on_the_embedded_database_then_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [*CAMREG, "serve", "--demo", "--port", "0", "--sip-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        url = token = None
        while time.monotonic() < deadline and token is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"serving on (http://\S+)", line):
                url = m.group(1)
            if m := re.search(r"admin token: (\S+)", line):
                token = m.group(1)
        assert url and token, "".join(lines)
        assert (tmp_path / "admin.token").read_text().strip() == token
        assert (tmp_path / "admin.token").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
        status, body = _get(f"{url}api/v1/regions/14/summary", token)
        summary = json.loads(body)
        assert status == 200 and 200 <= summary["total"] <= 1000
        assert set(summary["by_level"]) == {"1", "2", "3", "9"}
        # A second command shares the running cluster through the data dir.
        out = subprocess.run(
            [*CAMREG, "token", "create", "--role", "planner", "--region", "1401"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        planner = out.stdout.strip().splitlines()[-1]
        listed = json.loads(_get(f"{url}api/v1/cameras?limit=500", planner)[1])
        assert listed["items"] and all(c["region_code"].startswith("1401") for c in listed["items"])
        # And a second server on the same data dir is refused, clearly.
        again = subprocess.run(
            [*CAMREG, "serve", "--port", "0", "--sip-port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest
    pid_file = tmp_path / "pg" / "postmaster.pid"
    assert not pid_file.exists(), "the embedded PostgreSQL is still running after Ctrl-C"
    # Data persists: a restart does not load the demo twice and keeps the same admin token.
    proc = subprocess.Popen(
        [*CAMREG, "serve", "--demo", "--port", "0", "--sip-port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        while "admin token" not in seen:
            line = proc.stdout.readline()
            assert line, seen
            seen += line
        assert "loaded" not in seen and "serving on" in seen
        assert token in seen  # the saved admin token still works, so it is kept
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
