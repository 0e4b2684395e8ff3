"""The web map's admin view of the cascade: an upper platform that refuses our password shows
its SIP status and reason on the map page, for an unscoped admin only."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from tests.api.cascade.peers import LOCAL_ID, UPPER_ID, UpperPlatform

from .conftest import Live, Tab


async def test_admin_sees_upper_platform_refusing_registration_with_its_sip_status(
    server: Live, tab: Tab, tmp_path: Path
) -> None:
    upper = await UpperPlatform(tmp_path, password="not-what-we-send").start()
    try:
        await server.api(
            "POST",
            "/api/v1/gb28181/upstreams",
            json={
                "name": "省厅平台",
                "server_id": UPPER_ID,
                "host": "127.0.0.1",
                "port": upper.port,
                "password": "ours-1234",
                "local_id": LOCAL_ID,
            },
        )
        await tab.sign_in(server.base, server.admin)
        item = tab.page.locator("#upstreams li[data-name='省厅平台']")
        await expect(item).to_be_visible()
        for _ in range(30):  # the card shows what the API knows when it is drawn: ask again
            await tab.page.click("#upstreams-refresh")
            if await item.locator(".up-error").count():
                break
            await tab.page.wait_for_timeout(300)
        await expect(item.locator(".up-state")).to_have_text("注册失败")
        await expect(item.locator(".up-error")).to_contain_text("REGISTER · SIP 403 · Forbidden")
        await tab.shot("upstream-refused")

        scoped = await server.token("admin", "1401")
        await tab.page.evaluate("sessionStorage.clear()")
        await tab.sign_in(server.base, scoped)
        await expect(tab.page.locator("#admin")).to_have_count(0)
    finally:
        await upper.stop()
    assert tab.errors == []
