"""A newcomer's first hour on the web map (issue 16), in a real browser against a live
`camreg serve --demo`: what the page says about a direct stream link, what each role is
offered, server errors in the page's language, registering by a map click, a scoped token's
first view, the region table, the offline base layer at street zoom and the language switch.

This module's demo cameras are never probed (no `seeded` fixture): every status is unknown
until a test sets one."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from playwright.async_api import Browser, expect

from ..conftest import ROOT
from .conftest import Live, Tab

SCOPE = "1401"  # 太原市
ENGLISH_WORD = re.compile(r"[A-Za-z]{4,}")


async def _street_view_of(server: Live, token: str) -> str:
    """A map hash at street zoom on one of the scope's demo cameras."""
    found = await server.api("GET", f"/api/v1/cameras?region={SCOPE}&limit=1", token=token)
    [cam] = found["items"]
    return f"#18/{cam['lat']:.5f}/{cam['lon']:.5f}"


async def _open_camera(tab: Tab, cam: dict[str, Any]) -> None:
    page = tab.page
    marker = page.locator(f".cam[data-id='{cam['id']}']")
    await marker.wait_for()
    await marker.click()
    await expect(page.locator("#panel-name")).to_have_text(cam["name"])


async def test_a_direct_rtsp_link_says_it_does_not_expire_and_is_audited(
    server: Live, tab: Tab
) -> None:
    body = {"name": "直连码流测试", "region_code": "140105", "level": 2, "lon": 112.641,
            "lat": 37.761, "streams": {"main": "rtsp://127.0.0.1:9/live"}}  # fmt: skip
    cam = await server.api("POST", "/api/v1/cameras", json=body)
    await tab.sign_in(server.base, await server.token("commander", SCOPE), "#18/37.76100/112.64100")
    page = tab.page
    await _open_camera(tab, cam)
    await page.click("#open-stream")
    await expect(page.locator("#stream-url")).to_have_value("rtsp://127.0.0.1:9/live")
    expiry = await page.inner_text("#stream-expiry")
    assert "不会过期" in expiry and "审计" in expiry, expiry
    assert not re.search(r"\d{1,2}:\d{2}:\d{2}", expiry)  # no made-up clock time
    await tab.shot("direct-link")
    audit = await server.api("GET", f"/api/v1/audit?camera={cam['id']}&action=stream.direct")
    assert len(audit["items"]) == 1
    assert tab.errors == []


async def test_a_commander_is_offered_only_what_a_commander_may_do(server: Live, tab: Tab) -> None:
    await tab.sign_in(server.base, await server.token("commander", SCOPE))
    page = tab.page
    await page.wait_for_selector("#region-table")  # commanders read the region table
    assert await page.locator("#run-coverage, #plan-region, #export-csv").count() == 0
    assert await page.locator("#tech, #register-click, #edit-camera").count() == 0
    rights = await page.inner_text("#rights")
    assert "调阅视频" in rights and "运行" not in rights and "登记" not in rights
    await tab.shot("commander")
    await page.evaluate("sessionStorage.clear()")
    await tab.sign_in(server.base, await server.token("planner", SCOPE))
    await page.wait_for_selector("#run-coverage")
    assert await page.locator("#open-stream, #register-click").count() == 0
    assert tab.errors == []


@contextlib.asynccontextmanager
async def _web_src() -> AsyncIterator[str]:
    """web/src served as ES modules on loopback: the page's own error translation, unbundled."""

    async def blank(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>errors</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", blank)
    app.router.add_static("/src/", ROOT / "web" / "src")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _problem(
    server: Live, method: str, path: str, token: str | None, **kw: Any
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, server.base + path, headers={**headers, **kw.pop("headers", {})},
                  **kw) as resp,
    ):  # fmt: skip
        assert resp.status >= 400, f"{method} {path}: {resp.status}"
        assert resp.content_type == "application/problem+json"
        return {"status": resp.status, "body": await resp.json()}


async def test_every_server_error_the_page_can_show_reads_in_chinese(
    server: Live, browser: Browser
) -> None:
    """The server's real problem+json answers for what the page's users can run into, each
    through the page's translation: a zh-CN line and zh-CN field messages, no English."""
    tech = await server.token("technician", SCOPE)
    commander = await server.token("commander", SCOPE)
    body = {"name": "重复编码测试", "region_code": "140105", "level": 3, "lon": 112.6, "lat": 37.8}
    cam = taken = await server.api("POST", "/api/v1/cameras", token=tech, json=body)
    place = {"lon": 112.6, "lat": 37.8, "level": 3, "name": "x"}
    problems = [
        await _problem(server, "POST", "/api/v1/coverage/runs", commander, json={"region": "1401"}),
        await _problem(server, "POST", "/api/v1/cameras", tech,
                       json={**place, "region_code": "140202"}),  # 大同: outside the scope
        await _problem(server, "POST", "/api/v1/cameras", tech,
                       json={**place, "gb_id": taken["gb_id"]}),  # already registered
        await _problem(server, "POST", "/api/v1/cameras", tech,
                       json={**place, "region_code": "140105", "level": 1}),  # no record_days
        await _problem(server, "POST", "/api/v1/cameras", tech,
                       json={**place, "region_code": "140105", "lon": 37.8, "lat": 112.6}),
        await _problem(server, "POST", "/api/v1/cameras", tech,
                       json={**place, "region_code": "140105", "gb_id": "123"}),
        await _problem(server, "POST", "/api/v1/cameras", tech,
                       json={"name": "", "region_code": "1401x", "level": "x", "hfov": 0,
                             "lon": "east", "lat": 37.8}),
        await _problem(server, "PATCH", f"/api/v1/cameras/{cam['id']}", tech,
                       json={"azimuth": 5}, headers={"If-Match": '"99"'}),
        await _problem(server, "GET", f"/api/v1/cameras/{cam['id']}/stream", commander),
        await _problem(server, "GET", "/api/v1/cameras/00000000-0000-0000-0000-000000000000",
                       commander),
        await _problem(server, "GET", "/api/v1/map/config", "crt_revoked-or-unknown"),
        await _problem(server, "POST", "/api/v1/coverage/runs", tech, json={"region": "1402"}),
    ]  # fmt: skip
    page = await browser.new_page(locale="zh-CN")
    try:
        async with _web_src() as base:
            await page.goto(base + "/")
            out = await page.evaluate(
                """async (problems) => {
                    const { ApiError } = await import("/src/api.js");
                    const { explain } = await import("/src/errors.js");
                    return problems.map((p) => explain(new ApiError(p.status, p.body, "x")));
                }""",
                problems,
            )
    finally:
        await page.close()
    for p, said in zip(problems, out, strict=True):
        lines = [said["text"], *(f["text"] for f in said["fields"])]
        for line in lines:
            assert line and not ENGLISH_WORD.search(line), (p["body"], said)
        assert len(said["fields"]) == len(p["body"]["errors"])
    by_detail = {p["body"]["detail"]: said for p, said in zip(problems, out, strict=True)}
    role = next(s for d, s in by_detail.items() if d.startswith("role commander"))
    assert role["text"] == "当前角色（指挥人员）不能执行此操作"
    dup = next(s for d, s in by_detail.items() if "already registered" in d)
    [field] = dup["fields"]
    assert field["field"] == "gb_id" and field["text"] == "该国标编码已登记，请换一个"


async def test_registering_by_map_click_fills_the_county_and_asks_what_level_1_needs(
    server: Live, tab: Tab
) -> None:
    token = await server.token("technician", SCOPE)
    await tab.sign_in(server.base, token, "#16/37.86000/112.56000")
    page = tab.page
    await page.click("#register-click")
    await expect(page.locator("#pick-hint")).to_have_text(re.compile("请在地图上点击点位位置"))
    await tab.shot("waiting-for-click")
    box = await page.locator("#map").bounding_box()
    assert box
    await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.wait_for_selector("#place-form")
    await expect(page.locator("#pick-hint")).to_have_count(0)  # the hint goes with the click
    lon = await page.input_value("#place-form input[name=lon]")
    lat = await page.input_value("#place-form input[name=lat]")
    county = await server.api("GET", f"/api/v1/geodata/regions/at?lon={lon}&lat={lat}")
    code, name = county["region"]["adcode"], county["region"]["name"]
    await expect(page.locator("#reg-region")).to_have_value(code)
    await expect(page.locator("#reg-region-note")).to_contain_text(name)
    # our own zh-CN checks, not the browser's "Please fill out this field."
    assert await page.evaluate("document.querySelector('#place-form').noValidate")
    await page.fill("#reg-gb-id", "1401")
    await page.click("#place-submit")
    await expect(page.locator(".field-error[data-for='name']")).to_have_text("请填写点位名称")
    await expect(page.locator(".field-error[data-for='gb_id']")).to_contain_text("20 位数字")
    await tab.shot("zh-validation")
    await page.fill("#reg-gb-id", "")
    # 一类 asks for 录像保存天数, prefilled from the deployment's setting and sent as shown
    assert not await page.is_visible("#reg-record-days")
    await page.select_option("#reg-level", "1")
    await expect(page.locator("#reg-record-days")).to_be_visible()
    await expect(page.locator("#reg-record-days")).to_have_value("90")
    await page.fill("#reg-record-days", "120")
    await page.fill("#reg-name", "点击登记一类点位")
    await tab.shot("level-1-form")
    await page.click("#place-submit")
    await expect(page.locator("#panel-name")).to_have_text("点击登记一类点位")
    [cam] = (await server.api("GET", "/api/v1/cameras?q=点击登记一类点位", token=token))["items"]
    assert cam["level"] == 1 and cam["record_days"] == 120 and cam["region_code"] == code
    assert cam["gb_id"].startswith(code)  # generated for the county, and shown
    await expect(page.locator("#registered-as")).to_contain_text(cam["gb_id"])
    await tab.shot("registered-with-generated-id")
    assert tab.errors == []


async def test_a_field_error_from_the_server_is_shown_beside_its_field_in_chinese(
    server: Live, tab: Tab
) -> None:
    token = await server.token("technician", SCOPE)
    await tab.sign_in(server.base, token, "#16/37.85000/112.57000")
    page = tab.page
    await page.click("#register-typed")
    await page.wait_for_selector("#place-form")
    await page.fill("#reg-name", "区域外登记")
    await page.fill("#reg-region", "140202")  # 大同: outside the token's scope
    await page.click("#place-submit")
    await expect(page.locator(".field-error[data-for='region_code']")).to_have_text(
        "不在您的区域范围内"
    )
    await expect(page.locator("#form-error")).to_have_text("区域 140202 不在您的区域范围 1401 内")
    await tab.shot("server-field-error")
    tab.errors[:] = [e for e in tab.errors if "403" not in e]  # the refused request itself
    assert tab.errors == []


async def test_a_scoped_token_opens_the_map_on_its_region_not_the_province(
    server: Live, tab: Tab
) -> None:
    await tab.sign_in(server.base, await server.token("admin"))
    province_zoom = await tab.page.evaluate("Number(location.hash.split('/')[0].slice(1))")
    await tab.page.evaluate("sessionStorage.clear()")
    await tab.sign_in(server.base, await server.token("planner", SCOPE))
    zoom, lat, lon = await tab.page.evaluate("location.hash.slice(1).split('/').map(Number)")
    assert zoom > province_zoom
    assert 37.4 < lat < 38.4 and 111.9 < lon < 113.2  # 太原市, not the middle of Shanxi
    await tab.shot("scoped-view")
    assert tab.errors == []


async def test_region_table_shows_a_dash_where_nothing_was_probed(server: Live, tab: Tab) -> None:
    conn = await asyncpg.connect(server.dsn)
    try:  # 小店区's cameras have been probed; the rest of 太原 has not
        await conn.execute("UPDATE cameras SET status = 'online' WHERE region_code = '140105'")
    finally:
        await conn.close()
    await tab.sign_in(server.base, await server.token("planner", SCOPE))
    page = tab.page
    row = page.locator("#region-table tr[data-region='140105']")
    await expect(row.locator("td.online-rate")).to_have_text("100.0%")
    others = page.locator("#region-table tbody tr:not([data-region='140105'])")
    assert await others.count() >= 3
    for cls in ("online-rate", "intact-rate"):
        assert set(await others.locator(f"td.{cls}").all_inner_texts()) == {"–"}
    legend = page.locator("#plan-legend")
    await expect(legend).to_contain_text("盲区优先级")
    await expect(legend).to_contain_text("覆盖率")
    assert await legend.locator(".swatch").count() == 10
    await tab.shot("region-table")
    assert tab.errors == []


async def test_a_rural_county_shows_its_village_coverage_after_a_run(
    server: Live, tab: Tab
) -> None:
    await tab.sign_in(server.base, await server.token("planner", SCOPE))
    page = tab.page
    rural = "140121"  # 清徐县: a county, so rural by the default policy
    await page.fill("#plan-region", rural)
    await page.fill("#plan-proposals", "0")
    await page.click("#run-coverage")
    row = page.locator(f"#region-table tr.run[data-region='{rural}']")
    await row.wait_for(timeout=90_000)
    # the same inputs again: the API hands back the finished run
    planner = await server.token("planner", SCOPE)
    again = {"region": rural, "proposals": 0}
    run = await server.api("POST", "/api/v1/coverage/runs", planner, json=again)
    assert run["reused"] and run["status"] == "done"
    raw = await server.api("GET", f"/api/v1/coverage/runs/{run['id']}/summary")
    [summary] = raw if isinstance(raw, list) else raw["items"]
    assert summary["zone"] == "rural" and summary["villages"] > 0
    share = summary["villages_covered"] / summary["villages"]
    await expect(row.locator("td.covered-share")).to_have_text(f"{share * 100:.1f}%")
    await tab.shot("rural-village-share")
    assert tab.errors == []


async def test_the_offline_map_names_counties_villages_and_junctions_at_street_zoom(
    server: Live, tab: Tab
) -> None:
    token = await server.token("technician", SCOPE)
    found = await server.api("GET", f"/api/v1/geodata/villages?region={SCOPE}&limit=1")
    [village] = found["features"]
    lon, lat = village["geometry"]["coordinates"]
    await tab.sign_in(server.base, token, f"#16/{lat:.5f}/{lon:.5f}")
    page = tab.page
    county = await server.api("GET", f"/api/v1/geodata/regions/at?lon={lon}&lat={lat}")
    await expect(page.locator(".region-label").first).to_be_visible()
    labels = await page.locator(".region-label").all_inner_texts()
    assert county["region"]["name"] in labels
    await page.wait_for_selector("#map[data-places]")
    name = village["properties"]["name"]
    await expect(page.locator(".place-label.village", has_text=name)).to_be_visible()
    assert await page.locator("path.place.village").count() >= 1
    help_ = await page.inner_text("#tiles-help")
    assert "CAMREG_MAP_TILES_URL" in help_ and "{z}/{x}/{y}" in help_
    await tab.shot("offline-street-zoom")
    await page.evaluate("sessionStorage.clear()")
    await tab.sign_in(server.base, token, "#10/37.85000/112.55000")
    await expect(page.locator(".region-label").first).to_be_visible()
    assert await page.locator("path.place").count() == 0  # a city view: outlines and names
    await tab.shot("offline-city-zoom")
    assert tab.errors == []


async def test_switching_language_keeps_the_open_camera_panel(server: Live, tab: Tab) -> None:
    token = await server.token("commander", SCOPE)
    view = await _street_view_of(server, token)
    await tab.sign_in(server.base, token, view)
    found = await server.api("GET", f"/api/v1/cameras?region={SCOPE}&limit=1", token=token)
    [cam] = found["items"]
    await _open_camera(tab, cam)
    await tab.page.click("#lang")
    await expect(tab.page.locator("#open-stream")).to_have_text("Open stream")
    await expect(tab.page.locator("#panel-name")).to_have_text(cam["name"])
    assert await tab.page.is_visible("#panel")
    await tab.shot("english-panel")
    await tab.page.click("#lang")
    await expect(tab.page.locator("#open-stream")).to_have_text("调阅视频")
    await expect(tab.page.locator("#panel-name")).to_have_text(cam["name"])
    assert tab.errors == []
