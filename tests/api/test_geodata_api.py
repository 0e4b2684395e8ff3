"""Geodata over HTTP: GeoJSON shapes, filters, simplification, caps and the token's scope."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.state import POOL
from camera_registry.demo.geodata import DemoGeodata, demo_geodata, load_demo_geodata

from ..conftest import Tok


@pytest.fixture(scope="module")
async def demo(client: TestClient) -> DemoGeodata:
    geo = demo_geodata(seed=3, villages=3000, prefer_real=False)
    await load_demo_geodata(client.app[POOL], geo, seed=3)
    return geo


async def get(client: TestClient, url: str, headers: dict[str, str]) -> Any:
    resp = await client.get(url, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type in ("application/geo+json", "application/json")
    return await resp.json(content_type=None)


async def test_regions_are_geojson_with_their_properties(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    fc = await get(client, "/api/v1/geodata/regions?rank=city", await auth("planner"))
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == 11
    f = fc["features"][0]
    assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert set(f["properties"]) == {"adcode", "name", "rank", "parent", "area_km2"}
    assert f["properties"] | {"area_km2": 0} == {
        "adcode": "140100", "name": "太原市", "rank": "city", "parent": "140000", "area_km2": 0
    }  # fmt: skip
    kids = await get(client, "/api/v1/geodata/regions?parent=140100", await auth("planner"))
    assert {x["properties"]["adcode"][:4] for x in kids["features"]} == {"1401"}
    assert len(kids["features"]) == 10


async def test_simplify_makes_boundaries_smaller(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    h = await auth("commander")
    full = await client.get("/api/v1/geodata/regions?rank=province", headers=h)
    small = await client.get("/api/v1/geodata/regions?rank=province&simplify=5000", headers=h)
    assert len(await small.read()) < len(await full.read())


async def test_a_scoped_token_sees_only_its_regions_villages_and_junctions(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    taiyuan = await auth("planner", "1401")
    regions = await get(client, "/api/v1/geodata/regions", taiyuan)
    assert {f["properties"]["adcode"][:4] for f in regions["features"]} == {"1401"}
    asked_wider = await get(client, "/api/v1/geodata/villages?region=14&limit=50000", taiyuan)
    codes = {f["properties"]["region_code"] for f in asked_wider["features"]}
    assert codes and all(c.startswith("1401") for c in codes)
    want = sum(1 for c in demo.villages.region_code if c.startswith("1401"))
    assert len(asked_wider["features"]) == want
    elsewhere = await get(client, "/api/v1/geodata/junctions?region=1402", taiyuan)
    assert elsewhere["features"] == []
    narrower = await get(client, "/api/v1/geodata/junctions?region=140105", taiyuan)
    assert {f["properties"]["region_code"] for f in narrower["features"]} == {"140105"}


async def test_points_are_capped_with_a_truncated_flag_and_filtered_by_bbox(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    h = await auth("technician")
    capped = await get(client, "/api/v1/geodata/villages?limit=10", h)
    assert (len(capped["features"]), capped["truncated"], capped["limit"]) == (10, True, 10)
    p = capped["features"][0]
    assert p["geometry"]["type"] == "Point"
    assert set(p["properties"]) == {"name", "region_code", "population"}
    every = await get(client, "/api/v1/geodata/junctions?limit=50000", h)
    assert every["truncated"] is False
    assert len(every["features"]) == len(demo.junctions)
    box = (112.4, 37.6, 112.7, 37.9)
    inside = await get(
        client, "/api/v1/geodata/villages?bbox=" + ",".join(map(str, box)) + "&limit=50000", h
    )
    assert inside["features"]
    for f in inside["features"]:
        x, y = f["geometry"]["coordinates"]
        assert box[0] <= x <= box[2] and box[1] <= y <= box[3]


async def test_datasets_list_the_demo_loads(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    body = await get(client, "/api/v1/geodata/datasets", await auth("planner", "1401"))
    got = {(d["kind"], d["source"]): d["features"] for d in body["items"]}
    assert got[("villages", "demo")] == 3000
    assert got[("regions", "demo")] == 129


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/geodata/regions?rank=town", "rank"),
        ("/api/v1/geodata/regions?parent=1401", "parent"),
        ("/api/v1/geodata/regions?simplify=-1", "simplify"),
        ("/api/v1/geodata/regions?simplify=a", "simplify"),
        ("/api/v1/geodata/villages?bbox=113,38,112,37", "bbox"),
        ("/api/v1/geodata/villages?limit=0", "limit"),
        ("/api/v1/geodata/junctions?region=14x", "region"),
    ],
)
async def test_bad_parameters_are_problems_naming_the_field(
    client: TestClient, auth: Tok, url: str, field: str
) -> None:
    resp = await client.get(url, headers=await auth("planner"))
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_the_county_under_a_point_is_found_for_registering_by_map_click(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    """The web map fills 区域代码 from the county boundary under the technician's click."""
    h = await auth("technician")
    body = await get(client, "/api/v1/geodata/regions/at?lon=112.56&lat=37.81", h)
    assert body["region"]["rank"] == "county"  # the finest boundary, not 太原市 or the province
    code = body["region"]["adcode"]
    assert code.startswith("1401") and body["region"]["parent"] == "140100"
    counties = await get(client, f"/api/v1/geodata/regions?rank=county&region={code}", h)
    assert [f["properties"]["name"] for f in counties["features"]] == [body["region"]["name"]]


async def test_a_point_outside_every_boundary_or_the_scope_has_no_region(
    client: TestClient, auth: Tok, demo: DemoGeodata
) -> None:
    outside = await get(client, "/api/v1/geodata/regions/at?lon=100.0&lat=30.0", await auth())
    assert outside["region"] is None
    datong = "/api/v1/geodata/regions/at?lon=113.30&lat=40.08"  # 大同 is outside 太原's scope
    assert (await get(client, datong, await auth()))["region"]["adcode"].startswith("1402")
    assert (await get(client, datong, await auth("technician", "1401")))["region"] is None


async def test_region_at_names_the_bad_coordinate(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    for query, field in (("lat=37", "lon"), ("lon=112&lat=95", "lat"), ("lon=x&lat=1", "lon")):
        resp = await client.get(f"/api/v1/geodata/regions/at?{query}", headers=h)
        assert resp.status == 400, query
        assert [e["field"] for e in (await resp.json())["errors"]] == [field], query
