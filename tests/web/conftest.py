"""A live `camreg serve --demo` on the test database (its own schema) and Debian's Chromium
driven headless by Playwright. Nothing of ours is mocked; all traffic stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from ..conftest import schema_dsn
from ..live import camreg_serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Live:
    base: str
    admin: str
    dsn: str
    tokens: dict[tuple[str, str | None], str] = field(default_factory=dict)

    async def token(self, role: str, region: str | None = None) -> str:
        key = (role, region)
        if key not in self.tokens:
            body: dict[str, Any] = {"role": role, "name": f"web-{role}-{region}"}
            if region:
                body["region"] = region
            data = await self.api("POST", "/api/v1/tokens", json=body)
            self.tokens[key] = data["token"]
        return self.tokens[key]

    async def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.base + path, headers=headers, **kw) as resp,
        ):
            assert resp.status < 300, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json()


@contextlib.contextmanager
def serve(database_url: str, schema: str, data: Path, **env_extra: str) -> Iterator[Live]:
    """`camreg serve --demo` (400 seeded Shanxi cameras) on a free loopback port."""
    dsn = schema_dsn(database_url, schema)
    with camreg_serve(dsn, data, env_extra) as live:
        yield Live(live.base, live.admin, dsn)


@pytest.fixture(scope="module")
def server(
    database_url: str, schema: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    with serve(database_url, schema, tmp_path_factory.mktemp("serve")) as live:
        yield live


@pytest.fixture(scope="module")
async def seeded(server: Live) -> Live:
    """Give the demo cameras a mix of statuses, as probes would, so clusters have colours."""
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute(
            """UPDATE cameras SET status = (ARRAY['online','online','online','degraded',
                   'offline','unknown','flapping'])[1 + abs(hashtext(gb_id)) % 7]"""
        )
    finally:
        await conn.close()
    return server


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


class Shots:
    """Screenshots of each step, numbered, in the test's tmp output folder."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page, self.folder, self.n = page, folder, 0

    async def __call__(self, step: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{step}.png"
        await self.page.screenshot(path=str(path))
        return path


@dataclass
class Tab:
    page: Page
    shot: Shots
    errors: list[str]

    async def sign_in(self, base: str, token: str, hash_: str = "") -> None:
        await self.page.goto("about:blank")  # a real load, even when only the hash differs
        await self.page.goto(base + "/" + hash_)
        await self.page.fill("#token", token)
        await self.page.click("#signin-btn")
        await self.page.wait_for_selector("body[data-ready='1']")
        await self.page.wait_for_selector("#map[data-mode]")

    async def mode(self) -> str:
        return str(await self.page.get_attribute("#map", "data-mode"))

    async def settle(self) -> None:
        """Wait until the cameras layer has answered for the current view (the page keeps a
        status stream open, so "network idle" never comes)."""
        await asyncio.sleep(0.5)  # a move animates for 0.25 s before the layer is asked
        await self.page.wait_for_selector("#map[data-mode]:not([data-busy])")


@pytest.fixture
async def tab(browser: Browser, tmp_path: Path) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text} at {msg.location.get('url')}")

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    try:
        yield Tab(page, Shots(page, tmp_path), errors)
    finally:
        await context.close()
