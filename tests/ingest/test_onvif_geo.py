"""GeoLocation during interrogation (issue 3): read when the device has one, flagged when it
is the (0, 0) factory default or outside China, absent without fuss when the device lacks it,
and absent with a note (never a failure category) when the answer is hostile.

Each test runs a `FakeCamera` behind a real aiohttp server on loopback; the requests are the
prober's own hand-built SOAP, checked by the fake's real WS-UsernameToken digest check.
"""

from __future__ import annotations

import time

import pytest

from ingest.onvif.geolocation import plausibility
from ingest.onvif.probe import DeviceFacts, interrogate
from tests.ingest.fake_onvif import FakeCamera, FakeOnvifServer

HOST = "127.0.0.1"
USER = "admin"
PASSWORD = "Secr3t!pass"  # FakeCamera's default
TAIYUAN = (112.5650, 37.8120, 802.5)


async def _probe(camera: FakeCamera, password: str = PASSWORD) -> DeviceFacts:
    async with FakeOnvifServer(camera) as server:
        return await interrogate(HOST, server.port, USER, password, timeout=8.0)


async def test_announced_geolocation_is_read() -> None:
    camera = FakeCamera(geolocation=TAIYUAN)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert (facts.geo_lon, facts.geo_lat, facts.geo_elevation) == TAIYUAN
    assert facts.geo_flag is None and facts.detail == ""
    assert camera.requests[-2:] == ["GetServiceCapabilities", "GetGeoLocation"]


async def test_geolocation_is_signed_with_the_device_clock() -> None:
    """A clock 5 h behind with a 5-minute window: the hand-built digest uses the skew too."""
    camera = FakeCamera(geolocation=TAIYUAN, clock_offset=-5 * 3600, time_window=300)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail
    assert facts.geo_lat == TAIYUAN[1] and facts.detail == ""


async def test_soap_1_1_device_location_is_read() -> None:
    facts = await _probe(FakeCamera(geolocation=TAIYUAN, soap11=True))
    assert facts.failure is None, facts.detail
    assert (facts.geo_lon, facts.geo_lat) == TAIYUAN[:2]


async def test_zero_zero_default_is_kept_but_flagged() -> None:
    facts = await _probe(FakeCamera(geolocation=(0.0, 0.0, 0.0)))
    assert facts.failure is None
    assert (facts.geo_lon, facts.geo_lat, facts.geo_flag) == (0.0, 0.0, "zero")
    assert "(0, 0)" in facts.detail


async def test_location_outside_china_is_kept_but_flagged() -> None:
    facts = await _probe(FakeCamera(geolocation=(13.4, 52.5, 34.0)))  # Berlin
    assert facts.failure is None
    assert (facts.geo_lon, facts.geo_flag) == (13.4, "outside_china")
    assert "outside China" in facts.detail


async def test_out_of_range_location_is_dropped_with_a_note() -> None:
    facts = await _probe(FakeCamera(geolocation=(212.5, 37.8, 0.0)))
    assert facts.failure is None
    assert facts.geo_lon is None and facts.geo_lat is None
    assert "not WGS-84" in facts.detail


async def test_device_without_geolocation_is_not_asked_and_not_failed() -> None:
    camera = FakeCamera()  # capabilities do not announce GeoLocationEntries
    facts = await _probe(camera)
    assert facts.failure is None and facts.detail == ""
    assert facts.geo_lon is None and facts.geo_flag is None
    assert "GetGeoLocation" not in camera.requests


async def test_without_capability_information_it_is_tried_once_and_a_fault_is_no_failure() -> None:
    camera = FakeCamera(service_capabilities=False)  # no capabilities, GetGeoLocation faults
    facts = await _probe(camera)
    assert facts.failure is None and facts.detail == ""
    assert facts.geo_lon is None
    assert camera.requests.count("GetGeoLocation") == 1


async def test_without_capability_information_a_location_is_still_read() -> None:
    facts = await _probe(FakeCamera(geolocation=TAIYUAN, service_capabilities=False))
    assert (facts.geo_lon, facts.geo_lat) == TAIYUAN[:2] and facts.detail == ""


async def test_video_source_location_is_taken_when_the_device_has_no_own() -> None:
    facts = await _probe(FakeCamera(geolocation=TAIYUAN, geo_entity="VideoSource"))
    assert facts.geo_lon == TAIYUAN[0]


@pytest.mark.parametrize(
    ("hostile", "note"),
    [("xxe", "DTD"), ("billion_laughs", "DTD"), ("huge", "larger than 2 MiB")],
)
async def test_hostile_geolocation_answer_leaves_it_absent_with_a_note(
    hostile: str, note: str
) -> None:
    camera = FakeCamera(geolocation=TAIYUAN, geo_hostile=hostile)
    facts = await _probe(camera)
    assert facts.failure is None, facts.detail  # the camera is still usable
    assert len(facts.profiles) == 2
    assert facts.geo_lon is None and facts.geo_lat is None and facts.geo_flag is None
    assert facts.detail.startswith("GeoLocation not read") and note in facts.detail
    assert "root:" not in facts.detail and PASSWORD not in facts.detail


async def test_geolocation_that_never_answers_costs_only_its_share_of_the_budget() -> None:
    """The location is optional: a device hanging on it is still usable, and quickly."""
    camera = FakeCamera(geolocation=TAIYUAN, geo_hang=True)
    async with FakeOnvifServer(camera) as server:
        began = time.monotonic()
        facts = await interrogate(HOST, server.port, USER, PASSWORD, timeout=2.0)
        took = time.monotonic() - began
    assert facts.failure is None, facts.detail
    assert facts.geo_lon is None and "no answer in time" in facts.detail
    assert took < 2.0 * 0.25 + 0.5  # its share of the 2 s budget, plus the other calls


@pytest.mark.parametrize(
    ("lon", "lat", "flag"),
    [
        (112.56, 37.81, None),
        (0.0, 0.0, "zero"),
        (13.4, 52.5, "outside_china"),
        (0.0, 37.8, "outside_china"),
    ],
)
def test_plausibility(lon: float, lat: float, flag: str | None) -> None:
    assert plausibility(lon, lat) == flag
