"""The coverage API as the web map uses it: start a run, follow it, read gaps (with filters),
summary (JSON and CSV) and proposals; reuse, roles, scope and bad input as problem+json."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import POOL, TOKENS
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings

from ..camera_registry.coverage_fixtures import build_world, lonlat
from ..conftest import Tok

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def world(client: TestClient) -> None:
    async with client.app[POOL].acquire() as conn:
        await build_world(conn)


async def _finished(client: TestClient, h: dict[str, str], url: str) -> dict[str, Any]:
    for _ in range(600):  # bounded wait: 60 s
        resp = await client.get(url, headers=h)
        assert resp.status == 200, await resp.text()
        run = await resp.json()
        if run["status"] in ("done", "failed"):
            return run
        assert 0 <= run["progress"] <= 1
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {url} did not finish")


@pytest.fixture(scope="module")
async def run(client: TestClient, auth: Tok, world: None) -> dict[str, Any]:
    h = await auth("technician", "1401")
    resp = await client.post(
        "/api/v1/coverage/runs", json={"region": "1401", "proposals": 3}, headers=h
    )
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued" and body["reused"] is False
    assert resp.headers["Location"] == f"/api/v1/coverage/runs/{body['id']}"
    return await _finished(client, h, resp.headers["Location"])


async def test_a_started_run_finishes_with_its_summary(run: dict[str, Any]) -> None:
    assert run["status"] == "done", run
    assert run["progress"] == 1
    s = run["summary"]
    assert (s["cells"], s["cells_covered"], s["villages_covered"], s["junctions_covered"]) == (
        400,
        7,
        1,
        2,
    )
    assert s["cameras_assumed"] == 1


async def test_asking_again_unchanged_answers_200_with_the_same_run(
    client: TestClient, auth: Tok, run: dict[str, Any]
) -> None:
    resp = await client.post(
        "/api/v1/coverage/runs",
        json={"region": "1401", "proposals": 3},
        headers=await auth("admin"),
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["reused"] is True and body["id"] == run["id"] and body["status"] == "done"


async def test_gaps_are_geojson_filtered_by_kind_priority_and_bbox(
    client: TestClient, auth: Tok, run: dict[str, Any]
) -> None:
    h = await auth("planner", "1401")
    url = f"/api/v1/coverage/runs/{run['id']}/gaps"
    resp = await client.get(url, headers=h)
    assert resp.status == 200
    assert resp.content_type == "application/geo+json"
    fc = await resp.json(content_type=None)
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == 4
    props = fc["features"][0]["properties"]
    assert set(props) == {"kind", "priority", "area_m2", "name", "region_code"}
    assert props["kind"] == "cell"  # 393 cells (3930) outrank a village (100), a junction (50)

    villages = await (await client.get(url, params={"kind": "village"}, headers=h)).json(
        content_type=None
    )
    assert sorted(f["properties"]["name"] for f in villages["features"]) == ["far", "outside 151 m"]
    important = await (await client.get(url, params={"min_priority": "80"}, headers=h)).json(
        content_type=None
    )
    assert {f["properties"]["kind"] for f in important["features"]} == {"cell", "village"}
    lon, lat = lonlat(900.0, 900.0)  # only the far village and the big cell patch are here
    box = f"{lon - 0.0001},{lat - 0.0001},{lon + 0.0001},{lat + 0.0001}"
    near = await (await client.get(url, params={"bbox": box}, headers=h)).json(content_type=None)
    assert sorted(f["properties"]["name"] or "" for f in near["features"]) == ["", "far"]

    bad = await client.get(url, params={"kind": "river"}, headers=h)
    assert bad.status == 400 and bad.content_type == PROBLEM
    assert (await bad.json())["errors"][0]["field"] == "kind"
    bad = await client.get(url, params={"min_priority": "high"}, headers=h)
    assert (await bad.json())["errors"][0]["field"] == "min_priority"
    bad = await client.get(url, params={"bbox": "1,2,3"}, headers=h)
    assert (await bad.json())["errors"][0]["field"] == "bbox"


async def test_summary_is_json_or_csv(client: TestClient, auth: Tok, run: dict[str, Any]) -> None:
    h = await auth("planner")
    url = f"/api/v1/coverage/runs/{run['id']}/summary"
    body = await (await client.get(url, headers=h)).json()
    (row,) = body["items"]
    for key in (
        "region_code", "name", "zone", "cells", "cells_covered", "covered_share", "villages",
        "villages_covered", "junctions", "junctions_covered", "cameras", "cameras_per_km2",
    ):  # fmt: skip
        assert key in row, key
    assert (row["region_code"], row["zone"], row["cells_covered"]) == ("140105", "urban", 7)
    resp = await client.get(url, params={"format": "csv"}, headers=h)
    assert resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert rows[0]["region_code"] == "140105" and rows[0]["cells"] == "400"


async def test_proposals_are_ranked_geojson_points(
    client: TestClient, auth: Tok, run: dict[str, Any]
) -> None:
    url = f"/api/v1/coverage/runs/{run['id']}/proposals"
    fc = await (await client.get(url, headers=await auth("commander"))).json(content_type=None)
    feats = fc["features"]
    assert [f["properties"]["rank"] for f in feats] == [1, 2, 3]
    assert all(f["geometry"]["type"] == "Point" for f in feats)
    shares = [f["properties"]["covered_share_after"] for f in feats]
    assert shares == sorted(shares) and all(f["properties"]["newly_covered"] > 0 for f in feats)


async def test_scope_and_roles(client: TestClient, auth: Tok, run: dict[str, Any]) -> None:
    taiyuan = await auth("technician", "1401")
    resp = await client.post("/api/v1/coverage/runs", json={"region": "1402"}, headers=taiyuan)
    assert resp.status == 403 and resp.content_type == PROBLEM
    assert (await resp.json())["errors"][0]["field"] == "region"
    commander = await auth("commander", "1401")
    resp = await client.post("/api/v1/coverage/runs", json={"region": "1401"}, headers=commander)
    assert resp.status == 403  # commanders read coverage; planners and technicians run it
    planner = await auth("planner", "1401")
    resp = await client.post("/api/v1/coverage/runs", json={"region": "1401"}, headers=planner)
    assert resp.status in (200, 202), await resp.text()
    datong = await auth("planner", "1402")
    resp = await client.get(f"/api/v1/coverage/runs/{run['id']}", headers=datong)
    assert resp.status == 404
    resp = await client.get(f"/api/v1/coverage/runs/{run['id']}/gaps", headers=datong)
    assert resp.status == 404


async def test_bad_policy_and_empty_region_are_problems_naming_the_field(
    client: TestClient, auth: Tok, world: None
) -> None:
    h = await auth("admin")
    resp = await client.post(
        "/api/v1/coverage/runs",
        json={"region": "1401", "policy": {"urban": {"cell_size_m": 50}, "weights": {"vilage": 3}}},
        headers=h,
    )
    assert resp.status == 422 and resp.content_type == PROBLEM
    assert [e["field"] for e in (await resp.json())["errors"]] == ["policy.weights.vilage"]
    resp = await client.post("/api/v1/coverage/runs", json={"region": "1409"}, headers=h)
    assert resp.status == 422
    body = await resp.json()
    assert body["errors"][0]["field"] == "region" and "1409" in body["detail"]
    resp = await client.post("/api/v1/coverage/runs", json={"region": "14x"}, headers=h)
    assert resp.status == 400
    resp = await client.post("/api/v1/coverage/runs", json={"region": "14", "k": 3}, headers=h)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "k"


async def test_a_run_interrupted_by_shutdown_is_marked_failed(
    settings: Settings, database_url: str, schema: str, world: None, client: TestClient
) -> None:
    app = create_app(settings, Database(dsn=database_url, schema=schema))
    async with TestClient(TestServer(app)) as other:
        _, secret = await other.app[TOKENS].create(
            Actor("test", Role.ADMIN), role=Role.ADMIN, name="shutdown"
        )
        h = {"Authorization": f"Bearer {secret}"}
        # A different K: not the finished run of this module, so a new run is queued.
        resp = await other.post(
            "/api/v1/coverage/runs", json={"region": "1401", "proposals": 7}, headers=h
        )
        assert resp.status == 202
        run_id = (await resp.json())["id"]
    # The server stopped (its worker processes had not even started): the run is failed.
    row = await client.app[POOL].fetchrow(
        "SELECT status, error FROM coverage_runs WHERE id = $1::uuid", run_id
    )
    assert row["status"] == "failed"
    assert "interrupted" in row["error"]
