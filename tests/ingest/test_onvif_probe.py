"""ONVIF interrogation against fake cameras served over real loopback HTTP (`fake_onvif`).

Each vendor quirk must end in the right facts or the right failure category; credentials must
never leak into `detail` or log records; the library's side effects (proxy variables, logging
configuration) must not survive an interrogation.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.onvif.probe import (
    DeviceFacts,
    Target,
    _normalise_mac,
    _reachable_uri,
    interrogate,
    interrogate_many,
)
from tests.ingest.fake_onvif import FakeCamera, FakeOnvifServer, FakeProfile, dahua, hikvision

HOST = "127.0.0.1"
USER = "admin"
PASSWORD = "Secr3t!pass"  # FakeCamera's default


async def _probe(camera: FakeCamera, password: str = PASSWORD, **kw: float) -> DeviceFacts:
    async with FakeOnvifServer(camera) as server:
        return await interrogate(HOST, server.port, USER, password, **kw)


async def test_hikvision_main_stream_first_and_all_facts() -> None:
    facts = await _probe(hikvision())
    assert facts.failure is None, facts.detail
    assert facts.ok
    assert (facts.vendor, facts.model) == ("HIKVISION", "DS-2CD2T47G2-L")
    assert facts.firmware == "V5.7.3 build 220112"
    assert facts.serial == "DS-2CD2T47G2-L20220101AACHJ12345678"
    assert facts.hardware_id == "88"
    # The first *enabled* interface, normalised to lower case.
    assert facts.mac == "44:19:b6:0a:0b:0c"
    # The fake lists the sub stream first; the prober puts the largest resolution first.
    main, sub = facts.profiles
    assert (main.token, main.width, main.height, main.fps) == ("Profile_101", 1920, 1080, 25.0)
    assert (sub.token, sub.width, sub.height, sub.fps) == ("Profile_102", 640, 360, 15.0)
    assert main.encoding == sub.encoding == "H264"
    assert (
        main.rtsp_uri == f"rtsp://{HOST}:554/Streaming/Channels/Profile_101?transportmode=unicast"
    )
    assert main.snapshot_uri is not None
    assert main.snapshot_uri.endswith("/onvif/snapshot/Profile_101.jpg")


async def test_dahua_private_rtsp_host_is_rewritten_and_missing_snapshot_is_fine() -> None:
    facts = await _probe(dahua())
    assert facts.failure is None, facts.detail
    assert facts.vendor == "Dahua"
    assert [p.width for p in facts.profiles] == [2688, 704]
    for profile in facts.profiles:
        assert profile.rtsp_uri is not None
        assert profile.rtsp_uri.startswith(f"rtsp://{HOST}:554/")
        assert "192.168.1.64" not in profile.rtsp_uri
        assert profile.snapshot_uri is None


async def test_missing_get_network_interfaces_does_not_fail() -> None:
    camera = FakeCamera(network_interfaces=False)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert facts.mac is None
    assert facts.vendor == "HIKVISION"
    assert len(facts.profiles) == 2
    assert "GetNetworkInterfaces" in camera.requests


async def test_no_profiles_is_no_media_profile_and_keeps_device_facts() -> None:
    facts = await _probe(FakeCamera(profiles=[]))
    assert facts.failure == "no_media_profile"
    assert facts.vendor == "HIKVISION"
    assert facts.profiles == []


async def test_profile_without_video_encoder_settings_still_counts() -> None:
    camera = FakeCamera(profiles=[FakeProfile("p0", "only", 0, 0)])
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert facts.profiles[0].rtsp_uri is not None


@pytest.mark.parametrize(
    "body",
    ["<html><body><h1>404 Not Found</h1></body></html>", "Not Found", ""],
    ids=["html", "text", "empty"],
)
async def test_http_404_is_not_onvif(body: str) -> None:
    facts = await _probe(FakeCamera(http_404=True, http_404_body=body))
    assert facts.failure == "not_onvif", facts.detail


async def test_wrong_password_is_auth_failed() -> None:
    facts = await _probe(hikvision(), password="not-the-password")
    assert facts.failure == "auth_failed", facts.detail
    assert facts.profiles == []


async def test_wrong_username_is_auth_failed() -> None:
    async with FakeOnvifServer(hikvision()) as server:
        facts = await interrogate(HOST, server.port, "operator", PASSWORD)
    assert facts.failure == "auth_failed"


async def test_http_401_is_auth_failed() -> None:
    facts = await _probe(FakeCamera(http_401=True))
    assert facts.failure == "auth_failed", facts.detail


async def test_never_answering_device_times_out_on_time() -> None:
    started = time.monotonic()
    facts = await _probe(FakeCamera(hang=True), timeout=1.0)
    elapsed = time.monotonic() - started
    assert facts.failure == "timeout"
    assert elapsed < 1.0 + 1.5


async def test_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    facts = await interrogate(HOST, port, USER, PASSWORD, timeout=3.0)
    assert facts.failure == "unreachable", facts.detail


async def test_credentials_never_in_detail_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = "Zq9-unique-pa55word"
    caplog.set_level(logging.DEBUG)
    results = [
        await _probe(FakeCamera(password=secret), password=secret),
        await _probe(FakeCamera(), password=secret),
        await _probe(FakeCamera(hang=True), password=secret, timeout=0.5),
        await _probe(FakeCamera(http_404=True), password=secret),
        await _probe(FakeCamera(profiles=[], password=secret), password=secret),
    ]
    assert [f.failure for f in results] == [
        None,
        "auth_failed",
        "timeout",
        "not_onvif",
        "no_media_profile",
    ]
    for facts in results:
        assert secret not in facts.detail
        assert secret not in repr(facts)
    assert secret not in caplog.text
    leaked = [r for r in caplog.records if "UsernameToken" in r.getMessage()]
    assert not leaked, [(r.name, r.getMessage()[:200]) for r in leaked]  # no WS-Security header
    assert secret not in repr(Target(HOST, 80, USER, secret))


async def test_proxy_environment_survives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.example:3129")
    facts = await _probe(hikvision())
    assert facts.ok
    assert os.environ["http_proxy"] == "http://proxy.example:3128"
    assert os.environ["https_proxy"] == "http://proxy.example:3129"


async def test_interrogate_many_respects_concurrency_and_order() -> None:
    camera = FakeCamera(delay=0.03)
    async with FakeOnvifServer(camera) as server:
        targets: list[Target | tuple[str, int, str | None, str | None]] = [
            Target(HOST, server.port, USER, PASSWORD) for _ in range(7)
        ]
        targets.insert(3, (HOST, server.port, USER, "wrong"))
        results = await interrogate_many(targets, concurrency=3, timeout=10.0)
    assert len(results) == 8
    assert [f.failure for f in results] == [None] * 3 + ["auth_failed"] + [None] * 4
    assert camera.max_in_flight == 3


async def test_interrogate_many_rejects_zero_concurrency() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await interrogate_many([], concurrency=0)


def test_importing_the_library_leaves_logging_alone() -> None:
    """onvif.client calls logging.basicConfig at import; a fresh interpreter proves we undo it."""
    code = (
        "import asyncio, logging\n"
        "from ingest.onvif import probe as onvif_probe\n"
        "asyncio.run(onvif_probe._load_onvif())\n"
        "root = logging.getLogger()\n"
        "assert root.handlers == [], root.handlers\n"
        "assert root.level == logging.WARNING, root.level\n"
        "assert logging.getLogger('zeep.client').level == logging.NOTSET\n"
    )
    root_dir = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root_dir, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("rtsp://192.168.1.64:554/live", "rtsp://10.0.0.5:554/live"),
        ("rtsp://0.0.0.0/live", "rtsp://10.0.0.5/live"),
        ("rtsp://10.0.0.5:554/live", "rtsp://10.0.0.5:554/live"),
        ("rtsp://8.8.8.8:554/live", "rtsp://8.8.8.8:554/live"),
        ("rtsp://cam.example:554/live", "rtsp://cam.example:554/live"),
        ("rtsp://admin:pw@192.168.1.64:554/live?a=1", "rtsp://10.0.0.5:554/live?a=1"),
        ("rtsp://admin:p#w@192.168.1.64:554/live", "rtsp://10.0.0.5:554/live"),
        ("rtsp://admin:p?w@192.168.1.64/live", "rtsp://10.0.0.5/live"),
        ("rtsp://admin:12/34@192.168.1.64/live", "rtsp://10.0.0.5/live"),
        ("", None),
        ("not a uri", None),
    ],
)
def test_reachable_uri(uri: str, expected: str | None) -> None:
    assert _reachable_uri(uri, "10.0.0.5") == expected


def test_reachable_uri_ipv6() -> None:
    assert _reachable_uri("rtsp://192.168.1.64:554/x", "fd00::5") == "rtsp://[fd00::5]:554/x"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("44:19:B6:0A:0B:0C", "44:19:b6:0a:0b:0c"),
        ("44-19-b6-0a-0b-0c", "44:19:b6:0a:0b:0c"),
        ("4419.b60a.0b0c", "44:19:b6:0a:0b:0c"),
        ("00:00:00:00:00:00", None),
        ("junk", None),
        (None, None),
    ],
)
def test_normalise_mac(raw: str | None, expected: str | None) -> None:
    assert _normalise_mac(raw) == expected
