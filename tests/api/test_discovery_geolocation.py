"""A device's own GeoLocation through the whole flow (issue 3), on loopback: scan → inbox
(location and flag listed) → register without lon/lat → camera at the device's place; a
flagged or missing location is never used, and the request's lon/lat then stay required."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from api.discovery import SCAN_CONFIG
from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from camera_registry.store.inbox import Inbox
from tests.ingest.fake_fleet import fleet
from tests.ingest.fake_onvif import FakeCamera, nvr

from ..conftest import Tok, camera
from .test_discovery_scans import PASSWORD, SCOPE, _inbox, _scan

XIAODIAN = (112.5650, 37.8120, 802.5)  # 太原市小店区, in the technician's scope 1401


def _scan_body(cidr: str) -> dict[str, Any]:
    return {"cidrs": [cidr], "username": "admin", "password": PASSWORD, "timeout": 0.5}


async def _register(
    client: TestClient, h: dict[str, str], device: dict[str, Any], body: dict[str, Any]
) -> Any:
    return await client.post(
        f"/api/v1/discovery/devices/{device['id']}/register", json=body, headers=h
    )


async def test_inbox_lists_location_flag_and_notes(client: TestClient, auth: Tok) -> None:
    devices = [
        ("127.0.9.1", FakeCamera(serial="G-1", mac="02:00:00:00:09:01", geolocation=XIAODIAN)),
        ("127.0.9.2", FakeCamera(serial="G-2", mac="02:00:00:00:09:02", geolocation=(0, 0, 0))),
        ("127.0.9.3", FakeCamera(serial="G-3", mac="02:00:00:00:09:03")),
        (
            "127.0.9.4",
            FakeCamera(
                serial="G-4", mac="02:00:00:00:09:04", geolocation=XIAODIAN, geo_hostile="xxe"
            ),
        ),
        (
            "127.0.9.5",
            FakeCamera(serial="G-5", mac="02:00:00:00:09:05", geolocation=(139.7, 35.7, 40)),
        ),
    ]
    h = await auth("technician", SCOPE)
    async with fleet(devices) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(client, h, _scan_body("127.0.9.0/29"))
    assert scan["status"] == "done" and scan["failed"] == {}, scan
    by = {d["address"]: d for d in await _inbox(client, h, f"?scan={scan['id']}")}
    geo = {a: (d["geo_lon"], d["geo_lat"], d["geo_flag"]) for a, d in by.items()}
    assert geo == {
        "127.0.9.1": (XIAODIAN[0], XIAODIAN[1], None),
        "127.0.9.2": (0.0, 0.0, "zero"),
        "127.0.9.3": (None, None, None),
        "127.0.9.4": (None, None, None),
        "127.0.9.5": (139.7, 35.7, "outside_china"),
    }
    assert by["127.0.9.1"]["geo_elevation"] == XIAODIAN[2] and by["127.0.9.1"]["detail"] == ""
    assert by["127.0.9.3"]["detail"] == ""  # no GeoLocation is not news
    assert "GeoLocation not read" in by["127.0.9.4"]["detail"]
    assert all(d["failure"] is None for d in by.values())
    assert PASSWORD not in json.dumps(list(by.values()))


async def test_register_without_coordinates_uses_the_device_location(
    client: TestClient, auth: Tok
) -> None:
    """scan → inbox → register with no lon/lat → the camera stands where the device says."""
    h = await auth("technician", SCOPE)
    cam = FakeCamera(serial="G-E2E", mac="02:00:00:00:09:11", geolocation=XIAODIAN)
    async with fleet([("127.0.9.11", cam)]) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(client, h, _scan_body("127.0.9.11/32"))
    (device,) = await _inbox(client, h, f"?scan={scan['id']}")
    here = camera(gb_id="14010500001325009011", name="东门", lon=..., lat=..., crs="gcj02")
    resp = await _register(client, h, device, here)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["location"] == {
        "source": "device_geolocation",
        "crs": "wgs84",  # the device's WGS-84, not the crs sent for absent coordinates
        "lon": XIAODIAN[0],
        "lat": XIAODIAN[1],
        "elevation": XIAODIAN[2],
    }
    got = await (await client.get(f"/api/v1/cameras/{made['id']}", headers=h)).json()
    assert (got["lon"], got["lat"]) == (XIAODIAN[0], XIAODIAN[1])
    assert got["region_code"].startswith(SCOPE) and got["serial"] == "G-E2E"
    row = await client.app[POOL].fetchrow(
        "SELECT actor, detail FROM audit_log WHERE action = 'discovery.register'"
        " AND camera_id = $1::uuid",
        made["id"],
    )
    assert row is not None
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert detail["location"]["source"] == "device_geolocation"
    assert detail["device"] == device["id"] and detail["cameras"] == [made["id"]]


async def test_given_coordinates_win_over_the_device_location(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician", SCOPE)
    cam = FakeCamera(serial="G-W", mac="02:00:00:00:09:12", geolocation=XIAODIAN)
    async with fleet([("127.0.9.12", cam)]) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(client, h, _scan_body("127.0.9.12/32"))
    (device,) = await _inbox(client, h, f"?scan={scan['id']}")
    here = camera(gb_id="14010500001325009012", name="西门", lon=112.5700, lat=37.8000)
    resp = await _register(client, h, device, here)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert (made["lon"], made["lat"]) == (112.57, 37.8)
    assert made["location"] == {"source": "request", "crs": "wgs84"}


async def test_flagged_or_missing_location_is_not_used_and_lon_lat_stay_required(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician", SCOPE)
    devices = [
        ("127.0.9.13", FakeCamera(serial="G-Z", mac="02:00:00:00:09:13", geolocation=(0, 0, 0))),
        ("127.0.9.14", FakeCamera(serial="G-N", mac="02:00:00:00:09:14")),
    ]
    async with fleet(devices) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(client, h, _scan_body("127.0.9.12/30"))
    found = await _inbox(client, h, f"?scan={scan['id']}")
    assert len(found) == 2
    for n, device in enumerate(found):
        here = camera(gb_id=f"1401050000132500902{n}", name="北门", lon=..., lat=...)
        resp = await _register(client, h, device, here)
        assert resp.status == 422, await resp.text()
        problem = await resp.json()
        assert resp.content_type == "application/problem+json"
        assert {e["field"] for e in problem["errors"]} & {"lon", "lat"}
    assert all(d["status"] == "new" for d in await _inbox(client, h, f"?scan={scan['id']}"))


async def test_nvr_channels_all_stand_at_the_recorder_location(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician", SCOPE)
    recorder = nvr(2)
    recorder.geolocation = XIAODIAN
    async with fleet([("127.0.9.21", recorder)]) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(client, h, _scan_body("127.0.9.21/32"))
    (device,) = await _inbox(client, h, f"?scan={scan['id']}")
    here = camera(gb_id="14010500001325009031", name="库房NVR", lon=..., lat=..., streams=...)
    resp = await _register(client, h, device, here)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    assert made["location"]["source"] == "device_geolocation"
    assert [(c["lon"], c["lat"]) for c in made["items"]] == [XIAODIAN[:2]] * 2


async def test_a_scan_that_could_not_read_the_location_keeps_the_last_one(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician", SCOPE)
    inbox = Inbox(client.app[POOL], client.app[BOX])
    actor = Actor("t", Role.TECHNICIAN, scope=SCOPE)
    base = {"endpoint": "urn:uuid:geo-keep", "address": "127.0.9.31", "port": 80, "failure": None}
    first = {**base, "geo_lon": 0.0, "geo_lat": 0.0, "geo_elevation": 0.0, "geo_flag": "zero"}
    await inbox.upsert(actor, [first])
    fixed = {**base, "geo_lon": XIAODIAN[0], "geo_lat": XIAODIAN[1], "geo_flag": None}
    await inbox.upsert(actor, [fixed])  # configured since: the flag goes with the old value
    await inbox.upsert(actor, [{**base, "failure": "timeout"}])  # nothing read this time
    (device,) = [d for d in await _inbox(client, h) if d["endpoint"] == "urn:uuid:geo-keep"]
    assert (device["geo_lon"], device["geo_lat"], device["geo_flag"]) == (
        XIAODIAN[0],
        XIAODIAN[1],
        None,
    )
    assert device["geo_elevation"] is None
