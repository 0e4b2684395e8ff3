"""Discovery over the API, end to end on loopback: a scan job sweeps fake devices on several
127.0.0.0/8 addresses, the inbox fills, filters and statuses work, devices are registered
(one camera per NVR channel), and a device that moves to a new address stays one device."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.discovery import SCAN_CONFIG
from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from camera_registry.store.inbox import Inbox
from tests.ingest.fake_fleet import endpoint_for, fleet
from tests.ingest.fake_onvif import FakeCamera, nvr

from ..conftest import Tok, camera

PASSWORD = "Secr3t!pass"
SCOPE = "1401"


async def _scan(client: TestClient, h: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/v1/discovery/scans", json=body, headers=h)
    assert resp.status == 202, await resp.text()
    scan = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/discovery/scans/{scan['id']}"
    async with asyncio.timeout(60):  # upper bound for a hanging scan
        while scan["status"] in ("queued", "running"):
            await asyncio.sleep(0.1)
            scan = await (await client.get(resp.headers["Location"], headers=h)).json()
    return scan


async def _inbox(client: TestClient, h: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/discovery/devices{query}", headers=h)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def test_scan_job_finds_interrogates_and_counts_by_category(
    client: TestClient, auth: Tok, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    devices = [
        ("127.0.3.1", FakeCamera(serial="SN-A", mac="02:00:00:00:03:01")),
        ("127.0.3.2", FakeCamera(serial="SN-B", mac="02:00:00:00:03:02")),
        ("127.0.3.3", FakeCamera(serial="SN-C", mac="02:00:00:00:03:03", password="other")),
        ("127.0.3.4", FakeCamera(serial="SN-D", mac="02:00:00:00:03:04", profiles=[])),
    ]
    h = await auth("technician", SCOPE)
    async with fleet(devices) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(
            client,
            h,
            {
                "cidrs": ["127.0.3.0/29"],
                "username": "admin",
                "password": PASSWORD,
                "timeout": 0.5,
                "rate": 2000,
            },
        )
    assert scan["status"] == "done", scan
    assert scan["addresses"] == 6 and scan["probed"] == 6 and scan["progress"] == 1.0
    assert (scan["found"], scan["interrogated"]) == (4, 4)
    assert scan["failed"] == {"auth_failed": 1, "no_media_profile": 1}
    assert scan["scope"] == SCOPE and scan["has_credentials"] is False  # dropped at the end
    assert PASSWORD not in json.dumps(scan) and PASSWORD not in caplog.text

    found = await _inbox(client, h, f"?scan={scan['id']}")
    assert sorted(d["address"] for d in found) == [a for a, _ in devices]
    assert all(d["status"] == "new" and d["found_scope"] == SCOPE for d in found)
    assert PASSWORD not in json.dumps(found)
    auth_failed = await _inbox(client, h, f"?scan={scan['id']}&category=auth_failed")
    assert [d["address"] for d in auth_failed] == ["127.0.3.3"]
    ok = await _inbox(client, h, f"?scan={scan['id']}&category=ok")
    assert sorted(d["address"] for d in ok) == ["127.0.3.1", "127.0.3.2"]

    # Ignore one: it leaves the default list and shows under status=ignored.
    no_profile = next(d for d in found if d["address"] == "127.0.3.4")
    resp = await client.post(f"/api/v1/discovery/devices/{no_profile['id']}/ignore", headers=h)
    assert resp.status == 200 and (await resp.json())["status"] == "ignored"
    ignored = await _inbox(client, h, "?status=ignored")
    assert [d["id"] for d in ignored] == [no_profile["id"]]
    assert no_profile["id"] not in {d["id"] for d in await _inbox(client, h, "?status=new")}

    # Another region's technician sees neither the scan nor its devices.
    other = await auth("technician", "1402")
    assert (await client.get(f"/api/v1/discovery/scans/{scan['id']}", headers=other)).status == 404
    assert await _inbox(client, other, f"?scan={scan['id']}") == []


async def test_scan_to_registered_camera_with_streams_and_no_credentials(
    client: TestClient, auth: Tok
) -> None:
    """The technician's flow: scan (API) → inbox → register → camera readable from the API."""
    h = await auth("technician", SCOPE)
    async with fleet([("127.0.4.1", FakeCamera(serial="SN-E2E", mac="02:00:00:00:04:01"))]) as (
        _,
        port,
    ):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(
            client,
            h,
            {"cidrs": ["127.0.4.1/32"], "username": "admin", "password": PASSWORD, "timeout": 0.3},
        )
    (device,) = await _inbox(client, h, f"?scan={scan['id']}")
    assert device["failure"] is None and device["has_credentials"] is True
    assert device["ptz"] is False and device["clock_skew_s"] is not None
    here = camera(gb_id="14010500001325004101", name="南门", lon=112.56, lat=37.81, streams=...)
    resp = await client.post(
        f"/api/v1/discovery/devices/{device['id']}/register", json=here, headers=h
    )
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    cam = await (await client.get(f"/api/v1/cameras/{made['id']}", headers=h)).json()
    assert cam["name"] == "南门" and cam["serial"] == "SN-E2E" and cam["ip"] == "127.0.4.1"
    assert cam["streams"]["main"].startswith("rtsp://127.0.4.1:554/")
    assert cam["streams"]["sub"].startswith("rtsp://127.0.4.1:554/")
    assert cam["has_credentials"] is True
    text = json.dumps(cam)
    assert PASSWORD not in text and "password" not in cam and "username" not in cam
    (after,) = await _inbox(client, h, f"?scan={scan['id']}&all=1")
    assert after["status"] == "registered" and after["camera_ids"] == [made["id"]]
    again = await client.post(
        f"/api/v1/discovery/devices/{device['id']}/register", json=here, headers=h
    )
    assert again.status == 422


async def test_nvr_registers_one_camera_per_channel(client: TestClient, auth: Tok) -> None:
    h = await auth("technician", SCOPE)
    async with fleet([("127.0.5.1", nvr(3))]) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        scan = await _scan(
            client,
            h,
            {"cidrs": ["127.0.5.1/32"], "username": "admin", "password": PASSWORD, "timeout": 0.3},
        )
    (device,) = await _inbox(client, h, f"?scan={scan['id']}")
    assert len(device["profiles"]) == 6
    here = camera(gb_id="14010500001325005001", name="仓库NVR", streams=...)
    resp = await client.post(
        f"/api/v1/discovery/devices/{device['id']}/register", json=here, headers=h
    )
    assert resp.status == 201, await resp.text()
    items = (await resp.json())["items"]
    assert [c["name"] for c in items] == [f"仓库NVR 通道{i}" for i in (1, 2, 3)]
    assert [c["gb_id"] for c in items] == [f"1401050000132500500{i}" for i in (1, 2, 3)]
    assert [c["channel"] for c in items] == [f"VideoSource_{i}" for i in (1, 2, 3)]
    mains = [c["streams"]["main"] for c in items]
    assert len(set(mains)) == 3 and all("Profile_" in m for m in mains)
    assert all(c["has_credentials"] for c in items)


async def test_nvr_channels_named_one_by_one_and_wrong_count_is_refused(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician", SCOPE)
    inbox = Inbox(client.app[POOL], client.app[BOX])
    profiles = [
        {"token": f"p{c}", "name": "x", "width": 1920, "height": 1080, "source": f"VS{c}",
         "rtsp_uri": f"rtsp://127.0.6.1:554/ch{c}"}
        for c in (1, 2)
    ]  # fmt: skip
    await inbox.upsert(
        Actor("t", Role.TECHNICIAN, scope=SCOPE),
        [{"endpoint": "urn:uuid:nvr-named", "address": "127.0.6.1", "port": 80,
          "profiles": profiles, "failure": None}],
    )  # fmt: skip
    (device,) = [d for d in await _inbox(client, h) if d["endpoint"] == "urn:uuid:nvr-named"]
    url = f"/api/v1/discovery/devices/{device['id']}/register"
    bad = await client.post(
        url, json=camera(name="x", gb_id=..., channels=[{"name": "a"}]), headers=h
    )
    assert bad.status == 422 and "channels" in await bad.text()
    body = camera(
        name="x",
        gb_id=...,
        region_code="140105",
        channels=[
            {"name": "东", "gb_id": "14010500001325006011"},
            {"name": "西", "gb_id": "14010500001325006022"},
        ],
    )
    resp = await client.post(url, json=body, headers=h)
    assert resp.status == 201, await resp.text()
    items = (await resp.json())["items"]
    assert [(c["name"], c["gb_id"]) for c in items] == [
        ("东", "14010500001325006011"),
        ("西", "14010500001325006022"),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cidrs": ["10.0.0.0/8"]}, "cidrs"),
        ({"cidrs": ["10.0.0.0/16", "10.1.0.0/16"]}, "cidrs"),
        ({"cidrs": ["not-a-range"]}, "cidrs"),
        ({}, "cidrs"),
        ({"cidrs": ["127.0.0.1/32"], "rate": 10**6}, "rate"),
        ({"cidrs": ["127.0.0.1/32"], "concurrency": 0}, "concurrency"),
        ({"cidrs": ["127.0.0.1/32"], "ports": [70000]}, "ports"),
        ({"interfaces": ["eth0"]}, "interfaces"),
        ({"cidrs": ["127.0.0.1/32"], "secret": 1}, "secret"),
    ],
)
async def test_bad_scan_request_names_the_field(
    client: TestClient, auth: Tok, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/api/v1/discovery/scans", json=body, headers=await auth("technician"))
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]]


@pytest.mark.parametrize("query", ["?status=gone", "?category=broken", "?scan=nope"])
async def test_bad_inbox_filter_names_the_field(client: TestClient, auth: Tok, query: str) -> None:
    resp = await client.get(f"/api/v1/discovery/devices{query}", headers=await auth("technician"))
    assert resp.status == 400
    field = query[1:].split("=")[0]
    assert field in [e["field"] for e in (await resp.json())["errors"]]


async def test_device_moving_to_a_new_address_is_one_device_and_its_camera_follows(
    client: TestClient, auth: Tok
) -> None:
    """Identity across scans: endpoint UUID, then MAC, then serial; an IP change updates the
    inbox row and the registered camera's ip and streams, with an audit record."""
    h = await auth("technician", SCOPE)
    admin = await auth("admin")
    endpoint = "urn:uuid:mover-0001"
    cam = FakeCamera(serial="SN-MOVER", mac="02:00:00:00:07:01")
    async with fleet([("127.0.7.1", cam)], endpoints=[endpoint]) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        first = await _scan(
            client,
            h,
            {"cidrs": ["127.0.7.1/32"], "username": "admin", "password": PASSWORD, "timeout": 0.3},
        )
    (device,) = await _inbox(client, h, f"?scan={first['id']}")
    here = camera(gb_id="14010500001325007001", name="移动", streams=...)
    made = await (
        await client.post(
            f"/api/v1/discovery/devices/{device['id']}/register", json=here, headers=h
        )
    ).json()
    # DHCP gave it a new address.
    async with fleet([("127.0.7.9", cam)], endpoints=[endpoint]) as (_, port):
        client.app[SCAN_CONFIG].discovery_port = port
        second = await _scan(
            client,
            h,
            {"cidrs": ["127.0.7.9/32"], "username": "admin", "password": PASSWORD, "timeout": 0.3},
        )
    rows = [d for d in await _inbox(client, h, "?all=1") if d["serial"] == "SN-MOVER"]
    assert len(rows) == 1 and rows[0]["id"] == device["id"]
    assert rows[0]["address"] == "127.0.7.9" and rows[0]["status"] == "registered"
    assert [d["id"] for d in await _inbox(client, h, f"?scan={second['id']}&all=1")] == [
        device["id"]
    ]
    moved = await (await client.get(f"/api/v1/cameras/{made['id']}", headers=h)).json()
    assert moved["ip"] == "127.0.7.9" and moved["version"] == made["version"] + 1
    assert moved["streams"]["main"].startswith("rtsp://127.0.7.9:554/")
    audit = await (await client.get(f"/api/v1/audit?camera_id={made['id']}", headers=admin)).json()
    updates = [a for a in audit["items"] if a["action"] == "camera.update"]
    assert updates and updates[0]["detail"]["to"] == "127.0.7.9"


@pytest.mark.parametrize("key", ["mac", "serial"])
async def test_identity_falls_back_to_mac_then_serial(client: TestClient, key: str) -> None:
    """A device found by HTTP sweep has an address-derived key; MAC or serial carry it."""
    inbox = Inbox(client.app[POOL], client.app[BOX])
    actor = Actor("t", Role.ADMIN)
    ident = {"mac": "02:00:00:00:08:01"} if key == "mac" else {"serial": "SN-ONLY-SERIAL"}
    net = "127.0.8" if key == "mac" else "127.0.9"
    for address in (f"{net}.1", f"{net}.2"):
        await inbox.upsert(
            actor,
            [{"endpoint": f"http://{address}:80/onvif/device_service", "address": address,
              "port": 80, "failure": None, **ident}],
        )  # fmt: skip
    rows = [d for d in await inbox.list(actor, pending_only=False) if d[key] == ident[key]]
    assert len(rows) == 1 and rows[0]["address"] == f"{net}.2"
    # A WS-Discovery UUID found later replaces the address-derived key.
    await inbox.upsert(
        actor,
        [{"endpoint": endpoint_for(f"{net}.2"), "address": f"{net}.2", "port": 80,
          "failure": None, **ident}],
    )  # fmt: skip
    rows = [d for d in await inbox.list(actor, pending_only=False) if d[key] == ident[key]]
    assert len(rows) == 1 and rows[0]["endpoint"] == endpoint_for(f"{net}.2")


async def test_two_scans_finding_the_same_new_device_at_once_make_one_row(
    client: TestClient,
) -> None:
    inbox = Inbox(client.app[POOL], client.app[BOX])
    actor = Actor("t", Role.ADMIN)
    device = {"endpoint": "urn:uuid:raced-0001", "address": "127.0.10.1", "port": 80,
              "failure": None, "serial": "SN-RACED"}  # fmt: skip
    await asyncio.gather(*(inbox.upsert(actor, [dict(device)]) for _ in range(4)))
    rows = [d for d in await inbox.list(actor, pending_only=False) if d["serial"] == "SN-RACED"]
    assert len(rows) == 1


async def test_nvr_registration_is_all_or_nothing(client: TestClient, auth: Tok) -> None:
    h = await auth("technician", SCOPE)
    taken = camera(gb_id="14010500001325011002", name="已有", streams=...)
    assert (await client.post("/api/v1/cameras", json=taken, headers=h)).status == 201
    inbox = Inbox(client.app[POOL], client.app[BOX])
    profiles = [
        {"token": f"p{c}", "name": "x", "width": 1920, "height": 1080, "source": f"VS{c}",
         "rtsp_uri": f"rtsp://127.0.11.1:554/ch{c}"}
        for c in (1, 2, 3)
    ]  # fmt: skip
    await inbox.upsert(
        Actor("t", Role.TECHNICIAN, scope=SCOPE),
        [{"endpoint": "urn:uuid:nvr-clash", "address": "127.0.11.1", "port": 80,
          "profiles": profiles, "failure": None}],
    )  # fmt: skip
    (device,) = [d for d in await _inbox(client, h) if d["endpoint"] == "urn:uuid:nvr-clash"]
    # Channel 2 would get ...011002, which exists: nothing may be left of channel 1.
    body = camera(gb_id="14010500001325011001", name="冲突NVR", streams=...)
    resp = await client.post(
        f"/api/v1/discovery/devices/{device['id']}/register", json=body, headers=h
    )
    assert resp.status == 409, await resp.text()
    left = await client.app[POOL].fetchval(
        "SELECT count(*) FROM cameras WHERE gb_id = '14010500001325011001'"
    )
    assert left == 0
    (still,) = [d for d in await _inbox(client, h) if d["endpoint"] == "urn:uuid:nvr-clash"]
    assert still["status"] == "new"
