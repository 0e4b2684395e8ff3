"""Stream links, relay hooks in both formats, the relay source endpoint, and their audit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import POOL, STREAMS
from camera_registry.config import Settings
from camera_registry.errors import Unauthorized
from camera_registry.store.streams import LinkClaims

from ..conftest import TEST_KEY, Tok, camera

ZLM_SECRET, MTX_SECRET = "zlm-secret-0123456789", "mtx-secret-0123456789"
PASSWORD = "Cam3ra!Pass#"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("camreg"),
        secret_key=TEST_KEY,
        allow_direct_credentials=("admin",),
        link_ttl_by_role={"admin": 60},
        relays=(
            {
                "name": "zlm-taiyuan",
                "regions": ("1401",),
                "secret": ZLM_SECRET,
                "urls": {
                    "flv": "http://zlm:8080/live/{stream_key}.flv?sign={sign}",
                    "hls": "http://zlm:8080/live/{stream_key}/hls.m3u8?sign={sign}",
                },
            },
            {
                "name": "mtx-datong",
                "regions": ("1402",),
                "secret": MTX_SECRET,
                "urls": {"rtsp": "rtsp://mtx:8554/live/{stream_key}?sign={sign}"},
            },
        ),
    )


@pytest.fixture(scope="module")
async def client(settings: Settings, database_url: str, schema: str) -> AsyncIterator[TestClient]:
    app = create_app(settings, Database(dsn=database_url, schema=schema))
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture(scope="module")
async def cams(client: TestClient, auth: Tok) -> dict[str, dict[str, Any]]:
    admin = await auth("admin")
    out: dict[str, dict[str, Any]] = {}
    for name, gb, lon, lat in [
        ("taiyuan", "14010500001325800001", 112.56, 37.81),
        ("datong", "14021100001325800002", 113.30, 40.08),
        ("yangquan", "14030200001325800003", 113.58, 37.86),
    ]:
        body = camera(
            gb_id=gb,
            lon=lon,
            lat=lat,
            username="admin",
            password=PASSWORD,
            streams={
                "main": f"rtsp://10.0.0.{len(out) + 1}:554/main",
                "sub": f"rtsp://10.0.0.{len(out) + 1}:554/sub",
            },
        )
        resp = await client.post("/api/v1/cameras", json=body, headers=admin)
        assert resp.status == 201, await resp.text()
        out[name] = await resp.json()
    return out


def sign_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sign"][0]


async def zlm(client: TestClient, stream: str, sign: str, secret: str = ZLM_SECRET) -> Any:
    body = {
        "app": "live",
        "stream": stream,
        "params": f"sign={sign}",
        "ip": "10.8.8.8",
        "schema": "http-flv",
        "vhost": "__defaultVhost__",
    }
    resp = await client.post(f"/api/v1/hooks/zlm/on_play?secret={secret}", json=body)
    return resp.status, await resp.json(content_type=None)


async def audit_actions(client: TestClient, camera_id: str) -> list[str]:
    rows = await client.app[POOL].fetch(
        "SELECT action FROM audit_log WHERE camera_id = $1::uuid ORDER BY id", camera_id
    )
    return [r["action"] for r in rows]


async def test_signed_link_is_admitted_once_per_player_connection_and_audited(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    cam = cams["taiyuan"]
    h = await auth("commander", "1401")
    resp = await client.get(f"/api/v1/cameras/{cam['id']}/stream?protocol=flv", headers=h)
    assert resp.status == 200, await resp.text()
    link = await resp.json()
    key = f"{cam['gb_id']}_main"
    assert link["url"].startswith(f"http://zlm:8080/live/{key}.flv?sign=")
    assert link["relay"] == "zlm-taiyuan" and link["protocol"] == "flv"
    assert PASSWORD not in str(link)
    sign = sign_of(link["url"])
    for _ in range(2):  # two players, two verdicts, two audit records
        status, verdict = await zlm(client, key, sign)
        assert (status, verdict["code"]) == (200, 0)
    assert (await audit_actions(client, cam["id"]))[-3:] == [
        "stream.link",
        "stream.play_allowed",
        "stream.play_allowed",
    ]


async def test_tampered_expired_foreign_and_out_of_scope_links_are_refused_by_both_hooks(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    links = client.app[STREAMS]
    h = await auth("commander", "1401")
    cam, other = cams["taiyuan"], cams["datong"]
    good = sign_of(
        (
            await (
                await client.get(f"/api/v1/cameras/{cam['id']}/stream?protocol=hls", headers=h)
            ).json()
        )["url"]
    )
    key = f"{cam['gb_id']}_main"
    payload, mac = good.split(".")
    tampered = payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    token_id = links.signer.verify(good).token_id
    expired = links.signer.sign(
        LinkClaims(cam["id"], "main", "hls", token_id, int(time.time()) - 1)
    )
    # Datong is outside the 1401 token's scope: a link for it (forged by us with the real key,
    # as a leaked signing bug would) must still be refused at play time.
    outside = links.signer.sign(
        LinkClaims(other["id"], "main", "rtsp", token_id, int(time.time()) + 60)
    )
    for sign, stream, words in [
        (tampered, key, "does not match"),
        (expired, key, "expired"),
        ("garbage", key, "malformed"),
        (good, f"{other['gb_id']}_main", "another stream"),
        (good, f"{cam['gb_id']}_sub", "another stream"),
    ]:
        status, verdict = await zlm(client, stream, sign)
        assert status == 200  # ZLMediaKit reads the verdict from the body, not the status
        assert verdict["code"] != 0 and words in verdict["msg"], (words, verdict)
        resp = await client.post(
            f"/api/v1/hooks/mediamtx/auth?secret={MTX_SECRET}",
            json={
                "user": "",
                "password": "",
                "ip": "10.8.8.9",
                "action": "read",
                "path": f"live/{stream}",
                "protocol": "rtsp",
                "query": f"sign={sign}",
            },
        )
        assert resp.status == 401
    resp = await client.post(
        f"/api/v1/hooks/mediamtx/auth?secret={MTX_SECRET}",
        json={"action": "read", "path": f"live/{other['gb_id']}_main", "query": f"sign={outside}"},
    )
    body = await resp.json()
    assert resp.status == 401 and "scope" in body["reason"]
    _, verdict = await zlm(client, f"{other['gb_id']}_main", outside)
    assert verdict["code"] != 0 and "scope" in verdict["msg"]
    # The Taiyuan relay does not serve Datong, even with a genuine province-wide link.
    wide = await auth("commander")
    link = await (
        await client.get(f"/api/v1/cameras/{other['id']}/stream?protocol=rtsp", headers=wide)
    ).json()
    _, verdict = await zlm(client, f"{other['gb_id']}_main", sign_of(link["url"]))
    assert verdict["code"] != 0 and "does not serve" in verdict["msg"]


async def test_a_link_replayed_after_expiry_is_refused_by_both_hooks(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    cam = cams["taiyuan"]
    h = await auth("commander", "1401")
    link = await (
        await client.get(f"/api/v1/cameras/{cam['id']}/stream?protocol=flv", headers=h)
    ).json()
    sign, key = sign_of(link["url"]), f"{cam['gb_id']}_main"
    assert (await zlm(client, key, sign))[1]["code"] == 0
    signer = client.app[STREAMS].signer
    real = signer.clock
    expires = signer.verify(sign).expires
    try:
        signer.clock = lambda: expires - 0.001  # the last instant it is valid
        assert (await zlm(client, key, sign))[1]["code"] == 0
        signer.clock = lambda: float(expires)  # the instant it expires, and later
        verdict = (await zlm(client, key, sign))[1]
        assert verdict["code"] != 0 and "expired" in verdict["msg"]
        resp = await client.post(
            f"/api/v1/hooks/mediamtx/auth?secret={MTX_SECRET}",
            json={"action": "read", "path": f"live/{key}", "query": f"sign={sign}"},
        )
        assert resp.status == 401
    finally:
        signer.clock = real


async def test_clock_edges_of_link_expiry(client: TestClient) -> None:
    signer = client.app[STREAMS].signer
    sign = signer.sign(LinkClaims("c", "main", "flv", "t", 1_000))
    assert signer.verify(sign, now=999.999).expires == 1_000
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(sign, now=1_000)


async def test_revoking_the_token_kills_its_links_at_once(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    admin = await auth("admin")
    made = await (
        await client.post(
            "/api/v1/tokens",
            json={"role": "commander", "name": "wall-3", "region": "1401"},
            headers=admin,
        )
    ).json()
    h = {"Authorization": f"Bearer {made['token']}"}
    cam = cams["taiyuan"]
    link = await (
        await client.get(f"/api/v1/cameras/{cam['id']}/stream?protocol=flv", headers=h)
    ).json()
    key = f"{cam['gb_id']}_main"
    assert (await zlm(client, key, sign_of(link["url"])))[1]["code"] == 0
    assert (await client.delete(f"/api/v1/tokens/{made['id']}", headers=admin)).status == 204
    verdict = (await zlm(client, key, sign_of(link["url"])))[1]
    assert verdict["code"] != 0 and "revoked" in verdict["msg"]


async def test_mediamtx_allows_reads_and_refuses_publishing(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    cam = cams["datong"]
    h = await auth("commander", "1402")
    link = await (
        await client.get(f"/api/v1/cameras/{cam['id']}/stream?protocol=rtsp", headers=h)
    ).json()
    assert link["url"].startswith(f"rtsp://mtx:8554/live/{cam['gb_id']}_main?sign=")
    query = urlsplit(link["url"]).query
    base = {
        "user": "",
        "password": "",
        "ip": "10.7.7.7",
        "path": f"live/{cam['gb_id']}_main",
        "protocol": "rtsp",
        "id": "x",
        "query": query,
    }
    url = f"/api/v1/hooks/mediamtx/auth?secret={MTX_SECRET}"
    assert (await client.post(url, json={**base, "action": "read"})).status == 200
    assert (await client.post(url, json={**base, "action": "publish"})).status == 401
    assert (
        await client.post(url.replace(MTX_SECRET, "wrong-secret-000000"), json=base)
    ).status == 401


async def test_direct_rtsp_reveals_credentials_only_to_allowed_roles_and_audits_it(
    client: TestClient, auth: Tok, cams: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cam = cams["yangquan"]  # no relay serves 1403
    commander = await (
        await client.get(
            f"/api/v1/cameras/{cam['id']}/stream?profile=sub", headers=await auth("commander")
        )
    ).json()
    assert commander == {
        "url": "rtsp://10.0.0.3:554/sub",
        "protocol": "rtsp",
        "profile": "sub",
        "expires_at": None,
        "relay": None,
        "credentials_included": False,
    }
    admin = await (
        await client.get(f"/api/v1/cameras/{cam['id']}/stream", headers=await auth("admin"))
    ).json()
    assert admin["url"] == "rtsp://admin:Cam3ra%21Pass%23@10.0.0.3:554/main"
    rows = await client.app[POOL].fetch(
        "SELECT action, remote_addr FROM audit_log WHERE camera_id = $1::uuid "
        "AND action LIKE 'stream.direct%' ORDER BY id",
        cam["id"],
    )
    assert [r["action"] for r in rows] == ["stream.direct", "stream.direct_credentials"]
    assert rows[-1]["remote_addr"] == "127.0.0.1"
    resp = await client.get(
        f"/api/v1/cameras/{cam['id']}/stream?protocol=hls", headers=await auth("admin")
    )
    assert resp.status == 400 and "protocol" in await resp.text()
    assert PASSWORD not in caplog.text and "Cam3ra" not in caplog.text


async def test_relay_source_gives_credentials_to_relays_only(
    client: TestClient, auth: Tok, cams: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cam = cams["taiyuan"]
    url = f"/api/v1/relay/{cam['gb_id']}_sub/source"
    got = await (await client.get(url, headers={"X-Relay-Secret": ZLM_SECRET})).json()
    assert got["source"] == "rtsp://admin:Cam3ra%21Pass%23@10.0.0.1:554/sub"
    assert (await client.get(url, headers=await auth("admin"))).status == 401
    assert (await client.get(url, headers={"X-Relay-Secret": "nope"})).status == 401
    # The Datong relay may not pull a Taiyuan camera.
    assert (await client.get(url, headers={"X-Relay-Secret": MTX_SECRET})).status == 404
    assert "stream.relay_source" in await audit_actions(client, cam["id"])
    # No other response carries the password.
    for path in (
        f"/api/v1/cameras/{cam['id']}",
        "/api/v1/cameras?limit=100",
        "/api/v1/cameras/export?format=csv",
        f"/api/v1/audit?camera={cam['id']}",
    ):
        text = await (await client.get(path, headers=await auth("admin"))).text()
        assert PASSWORD not in text and "Cam3ra" not in text, path
    assert "Cam3ra" not in caplog.text


async def test_video_wall_batch_gives_one_item_per_camera(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    h = await auth("commander", "1401")
    ids = [cams["taiyuan"]["id"], cams["datong"]["id"], "not-a-uuid"]
    resp = await client.post(
        "/api/v1/streams", json={"camera_ids": ids, "protocol": "flv"}, headers=h
    )
    items = (await resp.json())["items"]
    assert [i["camera_id"] for i in items] == ids
    assert items[0]["url"].startswith("http://zlm:8080/live/")
    assert items[1]["error"]["status"] == 404 and items[2]["error"]["status"] == 404
    resp = await client.post("/api/v1/streams", json={"camera_ids": ["x"] * 65}, headers=h)
    assert resp.status == 422


async def test_video_wall_with_a_wrong_field_names_camera_ids_not_camera_data(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    h = await auth("commander", "1401")
    resp = await client.post(
        "/api/v1/streams", json={"cameras": [cams["taiyuan"]["id"]]}, headers=h
    )
    assert resp.status == 422 and resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["title"] == "Invalid request body"  # it is not camera data
    assert {e["field"]: e["message"] for e in body["errors"]} == {
        "camera_ids": "is required",
        "cameras": "unknown field; see the schema at /api/v1/openapi.json",
    }


async def test_a_camera_with_bad_fields_is_still_invalid_camera_data(
    client: TestClient, auth: Tok
) -> None:
    resp = await client.post("/api/v1/cameras", json={"name": 5}, headers=await auth())
    assert resp.status == 422 and (await resp.json())["title"] == "Invalid camera data"


def test_settings_refuse_unknown_roles_and_short_relay_secrets(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown roles"):
        Settings(allow_direct_credentials=("boss",))
    with pytest.raises(ValidationError):
        Settings(relays=({"name": "r", "urls": {"flv": "x"}, "secret": "short"},))


async def test_each_link_names_its_regions_relay_and_a_refused_link_leaves_no_audit_row(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    """The look-up, the relay choice and the audit row are one statement: check its choices."""
    commander = await auth("commander")
    details = []
    for name, protocol, relay in [
        ("taiyuan", "flv", "zlm-taiyuan"),
        ("datong", "rtsp", "mtx-datong"),  # rtsp through Datong's relay, not direct
    ]:
        resp = await client.get(
            f"/api/v1/cameras/{cams[name]['id']}/stream?protocol={protocol}", headers=commander
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["relay"] == relay
        details.append(
            await client.app[POOL].fetchval(
                """SELECT detail FROM audit_log WHERE camera_id = $1::uuid
                   AND action = 'stream.link' ORDER BY id DESC LIMIT 1""",
                cams[name]["id"],
            )
        )
    assert [(d["relay"], d["protocol"], d["profile"]) for d in details] == [
        ("zlm-taiyuan", "flv", "main"),
        ("mtx-datong", "rtsp", "main"),
    ]
    main_only = camera(gb_id="14030200001325800009", streams={"main": "rtsp://10.0.0.9:554/m"})
    no_stream = camera(gb_id="14030200001325800010", streams={})
    ids = []
    for body in (main_only, no_stream):
        resp = await client.post("/api/v1/cameras", json=body, headers=await auth("admin"))
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    before = await client.app[POOL].fetchval("SELECT count(*) FROM audit_log")
    asked = [
        # Datong's camera for a token scoped to Taiyuan: as if it did not exist
        (cams["datong"]["id"], "", await auth("commander", "1401"), 404),
        # flv for Yangquan, which no relay serves
        (cams["yangquan"]["id"], "?protocol=flv", commander, 400),
        # no stream URI at all
        (ids[1], "", commander, 404),
        # `sub` falls back to the main stream: answered, the only one audited here
        (ids[0], "?profile=sub", commander, 200),
    ]
    for cid, query, headers, status in asked:
        resp = await client.get(f"/api/v1/cameras/{cid}/stream{query}", headers=headers)
        assert resp.status == status, await resp.text()
    after = await client.app[POOL].fetchval("SELECT count(*) FROM audit_log")
    assert after == before + 1


async def test_concurrent_verdicts_share_statements_and_each_is_audited_with_its_reason(
    client: TestClient, auth: Tok, cams: dict[str, Any]
) -> None:
    """Verdicts of concurrent hook calls are judged and audited by shared statements: every
    answer matches its own audit row (action, stream, reason), none is lost or swapped."""
    cam = cams["taiyuan"]
    h = await auth("commander", "1401")
    resp = await client.get(f"/api/v1/cameras/{cam['id']}/stream?protocol=flv", headers=h)
    sign = sign_of((await resp.json())["url"])
    verdicts = client.app[STREAMS].verdicts
    runs = verdicts.runs
    # even calls ask for the linked stream, odd ones for another (refused); each its own player
    calls = [
        (f"{cam['gb_id']}_{'main' if i % 2 == 0 else 'sub'}", f"10.66.{i // 250}.{i % 250}")
        for i in range(40)
    ]

    async def play(stream: str, ip: str) -> dict[str, Any]:
        body = {"app": "live", "stream": stream, "params": f"sign={sign}", "ip": ip}
        r = await client.post(f"/api/v1/hooks/zlm/on_play?secret={ZLM_SECRET}", json=body)
        assert r.status == 200
        return dict(await r.json())

    answers = await asyncio.gather(*(play(s, ip) for s, ip in calls))
    assert verdicts.runs - runs < len(calls)  # statements were shared
    rows = await client.app[POOL].fetch(
        """SELECT action, detail, camera_id::text AS cam, actor FROM audit_log
           WHERE detail->>'player' LIKE '10.66.%'""",
    )
    by_player = {r["detail"]["player"]: r for r in rows}
    assert len(rows) == len(by_player) == len(calls)
    for (stream, ip), answer in zip(calls, answers, strict=True):
        row = by_player[ip]
        assert row["detail"]["stream"] == stream and row["detail"]["hook"] == "zlm.on_play"
        assert row["cam"] == cam["id"] and row["actor"] == "relay:zlm-taiyuan"
        if stream.endswith("_main"):
            assert answer["code"] == 0 and row["action"] == "stream.play_allowed"
            assert row["detail"]["reason"] == "ok"
        else:
            assert answer["code"] != 0 and row["action"] == "stream.play_denied"
            assert (
                row["detail"]["reason"]
                == answer["msg"]
                == ("the link was issued for another stream")
            )
