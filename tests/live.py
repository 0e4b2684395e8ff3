"""A live `camreg serve --demo` subprocess on the test database, for tests that need a real
server process (browser tests, SIGKILL recovery): one way to start it and wait for it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .conftest import TEST_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    base: str
    admin: str
    log: Path


def camreg_serve(
    dsn: str, data: Path, env_extra: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[Process]:
    """Start the server (demo data, no health probes) on a free loopback port, wait until it
    serves and has written its admin token, and stop it afterwards (if a test has not)."""
    return _serve(dsn, data, True, env_extra or {})


def camreg_serve_empty(
    dsn: str, data: Path, env_extra: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[Process]:
    """`camreg_serve` without the demo data: the test registers what it needs."""
    return _serve(dsn, data, False, env_extra or {})


@contextlib.contextmanager
def _serve(dsn: str, data: Path, demo: bool, env_extra: Mapping[str, str]) -> Iterator[Process]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CAMREG_")},
        "CAMREG_DATABASE_URL": dsn,
        "CAMREG_SECRET_KEY": TEST_KEY,
        "CAMREG_DATA_DIR": str(data),
        **env_extra,
    }
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "serve.log"
    log = log_path.open("w")
    camreg = str(Path(sys.executable).parent / "camreg")
    proc = subprocess.Popen(
        [
            camreg,
            "serve",
            *(["--demo"] if demo else []),
            "--no-health",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--sip-port",
            "0",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    token = data / "admin.token"
    deadline = time.monotonic() + 90
    while not token.exists() or "serving on" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            raise AssertionError("camreg serve did not start:\n" + log_path.read_text())
        time.sleep(0.2)
    try:
        yield Process(proc, f"http://127.0.0.1:{port}", token.read_text().strip(), log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
