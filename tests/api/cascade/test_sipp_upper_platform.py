"""Our registry cascades to SIPp acting as an independent upper platform (上级平台)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from api.state import POOL
from health.store import observe_many
from tests.api.cascade.peers import (
    CITY_CAMERAS,
    CIVIL_NODES,
    OUTSIDE,
    UpperPlatform,
    make_client,
    seed,
    upstream_settings,
    wait_for,
)
from tests.conftest import Tok


@pytest.mark.parametrize(
    ("charset", "name_bytes", "transport"),
    [
        ("GB2312", "迎泽大街".encode("gb2312"), "udp"),
        ("UTF-8", "迎泽大街".encode(), "udp"),
        ("GB2312", "迎泽大街".encode("gb2312"), "tcp"),
    ],
)
async def test_registers_with_digest_keeps_alive_and_answers_catalog_with_exact_sumnum(
    client: TestClient, auth: Tok, tmp_path: Path, charset: str, name_bytes: bytes, transport: str
) -> None:
    await seed(client, auth)
    upper = await UpperPlatform(
        tmp_path, charset=charset, transport="t1" if transport == "tcp" else "u1"
    ).start()
    up = make_client(client, upstream_settings(upper.port, charset=charset, transport=transport))
    await up.start()
    try:
        await wait_for(lambda: up.state == "registered", what="registered")
        await wait_for(lambda: up.counters["keepalives_ok"] >= 2, what="keepalives")
        await wait_for(lambda: up.counters["catalog_pushes"] >= 1, what="catalog pushed")
        await wait_for(lambda: up.counters["device_info"] >= 1, what="DeviceInfo")
    finally:
        await up.stop()
        await upper.stop()
    assert up.last_error is None, up.last_error
    sums, ids, nums = upper.received_catalog()
    want = sorted([c["gb_id"] for c in CITY_CAMERAS] + CIVIL_NODES)
    assert sums == {len(want)}, upper.errors()
    assert sorted(ids) == want  # every item once, nothing outside the upstream's regions
    assert OUTSIDE["gb_id"] not in ids
    assert max(nums) <= 3 and sum(nums) == len(want)
    last = up.timings["last_catalog"]
    assert last["sum_num"] == last["items_sent"] == len(want)
    trace = upper.trace()
    assert name_bytes in trace  # names in the upstream's charset, declared as such
    assert f'encoding="{charset}"'.encode() in trace


async def test_wrong_password_is_recorded_with_the_status_the_platform_answered(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    upper = await UpperPlatform(tmp_path, password="not-ours").start()
    up = make_client(client, upstream_settings(upper.port))
    await up.start()
    try:
        await wait_for(lambda: up.state == "failed", what="registration failed")
        api_view = up.status()
    finally:
        await up.stop()
        await upper.stop()
    assert api_view["last_error"]["status"] == 403
    assert up.last_error is not None
    assert up.last_error.what == "REGISTER"
    assert up.last_error.status == 403
    assert "Forbidden" in up.last_error.reason
    assert up.counters["register_failures"] == 1
    assert up.timings["next_attempt_at"] is not None


async def test_silent_platform_goes_offline_after_the_misses_and_comes_back_on_reregister(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    first.mkdir()
    upper = await UpperPlatform(first, query_after_ms=60_000).start()
    up = make_client(client, upstream_settings(upper.port), backoff_base_s=0.5)
    await up.start()
    try:
        await wait_for(lambda: up.counters["keepalives_ok"] >= 1, what="a keepalive answered")
        await upper.stop()  # the platform goes silent
        await wait_for(lambda: up.state != "registered", what="offline")
        assert up.counters["keepalive_misses"] >= 3
        assert up.counters["went_offline"] == 1
        assert up.last_error is not None and up.last_error.what == "keepalive"
        assert "3 keepalives in a row" in up.last_error.reason
        second = tmp_path / "second"
        second.mkdir()
        upper = await UpperPlatform(second, port=upper.port, query_after_ms=60_000).start()
        await wait_for(lambda: up.state == "registered", what="registered again")
        assert up.counters["registered"] == 2
    finally:
        await up.stop()
        await upper.stop()


async def test_subscribed_platform_gets_notify_on_when_health_brings_a_camera_online(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    await seed(client, auth)
    watched = CITY_CAMERAS[3]["gb_id"]
    upper = await UpperPlatform(tmp_path, scenario="upper_subscribe.xml").start()
    up = make_client(client, upstream_settings(upper.port, notify_interval_s=0.2))
    await up.start()
    try:
        await wait_for(lambda: up.subscription is not None, what="subscribed")
        await asyncio.sleep(0.4)  # the notifier has taken its starting marks
        pool = client.app[POOL]
        camera_id = await pool.fetchval("SELECT id FROM cameras WHERE gb_id = $1", watched)
        for _ in range(3):  # health's own path: observations through the hysteresis
            await observe_many(pool, [(camera_id, "ok", "test: stream answers")])
        assert await pool.fetchval("SELECT status FROM cameras WHERE id = $1", camera_id) == (
            "online"
        )
        await wait_for(lambda: up.counters["notify_items_sent"] >= 1, what="NOTIFY sent")
        await wait_for(lambda: b"NOTIFY sip:" in upper.trace(), what="NOTIFY received")
    finally:
        await up.stop()
        await upper.stop()
    trace = upper.trace()
    assert f"<DeviceID>{watched}</DeviceID><Event>ON</Event>".encode() in trace
    assert up.counters["notify_failures"] == 0
    assert "Failed regexp" not in upper.errors(), upper.errors()


async def test_a_401_loop_is_recorded_as_a_refused_password_and_backs_off(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    upper = await UpperPlatform(tmp_path, password="not-ours", fail="401 Unauthorized").start()
    up = make_client(client, upstream_settings(upper.port))
    await up.start()
    try:
        await wait_for(lambda: up.state == "failed", what="registration failed")
        view = up.status()
    finally:
        await up.stop()
        await upper.stop()
    assert view["last_error"]["status"] == 401
    assert "challenged again" in view["last_error"]["reason"]
    assert view["counters"]["auth_refused"] == 1
    assert view["counters"]["register_attempts"] == 1  # backing off, not hammering
    assert view["timings"]["next_attempt_at"] is not None


async def test_catalog_refused_with_404_is_recorded_with_the_platforms_answer(
    client: TestClient, auth: Tok, tmp_path: Path
) -> None:
    await seed(client, auth)
    upper = await UpperPlatform(tmp_path, message_answer="404 Not Found").start()
    up = make_client(client, upstream_settings(upper.port, keepalive_s=60))
    await up.start()
    try:
        await wait_for(lambda: up.counters["catalog_pushes"] >= 1, what="catalog answered")
    finally:
        await up.stop()
        await upper.stop()
    # The platform asks Catalog, then DeviceInfo, and answers 404 to both responses: the last
    # error is whichever refusal came last, each recorded with the platform's own words.
    assert up.last_error is not None
    assert up.last_error.what in ("catalog", "DeviceInfo")
    assert up.last_error.status == 404
    assert "Not Found" in up.last_error.reason
    assert up.counters["catalog_failures"] == 1
    last = up.timings["last_catalog"]
    assert last["items_sent"] == 0 and last["error"] == "peer answered 404 Not Found"
