"""The camera API against the real database: every example of the registry-core issue."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.state import POOL
from geo.crs import wgs84_to_gcj02

from ..conftest import Tok, camera

PROBLEM = "application/problem+json"


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=None)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body["errors"]}


async def test_register_then_read_back_with_etag_and_without_credentials(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    body = camera(
        gb_id="14010500001320000101",
        username="admin",
        password="Hik12345!",
        streams={"main": "rtsp://10.1.1.5:554/Streaming/Channels/101"},
    )
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert resp.headers["ETag"] == '"1"'
    assert resp.headers["Location"] == f"/api/v1/cameras/{created['id']}"
    assert created["region_code"] == "140105"
    assert created["status"] == "unknown"
    assert created["has_credentials"] is True
    text = await (await client.get(f"/api/v1/cameras/{created['id']}", headers=h)).text()
    assert "Hik12345!" not in text and "password" not in text and "username" not in text
    got = await (await client.get(f"/api/v1/cameras/{created['id']}", headers=h)).json()
    assert got == created


async def test_stream_uri_credentials_are_moved_out_of_the_uri(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    body = camera(
        gb_id="14010500001320000102", streams={"main": "rtsp://admin:s3cret@10.1.1.6:554/h264"}
    )
    created = await (await client.post("/api/v1/cameras", json=body, headers=h)).json()
    assert created["streams"]["main"] == "rtsp://10.1.1.6:554/h264"
    assert created["has_credentials"] is True
    sealed = await client.app[POOL].fetchval(
        "SELECT credentials FROM cameras WHERE id = $1::uuid", created["id"]
    )
    assert b"s3cret" not in sealed


async def test_malformed_json_is_a_400_problem(client: TestClient, auth: Tok) -> None:
    resp = await client.post(
        "/api/v1/cameras",
        data=b'{"name": "x",',
        headers={**await auth("technician"), "Content-Type": "application/json"},
    )
    body = await problem(resp, 400)
    assert "JSON" in body["detail"]


async def test_unknown_field_is_named(client: TestClient, auth: Tok) -> None:
    resp = await client.post(
        "/api/v1/cameras", json=camera(colour="red"), headers=await auth("technician")
    )
    body = await problem(resp, 422)
    assert fields(body) == {"colour"}


@pytest.mark.parametrize(
    ("over", "field", "words"),
    [
        ({"lon": 190.0, "lat": 37.8}, "lon", "±180"),
        ({"lon": 2.35, "lat": 48.85}, "lon", "outside China"),
        ({"lon": 37.812, "lat": 112.565}, "lat", "swapped"),
        ({"gb_id": "1401050000132000000X"}, "gb_id", "20 digits"),
        ({"gb_id": "99010500001320000001"}, "gb_id", "province"),
        ({"gb_id": "14010500001110000001"}, "gb_id", "camera type"),
        ({"gb_id": "14010500001320000001", "region_code": "140106"}, "region_code", "disagrees"),
        ({"level": 5}, "level", "PointType"),
        ({"level": "四类"}, "level", "PointType"),
        ({"lon": None, "lat": None}, "lon", "一类/二类"),
        ({"level": 1}, "record_days", "录像保存天数"),
        ({"azimuth": 400}, "azimuth", "360"),
        ({"ip": "10.0.0.300"}, "ip", "IPv4"),
        ({"streams": {"main": "ftp://x"}}, "stream_main", "rtsp://"),
    ],
)
async def test_bad_camera_fields_are_clean_422s_naming_the_field(
    client: TestClient, auth: Tok, over: dict[str, Any], field: str, words: str
) -> None:
    resp = await client.post(
        "/api/v1/cameras", json=camera(**over), headers=await auth("technician")
    )
    body = await problem(resp, 422)
    assert field in fields(body), body
    assert any(words in e["message"] for e in body["errors"]), body


async def test_wrong_json_type_is_a_422_not_a_500(client: TestClient, auth: Tok) -> None:
    resp = await client.post(
        "/api/v1/cameras", json=camera(lon="east"), headers=await auth("technician")
    )
    assert "lon" in fields(await problem(resp, 422))


async def test_body_that_is_not_an_object_is_a_400(client: TestClient, auth: Tok) -> None:
    resp = await client.post("/api/v1/cameras", json=[1, 2], headers=await auth("technician"))
    await problem(resp, 400)


async def test_duplicate_gb_id_is_409(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    body = camera(gb_id="14010500001320000201")
    assert (await client.post("/api/v1/cameras", json=body, headers=h)).status == 201
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert fields(await problem(resp, 409)) == {"gb_id"}


async def test_oversized_body_is_413(client: TestClient, auth: Tok) -> None:
    big = camera(address="街" * 2_000_000)
    resp = await client.post("/api/v1/cameras", json=big, headers=await auth("technician"))
    await problem(resp, 413)


async def test_gcj02_input_is_stored_as_wgs84(client: TestClient, auth: Tok) -> None:
    glon, glat = wgs84_to_gcj02(112.5650, 37.8120)
    body = camera(gb_id="14010500001320000301", lon=float(glon), lat=float(glat), crs="gcj02")
    created = await (
        await client.post("/api/v1/cameras", json=body, headers=await auth("technician"))
    ).json()
    assert created["lon"] == pytest.approx(112.5650, abs=1e-6)
    assert created["lat"] == pytest.approx(37.8120, abs=1e-6)


async def test_missing_gb_id_is_generated_for_the_region(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    a = await (
        await client.post(
            "/api/v1/cameras", json=camera(gb_id=..., region_code="140107"), headers=h
        )
    ).json()
    b = await (
        await client.post(
            "/api/v1/cameras", json=camera(gb_id=..., region_code="140107"), headers=h
        )
    ).json()
    assert a["gb_id"].startswith("140107") and b["gb_id"].startswith("140107")
    assert a["gb_id"] != b["gb_id"] and len(a["gb_id"]) == 20
    resp = await client.post("/api/v1/cameras", json=camera(gb_id=...), headers=h)
    assert "region_code" in fields(await problem(resp, 422))


async def test_patch_needs_if_match_and_refuses_a_stale_version(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    created = await (
        await client.post("/api/v1/cameras", json=camera(gb_id="14010500001320000401"), headers=h)
    ).json()
    url = f"/api/v1/cameras/{created['id']}"
    await problem(await client.patch(url, json={"azimuth": 90}, headers=h), 428)
    resp = await client.patch(
        url,
        json={"azimuth": 90, "streams": {"sub": "rtsp://10.0.0.9/sub"}},
        headers={**h, "If-Match": '"1"'},
    )
    assert resp.status == 200, await resp.text()
    patched = await resp.json()
    assert patched["azimuth"] == 90 and patched["version"] == 2
    assert patched["streams"] == {"sub": "rtsp://10.0.0.9/sub"}
    assert patched["name"] == created["name"]
    assert resp.headers["ETag"] == '"2"'
    await problem(
        await client.patch(url, json={"azimuth": 10}, headers={**h, "If-Match": '"1"'}), 412
    )
    resp = await client.patch(
        url, json={"lat": 116.0, "lon": 39.0}, headers={**h, "If-Match": '"2"'}
    )
    assert "lat" in fields(await problem(resp, 422))
    resp = await client.patch(url, json={"address": None}, headers={**h, "If-Match": '"2"'})
    assert (await resp.json())["address"] is None


async def test_delete_then_gone(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    created = await (
        await client.post("/api/v1/cameras", json=camera(gb_id="14010500001320000501"), headers=h)
    ).json()
    url = f"/api/v1/cameras/{created['id']}"
    await problem(await client.delete(url, headers={**h, "If-Match": '"7"'}), 412)
    assert (await client.delete(url, headers=h)).status == 204
    await problem(await client.get(url, headers=h), 404)
    await problem(await client.get("/api/v1/cameras/not-a-uuid", headers=h), 404)


async def test_every_change_is_audited_without_secrets(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    created = await (
        await client.post(
            "/api/v1/cameras",
            json=camera(gb_id="14010500001320000601", password="pw-in-audit?"),
            headers=h,
        )
    ).json()
    url = f"/api/v1/cameras/{created['id']}"
    await client.patch(url, json={"name": "新名称"}, headers={**h, "If-Match": '"1"'})
    await client.delete(url, headers=h)
    pool = client.app[POOL]
    rows = await pool.fetch(
        "SELECT action, actor, before, after FROM audit_log WHERE camera_id = $1::uuid ORDER BY id",
        created["id"],
    )
    assert [r["action"] for r in rows] == ["camera.create", "camera.update", "camera.delete"]
    assert rows[1]["before"]["name"] != rows[1]["after"]["name"] == "新名称"
    assert all(r["actor"].startswith("token:technician") for r in rows)
    dumped = str([dict(r) for r in rows])
    assert "pw-in-audit?" not in dumped
    for r in rows:
        for image in (r["before"], r["after"]):
            assert not {"credentials", "credentials_mac", "password"} & set(image or {})
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("UPDATE audit_log SET actor = 'x'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pool.execute("DELETE FROM audit_log")


async def test_admins_read_the_audit_trail_filtered_paged_and_as_csv(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    created = await (
        await client.post("/api/v1/cameras", json=camera(gb_id="14010500001320000701"), headers=h)
    ).json()
    url = f"/api/v1/cameras/{created['id']}"
    for v in (1, 2):
        await client.patch(url, json={"azimuth": 10 * v}, headers={**h, "If-Match": f'"{v}"'})
    admin = await auth("admin")
    page = await (
        await client.get(f"/api/v1/audit?camera={created['id']}&limit=2", headers=admin)
    ).json()
    assert [r["action"] for r in page["items"]] == ["camera.update", "camera.update"]
    assert page["items"][0]["after"]["azimuth"] == 20
    rest = await (
        await client.get(
            f"/api/v1/audit?camera={created['id']}&cursor={page['next_cursor']}", headers=admin
        )
    ).json()
    assert [r["action"] for r in rest["items"]] == ["camera.create"]
    only = await (
        await client.get("/api/v1/audit?action=camera.create&limit=1000", headers=admin)
    ).json()
    assert {r["action"] for r in only["items"]} == {"camera.create"}
    resp = await client.get(f"/api/v1/audit?camera={created['id']}&format=csv", headers=admin)
    text = await resp.text()
    assert resp.content_type == "text/csv"
    assert text.lstrip("\ufeff").startswith("id,at,actor") and text.count("camera.update") == 2
    assert (await client.get("/api/v1/audit?from=yesterday", headers=admin)).status == 400
    assert (await client.get("/api/v1/audit", headers=h)).status == 403
