"""Reads whose JSON PostgreSQL builds answer exactly what the record-by-record path answers.

`Registry.get`, `page` and `nearest` (records → `camera_out`) are the reference; the API's
`GET /cameras/{id}`, `GET /cameras` (filters, bbox, pages) and `?near=` are served from JSON
built in SQL and must match them key for key and value for value, region scope included.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from aiohttp.test_utils import TestClient

from api.state import POOL, REGISTRY
from camera_registry.actor import Actor, Role
from camera_registry.store.cameras import CameraFilter, _json_value

from ..conftest import Tok, camera


async def _seed(client: TestClient, auth: Tok) -> list[dict[str, Any]]:
    h = await auth("admin")
    out = []
    specs: list[dict[str, Any]] = [
        # float32 noise, more than six significant digits, credentials, every optional field
        {
            "azimuth": 123.45678,
            "hfov": 62.0000038,
            "vfov": 34.1,
            "max_view_distance": 80.25,
            "mount_height": 4.5,
            "username": "admin",
            "password": "Pw-1234567",
            "ip": "10.1.2.3",
            "onvif_port": 8080,
            "installed_at": "2019-06-30",
            "record_days": 90,
            "vendor": "海康威视",
            "mac": "c0:56:e3:12:ba:f5",
            "streams": {"main": "rtsp://10.1.2.3:554/main", "sub": "rtsp://10.1.2.3:554/sub"},
        },
        {"azimuth": ..., "hfov": ..., "max_view_distance": ..., "name": 'quote " and \\ 反斜杠'},
        {"level": 3, "lon": ..., "lat": ..., "address": "line\nbreak\ttab"},
    ]
    for i in range(12):
        spec = specs[i % len(specs)]
        region = "140105" if i % 2 == 0 else "140211"
        lon = 112.56 + i * 0.003 if region == "140105" else 113.30 + i * 0.003
        lat = 37.81 + i * 0.002 if region == "140105" else 40.08 + i * 0.002
        body = camera(**{"gb_id": f"{region}00001325{i:06d}", "lon": lon, "lat": lat, **spec})
        resp = await client.post("/api/v1/cameras", json=body, headers=h)
        assert resp.status == 201, await resp.text()
        out.append(await resp.json())
    # one camera whose timestamps fall on a whole second (no fraction at all), one whose
    # fraction ends in zeros (.12, as PostgreSQL writes it, not .120000)
    await client.app[POOL].execute(
        "UPDATE cameras SET created_at = date_trunc('second', created_at) WHERE id = $1::uuid",
        out[0]["id"],
    )
    await client.app[POOL].execute(
        """UPDATE cameras SET updated_at = date_trunc('second', updated_at) + interval '0.12 s'
           WHERE id = $1::uuid""",
        out[1]["id"],
    )
    return out


async def test_camera_json_built_by_postgresql_matches_the_record_path_key_for_key(
    client: TestClient, auth: Tok
) -> None:
    cams = await _seed(client, auth)
    registry = client.app[REGISTRY]
    admin = Actor("t", Role.ADMIN)
    h = await auth("planner")
    for cam in cams:
        want = await registry.get(admin, cam["id"])
        resp = await client.get(f"/api/v1/cameras/{cam['id']}", headers=h)
        assert resp.status == 200
        got = json.loads(await resp.text())
        assert list(got) == list(want)  # same keys, same order
        assert got == want
        assert resp.headers["ETag"] == f'"{want["version"]}"'
    assert "." not in (await registry.get(admin, cams[0]["id"]))["created_at"]
    assert (await registry.get(admin, cams[1]["id"]))["updated_at"].endswith(".12+00:00")
    # the scope is applied in SQL: outside it, a camera does not exist
    datong = next(c for c in cams if c["region_code"] == "140211")
    dt_planner = await auth("planner", "1402")
    assert (await client.get(f"/api/v1/cameras/{datong['id']}", headers=dt_planner)).status == 200
    xiaodian = await auth("planner", "140105")
    resp = await client.get(f"/api/v1/cameras/{datong['id']}", headers=xiaodian)
    assert resp.status == 404


async def test_pages_and_bbox_match_the_record_path_including_the_cursor(
    client: TestClient, auth: Tok
) -> None:
    registry = client.app[REGISTRY]
    for scope in (None, "140105"):
        actor = Actor("t", Role.PLANNER, scope=scope)
        h = await auth("planner", scope)
        for query, f in [
            ("limit=5", CameraFilter()),
            ("limit=1000", CameraFilter()),
            ("bbox=112.5,37.8,112.6,37.9&limit=3", CameraFilter(bbox=(112.5, 37.8, 112.6, 37.9))),
            ("region=1402&limit=100", CameraFilter(region="1402")),
            ("level=3&limit=100", CameraFilter(levels=(3,))),
        ]:
            cursor = None
            while True:
                want, want_next = await registry.page(
                    actor, f, limit=int(query.split("limit=")[1]), cursor=cursor
                )
                url = f"/api/v1/cameras?{query}" + (f"&cursor={cursor}" if cursor else "")
                resp = await client.get(url, headers=h)
                assert resp.status == 200, await resp.text()
                got = json.loads(await resp.text())
                assert got == {"items": want, "next_cursor": want_next}, (scope, query)
                if want_next is None:
                    break
                cursor = want_next


async def test_nearest_in_one_statement_matches_the_numpy_re_rank(
    client: TestClient, auth: Tok
) -> None:
    registry = client.app[REGISTRY]
    for scope in (None, "140211"):
        actor = Actor("t", Role.PLANNER, scope=scope)
        h = await auth("planner", scope)
        for lon, lat, k in [
            (112.57, 37.815, 3),
            (113.31, 40.085, 5),
            (0.0, 0.0, 4),
            (112.6, 38, 50),
        ]:
            want = await registry.nearest(actor, lon, lat, k, CameraFilter())
            resp = await client.get(f"/api/v1/cameras?near={lon},{lat}&k={k}", headers=h)
            assert resp.status == 200, await resp.text()
            got = json.loads(await resp.text())
            assert got["next_cursor"] is None
            assert [c["id"] for c in got["items"]] == [c["id"] for c in want]
            for g, w in zip(got["items"], want, strict=True):
                assert math.isclose(g.pop("distance_m"), w.pop("distance_m"), abs_tol=0.011)
                assert g == w
    # a scope that holds no camera: empty, not an error
    h = await auth("planner", "1403")
    resp = await client.get("/api/v1/cameras?near=112.57,37.815&k=3", headers=h)
    assert json.loads(await resp.text()) == {"items": [], "next_cursor": None}


async def test_real_columns_round_in_sql_exactly_as_camera_out_rounds_them(
    client: TestClient,
) -> None:
    """The float8 rounding of `real` columns against Python's `round(x, 4)` on 20,000 float32
    values (fixed seed): small, large, negative, and near every fourth-decimal half."""
    rng = random.Random(20261207)
    values = [rng.uniform(-1000, 1000) for _ in range(5000)]
    values += [rng.uniform(0, 1) for _ in range(5000)]
    values += [rng.randrange(-3_600_000, 3_600_000) / 10_000 + 0.00005 for _ in range(5000)]
    values += [rng.uniform(0, 1e6) for _ in range(5000)]
    expr = _json_value("azimuth")
    rows = await client.app[POOL].fetch(
        f"SELECT azimuth::float8 AS x, json_build_object('v', {expr})::text AS j "
        "FROM unnest($1::real[]) AS azimuth",
        values,
    )
    assert len(rows) == len(values)
    for r in rows:  # x: the float32 as Python reads it back, as camera_out sees it
        assert json.loads(r["j"])["v"] == round(r["x"], 4), (r["x"], r["j"])
