"""Listing, filters, nearest, pagination, summaries, region scope and roles."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from aiohttp.test_utils import TestClient

from camera_registry.actor import Actor, Role
from geo.crs import haversine_m

from ..conftest import Tok, camera

# A small grid of cameras in three districts of two cities.
SPOTS = [
    ("140105", 112.56, 37.80),
    ("140105", 112.57, 37.81),
    ("140105", 112.58, 37.82),
    ("140106", 112.59, 37.85),
    ("140106", 112.60, 37.86),
    ("140211", 113.30, 40.08),
    ("140211", 113.31, 40.09),
]


async def _seed(client: TestClient, auth: Tok) -> list[dict[str, Any]]:
    h = await auth("technician")
    out = []
    for i, (region, lon, lat) in enumerate(SPOTS):
        body = camera(
            gb_id=f"{region}0000132{i % 2 * 5}{i:06d}",
            lon=lon,
            lat=lat,
            level=1 if i % 3 == 0 else 2,
            record_days=30,
            name=f"测试点位{i}",
        )
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        out.append(await resp.json())
    return out


async def test_filters_pagination_nearest_and_summary(client: TestClient, auth: Tok) -> None:
    cams = await _seed(client, auth)
    h = await auth("planner")

    async def ids(query: str) -> set[str]:
        resp = await client.get(f"/api/v1/cameras?{query}", headers=h)
        assert resp.status == 200, await resp.text()
        return {c["id"] for c in (await resp.json())["items"]}

    by_region = {c["id"] for c in cams if c["region_code"].startswith("1401")}
    assert await ids("region=1401") == by_region
    assert await ids("region=140106") == {c["id"] for c in cams if c["region_code"] == "140106"}
    assert await ids("level=1") == {c["id"] for c in cams if c["level"] == 1}
    assert await ids("status=unknown") == {c["id"] for c in cams}
    assert await ids("status=online") == set()
    assert await ids("bbox=112.565,37.805,112.595,37.855") == {
        cams[1]["id"],
        cams[2]["id"],
        cams[3]["id"],
    }
    assert await ids("q=测试点位3") == {cams[3]["id"]}
    assert await ids(f"q={cams[5]['gb_id'][:10]}") >= {cams[5]["id"]}

    # Walk the whole list two at a time: every camera exactly once.
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/cameras?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=h)).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(c["id"] for c in cams) and len(seen) == len(set(seen))

    # Nearest by metres, not degrees: ordering matches great-circle distance.
    near = await (await client.get("/api/v1/cameras?near=112.575,37.815&k=3", headers=h)).json()
    got = [c["id"] for c in near["items"]]
    d = haversine_m(112.575, 37.815, [c["lon"] for c in cams], [c["lat"] for c in cams])
    want = [cams[i]["id"] for i in sorted(range(len(cams)), key=lambda i: d[i])[:3]]
    assert got == want
    assert math.isclose(near["items"][0]["distance_m"], float(min(d)), abs_tol=0.01)

    summary = await (await client.get("/api/v1/regions/1401/summary", headers=h)).json()
    assert summary["total"] == len(by_region)
    assert summary["by_status"]["unknown"] == len(by_region)
    assert sum(summary["by_level"].values()) == len(by_region)


async def test_bad_query_parameters_are_400s_naming_them(client: TestClient, auth: Tok) -> None:
    h = await auth("planner")
    for query, field in [
        ("bbox=1,2,3", "bbox"),
        ("bbox=113,38,112,37", "bbox"),
        ("level=7", "level"),
        ("status=broken", "status"),
        ("region=14x", "region"),
        ("limit=0", "limit"),
        ("cursor=%%%", "cursor"),
        ("near=1", "near"),
    ]:
        resp = await client.get(f"/api/v1/cameras?{query}", headers=h)
        assert resp.status == 400, (query, await resp.text())
        assert (await resp.json(content_type=None))["errors"][0]["field"] == field


async def test_region_scope_hides_and_refuses(client: TestClient, auth: Tok) -> None:
    admin = await auth("admin")
    datong = await (
        await client.post(
            "/api/v1/cameras",
            json=camera(gb_id="14021100001320009001", lon=113.3, lat=40.1),
            headers=admin,
        )
    ).json()
    taiyuan_tech = await auth("technician", "1401")
    # Out of scope: does not exist for a read, cannot be written.
    assert (await client.get(f"/api/v1/cameras/{datong['id']}", headers=taiyuan_tech)).status == 404
    resp = await client.patch(
        f"/api/v1/cameras/{datong['id']}",
        json={"name": "x"},
        headers={**taiyuan_tech, "If-Match": '"1"'},
    )
    assert resp.status == 404
    assert (
        await client.delete(f"/api/v1/cameras/{datong['id']}", headers=taiyuan_tech)
    ).status == 404
    resp = await client.post(
        "/api/v1/cameras",
        json=camera(gb_id="14021100001320009002", lon=113.3, lat=40.1),
        headers=taiyuan_tech,
    )
    assert resp.status == 403
    listed = await (await client.get("/api/v1/cameras?limit=1000", headers=taiyuan_tech)).json()
    assert listed["items"] and all(c["region_code"].startswith("1401") for c in listed["items"])
    wide = await (
        await client.get("/api/v1/cameras?region=14&limit=1000", headers=taiyuan_tech)
    ).json()
    assert {c["id"] for c in wide["items"]} == {c["id"] for c in listed["items"]}
    assert (await (await client.get("/api/v1/cameras?region=1402", headers=taiyuan_tech)).json())[
        "items"
    ] == []
    assert (await client.get("/api/v1/regions/1402/summary", headers=taiyuan_tech)).status == 403
    # Moving an in-scope camera out of scope is refused too.
    mine = await (
        await client.post(
            "/api/v1/cameras", json=camera(gb_id="14010500001320009003"), headers=taiyuan_tech
        )
    ).json()
    resp = await client.patch(
        f"/api/v1/cameras/{mine['id']}",
        json={"gb_id": "14021100001320009003"},
        headers={**taiyuan_tech, "If-Match": '"1"'},
    )
    assert resp.status == 403


async def test_roles(client: TestClient, auth: Tok) -> None:
    body = camera(gb_id="14010500001320009101")
    for role in ("planner", "commander"):
        h = await auth(role)
        assert (await client.post("/api/v1/cameras", json=body, headers=h)).status == 403
        assert (await client.get("/api/v1/cameras", headers=h)).status == 200
        assert (await client.get("/api/v1/tokens", headers=h)).status == 403
    assert (await client.get("/api/v1/tokens", headers=await auth("technician"))).status == 403
    resp = await client.get("/api/v1/cameras")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        await client.get("/api/v1/cameras", headers={"Authorization": "Bearer crt_nope"})
    ).status == 401


async def test_tokens_over_http_shown_once_stored_hashed_revoked_at_once(
    client: TestClient, auth: Tok
) -> None:
    admin = await auth("admin")
    resp = await client.post(
        "/api/v1/tokens",
        json={"role": "planner", "name": "规划科", "region": "1401"},
        headers=admin,
    )
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    secret = made["token"]
    listed = await (await client.get("/api/v1/tokens", headers=admin)).text()
    assert made["id"] in listed and secret not in listed
    from api.state import POOL

    stored = await client.app[POOL].fetchval(
        "SELECT secret_hash FROM api_tokens WHERE id = $1::uuid", made["id"]
    )
    assert secret.encode() not in bytes(stored)
    h = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/api/v1/cameras", headers=h)).status == 200
    assert (await client.delete(f"/api/v1/tokens/{made['id']}", headers=admin)).status == 204
    assert (await client.get("/api/v1/cameras", headers=h)).status == 401
    expired = await client.post(
        "/api/v1/tokens",
        json={"role": "planner", "name": "old", "expires_at": "2020-01-01T00:00:00Z"},
        headers=admin,
    )
    assert expired.status == 422  # a token born expired is never what was meant
    from api.state import TOKENS

    _, lapsed = await client.app[TOKENS].create(
        Actor("test", Role.ADMIN),
        role=Role.PLANNER,
        name="old",
        expires_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    old = {"Authorization": f"Bearer {lapsed}"}
    assert (await client.get("/api/v1/cameras", headers=old)).status == 401
    resp = await client.post("/api/v1/tokens", json={"role": "boss", "name": "x"}, headers=admin)
    assert resp.status == 422
    resp = await client.post(
        "/api/v1/tokens", json={"role": "planner", "name": "x", "region": "99"}, headers=admin
    )
    assert resp.status == 400


async def test_openapi_lists_exactly_the_routes(client: TestClient) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    served = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert documented == served


async def test_healthz_metrics_and_landing_page_need_no_token(client: TestClient) -> None:
    assert (await (await client.get("/healthz")).json())["status"] == "ok"
    page = await client.get("/")
    assert page.status == 200 and "摄像机台账" in await page.text()
    await client.get("/api/v1/cameras")
    text = await (await client.get("/metrics")).text()
    assert 'camreg_http_requests_total{method="GET",route="/api/v1/cameras",status="401"}' in text
    assert "camreg_db_pool_size" in text


async def test_unknown_route_is_a_problem(client: TestClient) -> None:
    resp = await client.get("/api/v1/nowhere", headers={"Authorization": "Bearer crt_x"})
    assert resp.status in (401, 404)
    assert resp.content_type == "application/problem+json"


async def test_token_rate_limit_answers_429_with_retry_after(client: TestClient, auth: Tok) -> None:
    admin = await auth("admin")
    made = await (
        await client.post(
            "/api/v1/tokens",
            json={"role": "planner", "name": "limited", "rate_limit_per_min": 3},
            headers=admin,
        )
    ).json()
    assert made["rate_limit_per_min"] == 3
    h = {"Authorization": f"Bearer {made['token']}"}
    statuses = [(await client.get("/api/v1/cameras?limit=1", headers=h)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = await client.get("/api/v1/cameras?limit=1", headers=h)
    assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 20
    assert (await client.get("/api/v1/cameras?limit=1", headers=admin)).status == 200


def test_token_bucket_refills_at_the_configured_rate() -> None:
    from api.ratelimit import RateLimiter

    lim = RateLimiter()
    assert [lim.take("t", 60, now=0.0) for _ in range(60)] == [0.0] * 60
    assert lim.take("t", 60, now=0.0) == 1.0
    assert lim.take("t", 60, now=1.0) == 0.0  # one per second comes back
