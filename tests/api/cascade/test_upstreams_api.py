"""Admins manage upper platforms over the API; state and errors are visible, passwords never."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import POOL
from camera_registry.config import Settings, load_settings
from camera_registry.errors import ConfigError
from tests.api.cascade.peers import LOCAL_ID, PASSWORD, UPPER_ID, UpperPlatform
from tests.conftest import TEST_KEY, Tok


def body(port: int, **over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "province",
        "server_id": UPPER_ID,
        "host": "127.0.0.1",
        "port": port,
        "password": PASSWORD,
        "local_id": LOCAL_ID,
        "keepalive_s": 0.5,
        "regions": ["1401"],
    }
    data.update(over)
    return data


async def state_of(client: TestClient, headers: dict[str, str], uid: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/gb28181/upstreams/{uid}", headers=headers)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_unknown_key_is_refused_naming_the_key(client: TestClient, auth: Tok) -> None:
    resp = await client.post(
        "/api/v1/gb28181/upstreams", json=body(5060, keepalive=30), headers=await auth("admin")
    )
    assert resp.status == 422
    problem = await resp.json()
    assert resp.content_type == "application/problem+json"
    assert [e["field"] for e in problem["errors"]] == ["keepalive"]


async def test_platform_id_must_be_type_200(client: TestClient, auth: Tok) -> None:
    resp = await client.post(
        "/api/v1/gb28181/upstreams",
        json=body(5060, server_id="14000000001320000001"),
        headers=await auth("admin"),
    )
    assert resp.status == 422
    errors = (await resp.json())["errors"]
    assert errors[0]["field"] == "server_id" and "200" in errors[0]["message"]


async def test_only_unscoped_admins_manage_upstreams(client: TestClient, auth: Tok) -> None:
    resp = await client.get("/api/v1/gb28181/upstreams", headers=await auth("commander"))
    assert resp.status == 403
    resp = await client.get("/api/v1/gb28181/upstreams", headers=await auth("admin", "1401"))
    assert resp.status == 403


async def test_admin_adds_upstream_sees_it_register_then_a_wrong_password_with_its_403(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    headers = await auth("admin")
    upper = await UpperPlatform(tmp_path, query_after_ms=60_000).start()
    try:
        resp = await client.post(
            "/api/v1/gb28181/upstreams", json=body(upper.port), headers=headers
        )
        assert resp.status == 201, await resp.text()
        created = await resp.json()
        uid = created["id"]
        assert "password" not in created["settings"] and created["password_set"] is True
        for _ in range(100):
            view = await state_of(client, headers, uid)
            if view["state"] == "registered" and view["counters"]["keepalives_ok"] >= 1:
                break
            await asyncio.sleep(0.1)
        assert view["state"] == "registered", view
        assert view["timings"]["registered_at"] and view["timings"]["last_keepalive_ok_at"]

        metrics = await (await client.get("/metrics")).text()
        assert (
            'camreg_gb28181_upstream_state{state="registered",upstream="province"} 1.0' in metrics
        )
        assert (
            'camreg_gb28181_upstream_events_total{event="registered",upstream="province"}'
            in metrics
        )

        resp = await client.patch(
            f"/api/v1/gb28181/upstreams/{uid}", json={"password": "wrong-one"}, headers=headers
        )
        assert resp.status == 200, await resp.text()
        for _ in range(100):
            view = await state_of(client, headers, uid)
            if view["state"] == "failed":
                break
            await asyncio.sleep(0.1)
        assert view["state"] == "failed", view
        assert view["last_error"]["what"] == "REGISTER"
        assert view["last_error"]["status"] == 403
        assert "Forbidden" in view["last_error"]["reason"]

        resp = await client.patch(
            f"/api/v1/gb28181/upstreams/{uid}", json={"regions": ["9"]}, headers=headers
        )
        assert resp.status == 422
        assert (await resp.json())["errors"][0]["field"] == "regions"

        listed = await (await client.get("/api/v1/gb28181/upstreams", headers=headers)).json()
        assert [u["name"] for u in listed["items"]] == ["province"]
        text = await (await client.get("/api/v1/audit", headers=headers)).text()
        assert PASSWORD not in text and "wrong-one" not in text

        resp = await client.delete(f"/api/v1/gb28181/upstreams/{uid}", headers=headers)
        assert resp.status == 204
        resp = await client.get(f"/api/v1/gb28181/upstreams/{uid}", headers=headers)
        assert resp.status == 404
    finally:
        await upper.stop()


async def test_config_file_upstreams_are_synced_and_unknown_keys_stop_startup(
    database_url: str, schema: str, tmp_path: Path
) -> None:
    path = tmp_path / "camreg.toml"
    path.write_text(
        f"""
[[gb28181.upstreams]]
name = "ministry"
server_id = "{UPPER_ID}"
host = "127.0.0.1"
port = 9
password = "p"
local_id = "{LOCAL_ID}"
enabled = false
""",
        encoding="utf-8",
    )
    settings = load_settings(path, environ={}, data_dir=tmp_path, secret_key=TEST_KEY)
    assert isinstance(settings, Settings)
    app = create_app(settings, Database(dsn=database_url, schema=schema))
    async with TestClient(TestServer(app)) as c:
        rows = await c.app[POOL].fetch(
            "SELECT name, source, settings FROM gb28181_upstreams WHERE name = 'ministry'"
        )
        assert [(r["name"], r["source"]) for r in rows] == [("ministry", "config")]
        assert "password" not in rows[0]["settings"]
    path.write_text(path.read_text() + "keepalive_period = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"gb28181\.upstreams\.0\.keepalive_period"):
        load_settings(path, environ={})
