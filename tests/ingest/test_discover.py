"""Discovery end to end on loopback: WS-Discovery → ONVIF interrogation → inbox → register."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings
from camera_registry.store.inbox import Inbox
from ingest.onvif.discover import discover
from ingest.onvif.wsdiscovery import interface_address

from ..conftest import Tok, camera, schema_dsn
from .fake_onvif import FakeCamera, FakeOnvifServer
from .test_wsdiscovery import hik_reply, message_id_of


class Responder(asyncio.DatagramProtocol):
    """Answers every Probe with a ProbeMatch pointing at the fake ONVIF service."""

    def __init__(self, onvif_port: int) -> None:
        self.xaddrs = f"http://127.0.0.1:{onvif_port}/onvif/device_service"
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        reply = hik_reply(message_id_of(data), "urn:uuid:cam-0001", self.xaddrs)
        self.transport.sendto(reply, addr)


@contextlib.asynccontextmanager
async def camera_on_loopback(
    fake: FakeCamera | None = None,
) -> AsyncIterator[tuple[FakeCamera, int]]:
    fake = fake or FakeCamera()
    async with FakeOnvifServer(fake) as server:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Responder(server.port), local_addr=("127.0.0.1", 0)
        )
        try:
            yield fake, transport.get_extra_info("sockname")[1]
        finally:
            transport.close()


async def test_found_camera_is_interrogated_inboxed_and_registered_here(
    client: TestClient, auth: Tok
) -> None:
    async with camera_on_loopback() as (fake, port):
        report = await discover(
            cidrs=["127.0.0.1/32"],
            discovery_port=port,
            timeout=0.5,
            username=fake.username,
            password=fake.password,
        )
    (device,) = report.devices
    assert device["failure"] is None and device["vendor"] == "HIKVISION"
    assert device["endpoint"] == "urn:uuid:cam-0001" and device["mac"] == "44:19:b6:0a:0b:0c"
    assert [p["height"] for p in device["profiles"]] == [1080, 360]
    await Inbox(client.app[POOL], client.app[BOX]).upsert(Actor("test", Role.ADMIN), report.devices)
    h = await auth("technician")
    inbox = (await (await client.get("/api/v1/discovery/devices", headers=h)).json())["items"]
    assert [d["endpoint"] for d in inbox] == ["urn:uuid:cam-0001"]
    assert inbox[0]["has_credentials"] is True and fake.password not in json.dumps(inbox)
    here = camera(gb_id="14010500001325000901", name="东门卡口", streams=...)
    resp = await client.post(
        f"/api/v1/discovery/devices/{inbox[0]['id']}/register", json=here, headers=h
    )
    assert resp.status == 201, await resp.text()
    cam = await resp.json()
    assert cam["vendor"] == "HIKVISION" and cam["mac"] == "44:19:b6:0a:0b:0c"
    assert cam["streams"]["main"].startswith("rtsp://127.0.0.1") and "sub" in cam["streams"]
    assert cam["has_credentials"] is True and cam["name"] == "东门卡口"
    left = (await (await client.get("/api/v1/discovery/devices", headers=h)).json())["items"]
    assert left == []


async def test_http_sweep_finds_a_camera_that_ignores_probes(client: TestClient) -> None:
    fake = FakeCamera()
    async with FakeOnvifServer(fake) as server:
        report = await discover(
            cidrs=["127.0.0.1/32"],
            ports=[server.port],
            timeout=0.3,
            discovery_port=9,
            username=fake.username,
            password=fake.password,
        )
    assert report.found == [] and report.swept == [("127.0.0.1", server.port)]
    (device,) = report.devices
    assert device["failure"] is None and device["model"] == fake.model


async def test_cli_discover_prints_json_lines_and_fills_the_inbox(
    database_url: str, schema: str, settings: Settings, client: TestClient
) -> None:
    async with camera_on_loopback(FakeCamera(geolocation=(112.565, 37.812, 800.0))) as (
        fake,
        port,
    ):
        env = {
            **os.environ,
            "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
            "CAMREG_DATA_DIR": str(settings.data_dir),
            "ONVIF_PW": fake.password,
            "CAMREG_SECRET_KEY": _secret(settings),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "api.cli",
            "discover",
            "--no-multicast",
            "--cidr",
            "127.0.0.1/32",
            "--discovery-port",
            str(port),
            "--timeout",
            "0.5",
            "--user",
            fake.username,
            "--password-env",
            "ONVIF_PW",
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    (line,) = out.decode().splitlines()
    row = json.loads(line)
    assert row["vendor"] == "HIKVISION" and row["failure"] is None and len(row["streams"]) == 2
    assert (row["geo_lon"], row["geo_lat"], row["geo_elevation"]) == (112.565, 37.812, 800.0)
    assert row["geo_flag"] is None
    assert fake.password not in out.decode() + err.decode()
    n = await client.app[POOL].fetchval(
        "SELECT count(*) FROM discovered_devices WHERE endpoint = 'urn:uuid:cam-0001'"
    )
    assert n == 1


def test_cli_discover_with_nothing_to_probe_says_what_to_give() -> None:
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "discover", "--no-multicast"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "nothing to probe" in proc.stderr and "--cidr" in proc.stderr


def test_cli_discover_refuses_an_unset_password_variable() -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "CAMREG_NO_SUCH_PW"}
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "discover", "--no-multicast",
         "--cidr", "127.0.0.1/32", "--user", "admin", "--password-env", "CAMREG_NO_SUCH_PW"],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "CAMREG_NO_SUCH_PW" in proc.stderr and "not set" in proc.stderr


def test_cli_discover_has_no_password_option() -> None:
    """Credentials never on the command line: there is no --password to put them in."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "discover", "--password", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


def _ignore_sigint() -> None:
    """What a shell does to a command it starts in the background (`camreg discover … &`)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("started", ["in the foreground", "with SIGINT ignored"])
async def test_cli_discover_ctrl_c_keeps_what_was_found(
    database_url: str, schema: str, settings: Settings, client: TestClient, started: str
) -> None:
    """A slow sweep (2 probes/s over a /24) is interrupted right after the first find; Ctrl-C
    works however the process was started, and the test never leaves the CLI running."""
    import signal

    from .fake_fleet import endpoint_for, fleet

    fake = FakeCamera()
    async with fleet([("127.0.13.1", fake)]) as (_, port):
        env = {
            **os.environ,
            "CAMREG_DATABASE_URL": schema_dsn(database_url, schema),
            "CAMREG_DATA_DIR": str(settings.data_dir),
            "ONVIF_PW": fake.password,
            "CAMREG_SECRET_KEY": settings.secret_key.get_secret_value(),  # type: ignore[union-attr]
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "discover", "--no-multicast",
            "--cidr", "127.0.13.0/24", "--discovery-port", str(port), "--rate", "2",
            "--user", fake.username, "--password-env", "ONVIF_PW",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=_ignore_sigint if started == "with SIGINT ignored" else None,
        )  # fmt: skip
        assert proc.stderr is not None
        seen = b""
        try:
            async with asyncio.timeout(60):  # upper bound for a hanging CLI
                while b"found 1" not in seen:
                    line = await proc.stderr.readline()
                    assert line, seen.decode()
                    seen += line
                proc.send_signal(signal.SIGINT)
                out, err = await proc.communicate()
        finally:  # whatever failed above, the CLI this test started does not outlive it
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 130, (seen + err).decode()
    assert b"interrupted" in err and fake.password.encode() not in out + err
    n = await client.app[POOL].fetchval(
        "SELECT count(*) FROM discovered_devices WHERE endpoint = $1", endpoint_for("127.0.13.1")
    )
    assert n == 1


async def test_stopped_discovery_reports_found_devices_it_could_not_finish() -> None:
    from .fake_fleet import endpoint_for, fleet

    got: list[dict[str, Any]] = []
    async with fleet([("127.0.14.1", FakeCamera(hang=True))]) as (_, port):
        found = asyncio.Event()
        task = asyncio.create_task(
            discover(
                cidrs=["127.0.14.0/28"],
                discovery_port=port,
                rate=5,
                on_found=lambda f: found.set(),
                on_device=got.append,
            )
        )
        async with asyncio.timeout(30):  # upper bound for a hanging peer
            await found.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    (device,) = got
    assert device["endpoint"] == endpoint_for("127.0.14.1")
    assert device["failure"] == "timeout" and "stopped" in device["detail"]


def _secret(settings: Settings) -> str:
    assert settings.secret_key is not None  # the test settings always carry one
    return settings.secret_key.get_secret_value()


def _camreg_discover(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "discover", *args],
        capture_output=True, text=True, timeout=120, env=env or dict(os.environ),
    )  # fmt: skip


def test_cli_discover_help_has_a_description_defaults_and_examples() -> None:
    out = _camreg_discover("--help").stdout
    assert "discovery inbox" in out and "WS-Discovery" in out  # what it does
    assert "(default: 500.0)" in out and "(default: every" in out  # defaults
    assert "examples:" in out and "camreg discover --user admin --password-env ONVIF_PW" in out


def test_cli_discover_refuses_a_range_over_a_slash_16_before_printing_or_sending() -> None:
    proc = _camreg_discover("--cidr", "10.0.0.0/8", "--user", "admin")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "camreg discover: --cidr 10.0.0.0/8: sweep IPv4 ranges of at most a /16 at a time\n"
    )


def test_cli_discover_names_the_interfaces_there_are_for_an_unknown_one() -> None:
    proc = _camreg_discover("--interface", "nosuch9")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no interface 'nosuch9'" in proc.stderr and "lo (127.0.0.1)" in proc.stderr


def test_discover_takes_an_interface_name_or_its_address() -> None:
    """`--interface lo` and `--interface 127.0.0.1` name the same interface. (Checked on the
    resolver: a CLI run would send a multicast probe, and tests send traffic only to
    loopback addresses or namespaces of their own — see test_netns_multicast.py.)"""
    assert interface_address("lo") == ("lo", "127.0.0.1")
    assert interface_address("127.0.0.1") == ("lo", "127.0.0.1")
