"""The map endpoint: grid clusters at low zoom, points at street zoom, the grid kept exact by
the triggers, region scope applied, bad parameters named."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.demo.bootstrap import load_demo

from ..conftest import Tok, camera

TAIYUAN = "111.0,36.0,114.0,39.0"
SHANXI = "110.0,34.0,115.0,41.0"


async def _grid_matches_cameras(pool: asyncpg.Pool) -> None:
    for tier, size in ((0, 0.005), (1, 0.02), (2, 0.1), (3, 0.5)):
        grid = await pool.fetch(
            """SELECT cx, cy, region_code, level, status, n, round(sum_lon::numeric, 6) AS sx
                 FROM map_grid WHERE tier = $1 ORDER BY 1, 2, 3, 4, 5""",
            tier,
        )
        want = await pool.fetch(
            """SELECT floor(lon / $1)::int AS cx, floor(lat / $1)::int AS cy, region_code,
                      level, status, count(*)::int AS n, round(sum(lon)::numeric, 6) AS sx
                 FROM cameras WHERE lon IS NOT NULL
                GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5""",
            size,
        )
        assert [tuple(r) for r in grid] == [tuple(r) for r in want], f"tier {tier}"


async def _post(client: TestClient, h: dict[str, str], **over: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/cameras", json=camera(**over), headers=h)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_grid_stays_exact_through_insert_update_move_and_delete(
    client: TestClient, auth: Tok
) -> None:
    admin = await auth("admin")
    pool = client.app[POOL]
    made = [
        await _post(
            client,
            admin,
            gb_id=f"14010500001320{i:06d}",
            lon=112.55 + i * 0.003,
            lat=37.80 + i * 0.002,
            level=1 + (i % 2),
            record_days=90,
        )
        for i in range(1, 9)
    ]
    await _post(client, admin, gb_id="14021100001320000001", lon=113.30, lat=40.08)
    await _grid_matches_cameras(pool)
    await pool.execute("UPDATE cameras SET status = 'online' WHERE gb_id LIKE '140105%'")
    await pool.execute("UPDATE cameras SET status = 'flapping' WHERE id = $1", made[0]["id"])
    await _grid_matches_cameras(pool)
    resp = await client.patch(
        f"/api/v1/cameras/{made[1]['id']}",
        json={"lon": 112.70, "lat": 37.90},
        headers={**admin, "If-Match": f'"{made[1]["version"]}"'},
    )
    assert resp.status == 200, await resp.text()
    await pool.execute("UPDATE cameras SET name = name || ' ' WHERE id = $1", made[2]["id"])
    await _grid_matches_cameras(pool)
    resp = await client.delete(f"/api/v1/cameras/{made[3]['id']}", headers=admin)
    assert resp.status == 204
    await _grid_matches_cameras(pool)
    assert await pool.fetchval("SELECT count(*) FROM map_grid WHERE n <= 0") == 0


async def test_low_zoom_returns_clusters_with_counts_by_status_and_level(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("planner")
    resp = await client.get(f"/api/v1/map/cameras?bbox={SHANXI}&zoom=6", headers=h)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["mode"] == "clusters"
    total = await client.app[POOL].fetchval("SELECT count(*) FROM cameras")
    assert body["total"] == total == sum(c["count"] for c in body["items"])
    for c in body["items"]:
        assert sum(c["status"].values()) == c["count"] == sum(c["level"].values())
        x0, y0, x1, y1 = c["cell"]
        assert x0 <= c["lon"] <= x1 and y0 <= c["lat"] <= y1
    flapping = sum(c["status"]["flapping"] for c in body["items"])
    assert flapping == 1
    online = await client.get(
        f"/api/v1/map/cameras?bbox={SHANXI}&zoom=6&status=online&level=1", headers=h
    )
    want = await client.app[POOL].fetchval(
        "SELECT count(*) FROM cameras WHERE status = 'online' AND level = 1"
    )
    assert (await online.json())["total"] == want


async def test_street_zoom_returns_points_with_status_and_level(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    resp = await client.get("/api/v1/map/cameras?bbox=112.5,37.7,112.8,38.0&zoom=16", headers=h)
    body = await resp.json()
    assert body["mode"] == "points"
    assert body["items"] and body["total"] == len(body["items"])
    p = body["items"][0]
    assert {"id", "lon", "lat", "level", "status", "name", "gb_id"} <= set(p)


async def test_out_of_scope_cameras_are_neither_counted_nor_shown(
    client: TestClient, auth: Tok
) -> None:
    taiyuan = await auth("commander", "1401")
    everyone = await auth("commander")
    for zoom in (6, 16):
        bbox = SHANXI if zoom == 6 else "113.2,40.0,113.4,40.2"
        scoped = await (
            await client.get(f"/api/v1/map/cameras?bbox={bbox}&zoom={zoom}", headers=taiyuan)
        ).json()
        full = await (
            await client.get(f"/api/v1/map/cameras?bbox={bbox}&zoom={zoom}", headers=everyone)
        ).json()
        assert scoped["total"] == full["total"] - 1  # the 大同 camera
    datong = await (
        await client.get(
            "/api/v1/map/cameras?bbox=113.2,40.0,113.4,40.2&zoom=16&region=1402", headers=taiyuan
        )
    ).json()
    assert datong["items"] == []


async def test_bad_parameters_are_400_problems_naming_the_field(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("planner")
    for query, field in (
        ("zoom=5", "bbox"),
        (f"bbox={SHANXI}", "zoom"),
        ("bbox=1,2,3&zoom=5", "bbox"),
        ("bbox=115,34,110,41&zoom=5", "bbox"),
        (f"bbox={SHANXI}&zoom=40", "zoom"),
        (f"bbox={SHANXI}&zoom=x", "zoom"),
        (f"bbox={SHANXI}&zoom=5&status=sleeping", "status"),
        (f"bbox={SHANXI}&zoom=5&level=4", "level"),
        (f"bbox={SHANXI}&zoom=5&region=14a", "region"),
    ):
        resp = await client.get(f"/api/v1/map/cameras?{query}", headers=h)
        assert resp.status == 400, query
        assert resp.content_type == "application/problem+json"
        assert [e["field"] for e in (await resp.json())["errors"]] == [field], query


async def test_map_config_says_what_the_token_may_do(client: TestClient, auth: Tok) -> None:
    body = await (
        await client.get("/api/v1/map/config", headers=await auth("technician", "1401"))
    ).json()
    assert body["role"] == "technician" and body["scope"] == "1401"
    assert body["can"]["edit"] and not body["can"]["stream"]
    assert body["tiles"] == {
        "url": None,
        "crs": "wgs84",
        "attribution": "",
        "subdomains": "abc",
    }


async def test_grid_stays_exact_through_a_bulk_import(client: TestClient) -> None:
    """The bulk loader (COPY into a stage, then set-based merge) fires the same triggers."""
    pool = client.app[POOL]
    before = await pool.fetchval("SELECT count(*) FROM cameras")
    result = await load_demo(pool, client.app[BOX], 300, seed=7)
    assert result.inserted > 0
    assert await pool.fetchval("SELECT count(*) FROM cameras") == before + result.inserted
    await _grid_matches_cameras(pool)


async def test_map_config_offers_coverage_runs_only_to_roles_that_may_start_them(
    client: TestClient, auth: Tok
) -> None:
    """A commander reads coverage results but may not start a run: the page hides the button."""
    for role, may in (("commander", False), ("planner", True), ("technician", True),
                      ("admin", True)):  # fmt: skip
        body = await (await client.get("/api/v1/map/config", headers=await auth(role))).json()
        assert body["can"]["plan"] is True
        assert body["can"]["run_coverage"] is may, role
        assert body["record_days_level1"] == 90  # proposed for a new 一类 camera
