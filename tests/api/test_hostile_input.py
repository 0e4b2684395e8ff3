"""Hostile input that used to answer 500, and credentials that used to leak (issue 17, items 4-9).

Each request here is one an attacker or a careless ledger sends; each must end in a 4xx
problem+json naming the field, or be stored with its secret sealed, never shown.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.state import BOX, POOL
from camera_registry.actor import Actor, Role
from ingest.ledger.source import import_ledger

from ..conftest import Tok, camera

PROBLEM = "application/problem+json"


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=None)
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def stored_credentials(client: TestClient, camera_id: str) -> tuple[str | None, ...]:
    sealed = await client.app[POOL].fetchval(
        "SELECT credentials FROM cameras WHERE id = $1::uuid", camera_id
    )
    return client.app[BOX].open(sealed) if sealed is not None else (None, None)


# -- item 4: multipart ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"--B\r\n[]--B--\r\n",
        b"--B\r\nContent-Disposition form-data\r\n\r\nx\r\n--B--\r\n",
        b"--B\r\n" + b"X-" * 9000 + b": y\r\n\r\nx\r\n--B--\r\n",
    ],
)
async def test_malformed_multipart_part_headers_are_a_400_naming_the_file(
    client: TestClient, auth: Tok, body: bytes
) -> None:
    resp = await client.post(
        "/api/v1/imports",
        data=body,
        headers={**await auth("technician"), "Content-Type": "multipart/form-data; boundary=B"},
    )
    assert resp.status < 500, await resp.text()
    assert resp.content_type == PROBLEM
    errors = (await resp.json(content_type=None))["errors"]
    assert resp.status == 413 or {e["field"] for e in errors} == {"file"}


async def test_malformed_multipart_leaves_no_upload_behind(
    client: TestClient, auth: Tok, settings: Any
) -> None:
    await client.post(
        "/api/v1/imports",
        data=b"--B\r\n[]--B--\r\n",
        headers={**await auth("technician"), "Content-Type": "multipart/form-data; boundary=B"},
    )
    uploads = settings.data_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


# -- item 5: JSON nesting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/cameras",
        "/api/v1/tokens",
        "/api/v1/streams",
        "/api/v1/coverage/runs",
        "/api/v1/discovery/scans",
    ],
)
@pytest.mark.parametrize("depth", [1_000, 100_000])
async def test_deeply_nested_json_is_a_400_on_every_json_body(
    client: TestClient, auth: Tok, path: str, depth: int
) -> None:
    body = b"[" * depth + b"]" * depth
    resp = await client.post(
        path, data=body, headers={**await auth("admin"), "Content-Type": "application/json"}
    )
    errors = (await problem(resp, 400))["errors"]
    assert errors == [{"field": "body", "message": "nested deeper than 64 levels"}]


async def test_nesting_in_a_string_is_only_text(client: TestClient, auth: Tok) -> None:
    resp = await client.post(
        "/api/v1/cameras",
        json=camera(gb_id="14010500001320000901", address="[" * 300, name="{" * 150),
        headers=await auth("technician"),
    )
    assert resp.status == 201, await resp.text()


async def test_deep_hook_body_is_a_400_not_a_500(client: TestClient) -> None:
    body = b'{"a":' * 5000 + b"1" + b"}" * 5000
    resp = await client.post(
        "/api/v1/hooks/zlm/on_play", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status < 500, await resp.text()


# -- item 6: static names -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["%00", "app.js%00", "%00.js", "..%2Fapp.js", ".hidden"])
async def test_static_file_with_a_hostile_name_is_a_404_problem(
    client: TestClient, name: str
) -> None:
    resp = await client.get(f"/static/{name}")
    await problem(resp, 404)


# -- items 7 and 8: credentials inside stream URIs ----------------------------------------------


@pytest.mark.parametrize(
    ("serial", "password"),
    [(11, "pa#ss"), (12, "pa?ss"), (13, "pa/ss"), (14, "p@ss"), (15, "a:b#c?d/e")],
)
async def test_password_with_reserved_characters_is_split_off_sealed_and_never_shown(
    client: TestClient, auth: Tok, serial: int, password: str
) -> None:
    h = await auth("technician")
    uri = f"rtsp://admin:{password}@127.0.0.1:18554/x"
    body = camera(gb_id=f"140105000013200009{serial:02d}", streams={"main": uri})
    resp = await client.post("/api/v1/cameras", json=body, headers=h)
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["streams"]["main"] == "rtsp://127.0.0.1:18554/x"
    assert created["has_credentials"] is True
    assert await stored_credentials(client, created["id"]) == ("admin", password)
    planner = await auth("planner", "1401")
    listed = await (await client.get("/api/v1/cameras?region=140105", headers=planner)).text()
    exported = await (await client.get("/api/v1/cameras/export?format=csv", headers=planner)).text()
    for text in (listed, exported):
        assert password not in text and "admin:" not in text


async def test_unreadable_stream_uri_is_a_422_saying_how_to_write_it(
    client: TestClient, auth: Tok
) -> None:
    body = camera(gb_id="14010500001320000920", streams={"main": "rtsp://admin:pa#ss@"})
    resp = await client.post("/api/v1/cameras", json=body, headers=await auth("technician"))
    errors = (await problem(resp, 422))["errors"]
    assert errors[0]["field"] == "stream_main"
    assert "percent-encode" in errors[0]["message"]


def _ledger(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["国标编码", "点位名称", "点位类型", "经度", "纬度", "主码流地址"])
        w.writerows(rows)
    return path


async def test_ledger_with_reserved_characters_in_passwords_imports_with_per_row_errors(
    client: TestClient, tmp_path: Path
) -> None:
    path = _ledger(
        tmp_path / "台账.csv",
        [
            ["14010500001320000931", "甲", "二类", 112.56, 37.81, "rtsp://admin:pa#ss@10.1.1.9/x"],
            ["14010500001320000932", "乙", "二类", 112.57, 37.82, "rtsp://admin:pa#ss@"],
        ],
    )
    report = await import_ledger(
        client.app[POOL], client.app[BOX], Actor("t", Role.ADMIN), path, partial=True
    )
    assert report.inserted == 1 and report.rows_bad == 1
    assert [(e.row, e.field) for e in report.errors] == [(3, "stream_main")]
    assert "Traceback" not in report.errors[0].message
    rec = await client.app[POOL].fetchrow(
        "SELECT id::text, streams FROM cameras WHERE gb_id = '14010500001320000931'"
    )
    assert rec["streams"] == {"main": "rtsp://10.1.1.9/x"}
    assert await stored_credentials(client, rec["id"]) == ("admin", "pa#ss")


# -- item 9: one credential edited keeps the other ----------------------------------------------


async def _created(client: TestClient, h: dict[str, str], **over: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/cameras", json=camera(**over), headers=h)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def _patch(
    client: TestClient, h: dict[str, str], cam: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    resp = await client.patch(
        f"/api/v1/cameras/{cam['id']}",
        json=body,
        headers={**h, "If-Match": f'"{cam["version"]}"'},
    )
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_patching_the_password_alone_keeps_the_username(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    cam = await _created(
        client,
        h,
        gb_id="14010500001320000941",
        streams={"main": "rtsp://operator7:OldPw1@10.1.1.7/x"},
    )
    await _patch(client, h, cam, {"password": "NewPw2"})
    assert await stored_credentials(client, cam["id"]) == ("operator7", "NewPw2")


async def test_patching_the_username_alone_keeps_the_password(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    cam = await _created(
        client, h, gb_id="14010500001320000942", username="operator7", password="OldPw1"
    )
    await _patch(client, h, cam, {"username": "operator8"})
    assert await stored_credentials(client, cam["id"]) == ("operator8", "OldPw1")


async def test_patching_a_stream_uri_with_a_password_keeps_the_stored_username(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    cam = await _created(
        client, h, gb_id="14010500001320000943", username="operator7", password="OldPw1"
    )
    out = await _patch(client, h, cam, {"streams": {"main": "rtsp://:Pw#3@10.1.1.8/y"}})
    assert out["streams"]["main"] == "rtsp://10.1.1.8/y"
    assert await stored_credentials(client, cam["id"]) == ("operator7", "Pw#3")


async def test_patching_other_fields_keeps_both_credentials(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    cam = await _created(
        client, h, gb_id="14010500001320000944", username="operator7", password="OldPw1"
    )
    out = await _patch(client, h, cam, {"name": "改名"})
    assert out["has_credentials"] is True
    assert await stored_credentials(client, cam["id"]) == ("operator7", "OldPw1")


async def test_null_username_and_password_clear_the_credentials(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("technician")
    cam = await _created(
        client, h, gb_id="14010500001320000945", username="operator7", password="OldPw1"
    )
    out = await _patch(client, h, cam, {"username": None, "password": None})
    assert out["has_credentials"] is False
