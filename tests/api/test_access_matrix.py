"""Every route of the OpenAPI spec, with every role, against an in-scope and an out-of-scope
camera: the status must match the matrix below. A route added without a row here fails."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from ..conftest import Tok, camera

ROLES = ("technician", "planner", "commander", "admin")
SCOPE = "1401"  # 太原市: the tokens' scope
IN, OUT = "14010500001325900001", "14021100001325900002"  # 太原 / 大同
# (method, path) -> {role: (status in scope, status out of scope)}; "*" = every role.
W = ("technician", "admin")  # the roles that may write cameras and import


def every(inn: int, out: int) -> dict[str, tuple[int, int]]:
    return {r: (inn, out) for r in ROLES}


def writers(inn: int, out: int, others: int = 403) -> dict[str, tuple[int, int]]:
    return {r: ((inn, out) if r in W else (others, others)) for r in ROLES}


def streamers(inn: int, out: int) -> dict[str, tuple[int, int]]:
    return {r: ((inn, out) if r in ("commander", "admin") else (403, 403)) for r in ROLES}


def admins(status: int) -> dict[str, tuple[int, int]]:
    return {r: ((status, status) if r == "admin" else (403, 403)) for r in ROLES}


MATRIX: dict[tuple[str, str], dict[str, tuple[int, int]]] = {
    ("GET", "/"): every(200, 200),
    ("GET", "/healthz"): every(200, 200),
    ("GET", "/metrics"): every(200, 200),
    ("GET", "/api/v1/openapi.json"): every(200, 200),
    ("GET", "/api/v1/cameras"): every(200, 200),
    ("POST", "/api/v1/cameras"): writers(201, 403),
    ("GET", "/api/v1/cameras/export"): every(200, 200),
    ("GET", "/api/v1/cameras/{id}"): every(200, 404),
    ("PATCH", "/api/v1/cameras/{id}"): writers(200, 404),
    ("DELETE", "/api/v1/cameras/{id}"): writers(204, 404),
    ("GET", "/api/v1/regions/{code}/summary"): every(200, 403),
    ("POST", "/api/v1/tokens"): admins(201),
    ("GET", "/api/v1/tokens"): admins(200),
    ("DELETE", "/api/v1/tokens/{id}"): admins(204),
    ("GET", "/api/v1/audit"): admins(200),
    ("GET", "/api/v1/cameras/{id}/health"): every(200, 404),
    ("GET", "/api/v1/cameras/{id}/snapshot"): every(404, 404),  # none taken in this test
    ("POST", "/api/v1/cameras/{id}/probe"): {
        r: ((403, 403) if r == "planner" else (200, 404)) for r in ROLES
    },
    # No capture processes in this app (health off): in scope the answer says so (503).
    ("POST", "/api/v1/cameras/{id}/diagnose"): {
        r: ((403, 403) if r == "planner" else (503, 404)) for r in ROLES
    },
    ("GET", "/api/v1/kpis"): every(200, 200),
    ("GET", "/api/v1/cameras/{id}/availability"): every(200, 404),
    ("GET", "/api/v1/events"): every(200, 200),
    ("GET", "/api/v1/discovery/devices"): writers(200, 200),
    ("POST", "/api/v1/discovery/devices/{id}/register"): writers(404, 404),  # none found here
    ("POST", "/api/v1/discovery/devices/{id}/ignore"): writers(404, 404),
    ("POST", "/api/v1/discovery/scans"): writers(202, 202),  # a token's scope is recorded
    ("GET", "/api/v1/discovery/scans/{id}"): writers(200, 404),  # out: another region's scan
    ("GET", "/api/v1/cameras/{id}/stream"): streamers(200, 404),
    ("POST", "/api/v1/streams"): streamers(200, 200),
    ("POST", "/api/v1/hooks/zlm/on_play"): every(401, 401),  # players are not relays
    ("POST", "/api/v1/hooks/mediamtx/auth"): every(401, 401),
    ("POST", "/api/v1/hooks/zlm/on_stream_none_reader"): every(401, 401),
    ("GET", "/api/v1/relay/{stream_key}/source"): every(401, 401),
    ("POST", "/api/v1/imports"): writers(202, 202),
    ("GET", "/api/v1/imports/{id}"): writers(200, 200),
    ("GET", "/api/v1/imports/{id}/errors"): writers(200, 200),
    # No boundaries are loaded here: an in-scope run is refused as empty (422), out of scope 403.
    ("POST", "/api/v1/coverage/runs"): {
        r: ((422, 403) if r != "commander" else (403, 403)) for r in ROLES
    },
    ("GET", "/api/v1/coverage/runs/{id}"): every(404, 404),  # scope: tests/api/test_coverage_api
    ("GET", "/api/v1/coverage/runs/{id}/gaps"): every(404, 404),
    ("GET", "/api/v1/coverage/runs/{id}/summary"): every(404, 404),
    ("GET", "/api/v1/coverage/runs/{id}/proposals"): every(404, 404),
    ("GET", "/api/v1/geodata/regions"): every(200, 200),  # scope filters rows
    ("GET", "/api/v1/geodata/regions/at"): every(200, 200),  # scope: region null outside
    ("GET", "/api/v1/geodata/villages"): every(200, 200),
    ("GET", "/api/v1/geodata/junctions"): every(200, 200),
    ("GET", "/api/v1/geodata/datasets"): every(200, 200),
    ("GET", "/api/v1/map/cameras"): every(200, 200),
    ("GET", "/api/v1/map/config"): every(200, 200),
    ("GET", "/static/{name}"): every(200, 200),
    ("GET", "/api/v1/gb28181/server"): every(200, 200),
    ("GET", "/api/v1/gb28181/devices"): every(200, 200),  # scope filters rows
    ("GET", "/api/v1/gb28181/devices/{id}"): every(404, 404),  # none registered here
    ("POST", "/api/v1/gb28181/devices/{id}/catalog"): writers(404, 404),
    ("PUT", "/api/v1/gb28181/devices/{id}/password"): {
        r: ((204, 404) if r == "admin" else (403, 403)) for r in ROLES
    },
    # upper platforms see whole regions: only an unscoped admin (none here) manages them
    ("GET", "/api/v1/gb28181/upstreams"): every(403, 403),
    ("POST", "/api/v1/gb28181/upstreams"): every(403, 403),
    ("GET", "/api/v1/gb28181/upstreams/{id}"): every(403, 403),
    ("PATCH", "/api/v1/gb28181/upstreams/{id}"): every(403, 403),
    ("DELETE", "/api/v1/gb28181/upstreams/{id}"): every(403, 403),
}


async def test_every_route_is_in_the_matrix(client: TestClient) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == set(MATRIX), "add new routes to MATRIX with their expected statuses"


SERIALS = itertools.count(1000)  # a fresh GB ID serial per camera made here


async def _fresh_camera(client: TestClient, admin: dict[str, str], gb_id: str, serial: int) -> str:
    gb = gb_id[:-6] + f"{serial:06d}"
    lon, lat = (112.56, 37.81) if gb.startswith("1401") else (113.30, 40.08)
    # A closed loopback port: the probe-now route must not send traffic off this machine.
    body = camera(gb_id=gb, lon=lon, lat=lat, streams={"main": "rtsp://127.0.0.1:9/h264"})
    resp = await client.post("/api/v1/cameras", json=body, headers=admin)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("where", ["in", "out"])
@pytest.mark.parametrize(("method", "path"), sorted(MATRIX))
async def test_route_role_scope_matrix(
    client: TestClient, auth: Tok, role: str, where: str, method: str, path: str
) -> None:
    admin = await auth("admin")
    h = await auth(role, SCOPE)
    gb = IN if where == "in" else OUT
    serial = next(SERIALS)
    url = path
    kw: dict[str, Any] = {}
    if path == "/api/v1/discovery/devices/{id}/register":
        url = path.replace("{id}", "00000000-0000-0000-0000-000000000000")
        kw["json"] = camera(gb_id=gb[:-6] + f"{serial:06d}")
    if path == "/api/v1/discovery/devices/{id}/ignore":
        url = path.replace("{id}", "00000000-0000-0000-0000-000000000000")
    if path.startswith("/api/v1/discovery/scans"):
        # A closed loopback address and port: the scan must not send traffic off this machine.
        scan_body = {"cidrs": ["127.0.0.1/32"], "timeout": 0.1}
        kw["json"] = scan_body
        if "{id}" in path:
            kw.pop("json")
            owner = await auth("technician", SCOPE if where == "in" else "1402")
            made = await client.post("/api/v1/discovery/scans", json=scan_body, headers=owner)
            url = path.replace("{id}", (await made.json())["id"])
    if "{id}" in path and "cameras" in path:
        url = path.replace("{id}", await _fresh_camera(client, admin, gb, serial))
    if "{code}" in path:
        url = path.replace("{code}", gb[:4])
    if path == "/api/v1/tokens/{id}":
        made = await (
            await client.post(
                "/api/v1/tokens",
                json={"role": "planner", "name": "x", "region": "1401"},
                headers=admin,
            )
        ).json()
        url = path.replace("{id}", made["id"])
    if path.startswith("/api/v1/imports/{id}"):
        form = FormData()
        form.add_field("file", "点位名称,经度,纬度\n", filename="x.csv")
        job = await client.post(
            "/api/v1/imports", data=form, headers=await auth("technician", SCOPE)
        )
        url = path.replace("{id}", (await job.json())["id"])
    if method == "POST" and path == "/api/v1/cameras":
        kw["json"] = camera(
            gb_id=gb[:-6] + f"{serial:06d}",
            **({"lon": 113.30, "lat": 40.08} if where == "out" else {}),
        )
    if method == "PATCH":
        kw["json"] = {"azimuth": 10}
        h = {**h, "If-Match": '"1"'}
    if path.endswith("/availability"):
        url += "?from=2026-11-01&to=2026-11-02"
    if path.startswith("/api/v1/gb28181/devices/{id}"):
        url = path.replace("{id}", gb)
        if method == "PUT":
            kw["json"] = {"password": "matrix-pw"}
    if path.startswith("/api/v1/gb28181/upstreams/{id}"):
        url = path.replace("{id}", "00000000-0000-0000-0000-000000000000")
    if path == "/static/{name}":
        url = "/static/app.js"
    if path == "/api/v1/map/cameras":
        url = path + "?bbox=110,34,115,41&zoom=6"
    if path == "/api/v1/geodata/regions/at":
        url = path + "?lon=112.56&lat=37.81"
    if path == "/api/v1/relay/{stream_key}/source":
        url = path.replace("{stream_key}", gb + "_main")
    if method == "POST" and path == "/api/v1/streams":
        kw["json"] = {"camera_ids": [await _fresh_camera(client, admin, gb, next(SERIALS))]}
    if method == "POST" and "/hooks/" in path:
        kw["json"] = {"stream": gb + "_main", "params": "sign=x", "action": "read"}
    if method == "POST" and path == "/api/v1/tokens":
        kw["json"] = {"role": "planner", "name": "matrix", "region": "1401"}
    if method == "POST" and path == "/api/v1/imports":
        form = FormData()
        form.add_field("file", "点位名称,经度,纬度\n", filename="m.csv")
        kw["data"] = form
    if path.startswith("/api/v1/coverage/runs/{id}"):
        url = path.replace("{id}", "00000000-0000-0000-0000-000000000000")
    if method == "POST" and path == "/api/v1/coverage/runs":
        kw["json"] = {"region": gb[:4], "proposals": 0}
    if path == "/api/v1/events":  # a stream: check the status, then hang up
        async with client.get(url, headers=h) as stream:
            assert stream.status == MATRIX[(method, path)][role][0]
        return
    resp = await client.request(method, url, headers=h, **kw)
    want = MATRIX[(method, path)][role][0 if where == "in" else 1]
    assert resp.status == want, f"{role} {method} {url}: {await resp.text()}"
    if resp.status >= 400:
        assert resp.content_type == "application/problem+json"
