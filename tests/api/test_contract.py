"""The OpenAPI document is the contract: exact, enforced, and checked by schemathesis (item 11).

The route declarations are the one source of parameters, bodies and problems: the document
shows them and the route wrapper enforces them. A schemathesis run against a live server checks
that nothing answers 5xx and nothing strays from the document. Its bounds keep it inside the
CI budget (about a minute): a fixed seed, at most a few examples per operation, one worker.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from api.schemas import CameraOut, CameraPage, TokenCreated, TokenList

from ..conftest import Tok, camera, schema_dsn
from ..live import camreg_serve

PROBLEM = "application/problem+json"

# Operations that would send traffic off loopback when given a real camera or target: a
# discovery scan (WS-Discovery/ONVIF to the targets it is given), a probe and a snapshot (to
# the camera's address), registering a found device (ONVIF interrogation of it).
OFF_LOOPBACK = r"/discovery/scans$|/probe$|/snapshot$|/register$"


async def test_every_operation_declares_its_problems_as_problem_json(
    client: TestClient, auth: Tok
) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            where = f"{method.upper()} {path}"
            if op["security"]:
                assert {"401", "403", "429"} <= codes, where
            if "{" in path:
                assert "404" in codes, where
            if any(p["in"] != "path" for p in op["parameters"]) or "requestBody" in op:
                assert "400" in codes, where
            for code, resp in op["responses"].items():
                if code.startswith("4"):
                    assert PROBLEM in resp["content"], where


async def test_parameters_carry_their_constraints(client: TestClient) -> None:
    spec = await (await client.get("/api/v1/openapi.json")).json()
    cams = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/cameras"]["get"]["parameters"]}
    assert cams["k"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert cams["region"]["pattern"] == "^[0-9]{2,6}$"
    assert "pattern" in cams["bbox"] and "pattern" in cams["level"] and "pattern" in cams["status"]
    kpis = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/kpis"]["get"]["parameters"]}
    assert kpis["to"] == {"type": "string", "format": "date"}
    assert kpis["group"]["enum"] == [2, 4, 6]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/api/v1/cameras?k=null", "k"),
        ("/api/v1/cameras?limit=0", "limit"),
        ("/api/v1/cameras?region=", "region"),
        ("/api/v1/cameras?level=1&level=2", "level"),
        ("/api/v1/kpis?to=", "to"),
        ("/api/v1/kpis?from=2026-01-01&to=", "to"),
        ("/api/v1/kpis?group=3", "group"),
        ("/api/v1/audit?from=yesterday", "from"),
        ("/api/v1/cameras/export?format=pdf", "format"),
        ("/api/v1/map/cameras?bbox=1,2,3,4", "zoom"),
    ],
)
async def test_a_value_the_document_refuses_is_a_400_naming_it(
    client: TestClient, auth: Tok, query: str, field: str
) -> None:
    resp = await client.get(query, headers=await auth("admin"))
    assert resp.status == 400, await resp.text()
    assert resp.content_type == PROBLEM
    assert [e["field"] for e in (await resp.json(content_type=None))["errors"]] == [field]


async def test_a_malformed_id_in_the_path_is_a_404(client: TestClient, auth: Tok) -> None:
    resp = await client.get("/api/v1/imports/not-a-job", headers=await auth("admin"))
    assert resp.status == 404 and resp.content_type == PROBLEM


@pytest.mark.parametrize(
    "expires_at",
    [0, 1_700_000_000, "2001-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00"],
)
async def test_token_that_would_be_born_expired_is_refused(
    client: TestClient, auth: Tok, expires_at: Any
) -> None:
    body = {"role": "planner", "name": "过期", "expires_at": expires_at}
    resp = await client.post("/api/v1/tokens", json=body, headers=await auth("admin"))
    assert resp.status == 422, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == ["expires_at"]


async def test_token_expiring_in_the_future_is_made(client: TestClient, auth: Tok) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    body = {"role": "planner", "name": "明天过期", "expires_at": later}
    resp = await client.post("/api/v1/tokens", json=body, headers=await auth("admin"))
    assert resp.status == 201, await resp.text()


async def test_options_on_export_advertises_only_its_real_method(
    client: TestClient, auth: Tok
) -> None:
    resp = await client.options("/api/v1/cameras/export", headers=await auth("admin"))
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == {"GET"}
    resp = await client.options("/api/v1/cameras/export/x", headers=await auth("admin"))
    assert resp.status == 404


async def test_a_camera_can_still_be_read_by_its_id(client: TestClient, auth: Tok) -> None:
    h = await auth("technician")
    cam = await (
        await client.post("/api/v1/cameras", json=camera(gb_id="14010500001320000961"), headers=h)
    ).json()
    assert (await client.get(f"/api/v1/cameras/{cam['id']}", headers=h)).status == 200
    assert (await client.delete(f"/api/v1/cameras/{cam['id']}", headers=h)).status == 204


async def test_camera_and_token_answers_fit_their_closed_schemas(
    client: TestClient, auth: Tok
) -> None:
    h = await auth("admin")
    body = camera(gb_id="14010500001320000962", username="u", password="p#1")
    made = await (await client.post("/api/v1/cameras", json=body, headers=h)).json()
    CameraOut.model_validate(made)
    CameraOut.model_validate(
        await (await client.get(f"/api/v1/cameras/{made['id']}", headers=h)).json()
    )
    CameraPage.model_validate(await (await client.get("/api/v1/cameras", headers=h)).json())
    near = await (await client.get("/api/v1/cameras?near=112.56,37.81&k=3", headers=h)).json()
    assert CameraPage.model_validate(near).items[0].distance_m is not None
    token = {"role": "planner", "name": "schema"}
    TokenCreated.model_validate(
        await (await client.post("/api/v1/tokens", json=token, headers=h)).json()
    )
    TokenList.model_validate(await (await client.get("/api/v1/tokens", headers=h)).json())
    spec = await (await client.get("/api/v1/openapi.json")).json()
    ok = spec["paths"]["/api/v1/cameras/{id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CameraOut"}
    assert spec["components"]["schemas"]["CameraOut"]["additionalProperties"] is False


# -- schemathesis against a live server ---------------------------------------------------------


def _post_json(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(  # noqa: S310 - loopback http only (asserted above)
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return dict(json.loads(resp.read()))


@pytest.fixture(scope="module")
def dsn(database_url: str, schema: str) -> str:
    return schema_dsn(database_url, schema)


def test_schemathesis_finds_no_server_error_and_no_spec_violation(dsn: str, tmp_path: Path) -> None:
    with camreg_serve(dsn, tmp_path / "serve") as live:
        cam = _post_json(
            f"{live.base}/api/v1/cameras", live.admin, camera(gb_id="14010500001320000971")
        )
        # DELETE /tokens/{id} would otherwise revoke whatever token id it finds, the run's
        # own admin token included: it gets a token of its own to revoke.
        spare = _post_json(
            f"{live.base}/api/v1/tokens", live.admin, {"role": "planner", "name": "to-revoke"}
        )
        config = tmp_path / "schemathesis.toml"
        config.write_text(
            f"""
[checks.missing_required_header]
expected-statuses = [400, 428]

[[operations]]
include-path-regex = "^/api/v1/cameras/\\\\{{id\\\\}}"
parameters = {{ "id" = "{cam["id"]}" }}

[[operations]]
include-path-regex = "^/api/v1/tokens/\\\\{{id\\\\}}"
parameters = {{ "id" = "{spare["id"]}" }}
"""
        )
        st = Path(sys.executable).parent / "st"
        run = subprocess.run(
            [
                str(st),
                "--no-color",
                "--config-file",
                str(config),
                "run",
                f"{live.base}/api/v1/openapi.json",
                "-H",
                f"Authorization: Bearer {live.admin}",
                "--checks",
                "all",
                # A schema-valid camera can still break a domain rule (a point outside China,
                # a 一类 point without 录像保存天数): a 422 for it is right, not a violation.
                "--exclude-checks",
                "positive_data_acceptance",
                "--exclude-path-regex",
                OFF_LOOPBACK,
                "--phases",
                "coverage,fuzzing",
                "--max-examples",
                "8",
                "--seed",
                "17",
                "--generation-database",
                "none",
                "--request-timeout",
                "15",
                # One worker: schemathesis' workers are threads, and CPython 3.11.7 tracks the AST
                # constructor's recursion depth in shared state, so two threads parsing at once
                # (hypothesis describes its filters with ast.parse) fail with "AST constructor
                # recursion depth mismatch" (CPython gh-106905).
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,  # its cache and reports stay out of the repository
        )
        server_log = live.log.read_text()
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    # aiohttp logs (and answers 400 to) requests it cannot parse, e.g. a NUL in a header;
    # anything else logged as an error is a handler that failed
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d )", server_log)
    failed = [r for r in records if " ERROR " in r and "http_exceptions.BadHttpMessage" not in r]
    assert not failed, "\n".join(failed)[-10_000:]
