"""The fake fleet's vendor behaviours (issue 3): every one ends in facts or one failure category,
never an exception trace, and within our own timeout.

Each test runs one `FakeCamera` with one behaviour switched on behind a real aiohttp server on
loopback and interrogates it with the real client library.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

from ingest.onvif.probe import DeviceFacts, interrogate
from tests.ingest.fake_onvif import FakeCamera, FakeOnvifServer, nvr

HOST = "127.0.0.1"
USER = "admin"
PASSWORD = "Secr3t!pass"  # FakeCamera's default
HOURS = 3600.0


async def _probe(camera: FakeCamera, password: str = PASSWORD, budget: float = 8.0) -> DeviceFacts:
    async with FakeOnvifServer(camera) as server:
        return await interrogate(HOST, server.port, USER, password, timeout=budget)


async def test_soap_1_1_replies_are_understood() -> None:
    facts = await _probe(FakeCamera(soap11=True))
    assert facts.failure is None, facts.detail
    assert facts.vendor == "HIKVISION" and len(facts.profiles) == 2


async def test_soap_1_1_fault_for_a_wrong_password_is_auth_failed() -> None:
    facts = await _probe(FakeCamera(soap11=True), password="wrong")
    assert facts.failure == "auth_failed", facts.detail


async def test_soap_1_1_without_get_services_falls_back() -> None:
    facts = await _probe(FakeCamera(soap11=True, get_services=False))
    assert facts.failure is None, facts.detail


async def test_soap_1_2_replies_are_understood() -> None:
    facts = await _probe(FakeCamera(soap11=False))
    assert facts.failure is None, facts.detail


async def test_clock_hours_off_is_compensated_in_the_digest() -> None:
    camera = FakeCamera(clock_offset=-5 * HOURS, time_window=300)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert facts.clock_skew_s is not None and abs(facts.clock_skew_s + 5 * HOURS) < 60


async def test_clock_hours_ahead_is_compensated_in_the_digest() -> None:
    facts = await _probe(FakeCamera(clock_offset=9 * HOURS, time_window=300))
    assert facts.failure is None, facts.detail


async def test_device_misreporting_its_clock_is_clock_skew_not_auth_failed() -> None:
    """Local time (UTC+8) reported as UTC: we sign 8 h off, it refuses, the skew is large."""
    camera = FakeCamera(reported_offset=8 * HOURS, time_window=300)
    facts = await _probe(camera)
    assert facts.failure == "clock_skew", facts.detail
    assert "clock" in facts.detail and PASSWORD not in facts.detail


async def test_message_expired_fault_is_clock_skew() -> None:
    camera = FakeCamera(reported_offset=2 * HOURS, time_window=300, time_fault=True)
    facts = await _probe(camera)
    assert facts.failure == "clock_skew", facts.detail


async def test_wrong_password_on_a_synchronised_device_stays_auth_failed() -> None:
    facts = await _probe(FakeCamera(time_window=300), password="wrong")
    assert facts.failure == "auth_failed", facts.detail


async def test_auth_required_even_on_get_system_date_and_time() -> None:
    camera = FakeCamera(auth_on_date=True)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert camera.requests.count("GetSystemDateAndTime") == 2  # anonymous, then signed


async def test_auth_on_date_with_wrong_password_is_auth_failed() -> None:
    facts = await _probe(FakeCamera(auth_on_date=True), password="wrong")
    assert facts.failure == "auth_failed", facts.detail


async def test_no_get_services_falls_back_to_get_capabilities() -> None:
    camera = FakeCamera(get_services=False)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert "GetServices" in camera.requests and "GetCapabilities" in camera.requests


async def test_xaddrs_with_a_wrong_host_use_the_address_we_reached() -> None:
    camera = FakeCamera(xaddr_host="192.168.1.64:8000")
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert "GetProfiles" in camera.requests  # the media service was reached at our address
    assert all(p.rtsp_uri and p.rtsp_uri.startswith(f"rtsp://{HOST}:") for p in facts.profiles)


async def test_xaddrs_with_a_wrong_host_and_no_get_services() -> None:
    camera = FakeCamera(xaddr_host="10.9.9.9", get_services=False)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail


async def test_slow_replies_time_out_within_our_budget() -> None:
    started = time.monotonic()
    facts = await _probe(FakeCamera(delay=5.0), budget=1.0)
    assert facts.failure == "timeout", facts.detail
    assert time.monotonic() - started < 1.0 + 2.0  # upper bound for a hanging peer


async def test_slightly_slow_replies_still_succeed() -> None:
    facts = await _probe(FakeCamera(delay=0.05), budget=8.0)
    assert facts.failure is None, facts.detail


async def test_auth_fault_with_http_200_is_auth_failed() -> None:
    facts = await _probe(FakeCamera(fault_status=200), password="wrong")
    assert facts.failure == "auth_failed", facts.detail


async def test_unsupported_get_services_fault_with_http_200_still_falls_back() -> None:
    camera = FakeCamera(fault_status=200, get_services=False)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail


async def test_empty_body_with_http_200_is_not_onvif() -> None:
    facts = await _probe(FakeCamera(empty_200=True))
    assert facts.failure == "not_onvif", facts.detail


async def test_plain_text_500_is_not_onvif() -> None:
    facts = await _probe(FakeCamera(text_500=True))
    assert facts.failure == "not_onvif", facts.detail
    assert "XML" in facts.detail


async def test_dropped_connection_is_not_onvif() -> None:
    facts = await _probe(FakeCamera(drop=True))
    assert facts.failure == "not_onvif", facts.detail
    assert "closed the connection" in facts.detail


@pytest.mark.parametrize("payload", ["xxe", "billion_laughs"])
async def test_hostile_dtd_is_malformed_response_and_nothing_expands(payload: str) -> None:
    tracemalloc.start()
    try:
        facts = await _probe(FakeCamera(hostile=payload))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts.failure == "malformed_response", facts.detail
    assert "DTD" in facts.detail or "entit" in facts.detail
    assert facts.vendor is None or "root:" not in facts.vendor
    assert peak < 64 * 2**20  # a billion laughs expanded would be gigabytes


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_ten_mib_answer_is_capped_and_malformed(chunked: bool) -> None:
    tracemalloc.start()
    try:
        facts = await _probe(FakeCamera(huge=10 * 2**20, huge_chunked=chunked))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts.failure == "malformed_response", facts.detail
    assert "MiB" in facts.detail
    assert peak < 8 * 2**20  # never the whole 10 MiB in memory


async def test_answer_under_the_cap_is_fine() -> None:
    facts = await _probe(FakeCamera(huge=256 * 1024))
    assert facts.failure is None, facts.detail


async def test_multi_channel_nvr_reports_every_channel() -> None:
    facts = await _probe(nvr(4))
    assert facts.failure is None, facts.detail
    assert len(facts.profiles) == 8
    channels = facts.channels()
    assert [c for c, _ in channels] == [f"VideoSource_{i}" for i in range(1, 5)]
    for _, (main, *rest) in channels:
        assert main.height == 1080 and [p.height for p in rest] == [576]
        assert main.rtsp_uri is not None and main.rtsp_uri.startswith(f"rtsp://{HOST}:")


@pytest.mark.parametrize("get_services", [True, False], ids=["services", "capabilities"])
async def test_ptz_presence_is_reported(get_services: bool) -> None:
    facts = await _probe(FakeCamera(ptz=True, get_services=get_services))
    assert facts.failure is None and facts.ptz is True
    plain = await _probe(FakeCamera(get_services=get_services))
    assert plain.ptz is False
