"""Shared fixtures: a real PostgreSQL for every test module, in a schema of its own.

`CAMREG_TEST_DATABASE_URL` names a server (CI: the PostgreSQL at 127.0.0.1:5432); without it
the tests start the embedded cluster under `.camreg/test-pg`, the same code path `make run`
uses. Either way the tests run: a missing database fails the run, it never skips it.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings
from camera_registry.store.embedded import EmbeddedPostgres
from camera_registry.store.tokens import Tokens
from camera_registry.urls import with_query

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "out"
TEST_KEY = base64.b64encode(b"k" * 32).decode()


# Tests that hand a database URL to another process or start a server: `camreg serve`, an app
# of their own under aiohttp's TestServer, or anything they `await ….start()` (SIPp peers, the
# cascade's SIP client, fake media servers). CI runs them a second time on the embedded
# database (`pytest -m embedded_db` without CAMREG_TEST_DATABASE_URL), whose DSN already
# carries a query and whose PostgreSQL is another build (pgserver: no libxml, no ICU): found
# by what they use, so a new one cannot be missed.
_BUILDS_URL_OR_SERVES = re.compile(
    r"schema_dsn|\bserve\(|camreg_serve|\"api\.cli\"|EmbeddedPostgres|with_query"
    r"|TestServer\(|create_app\(|(\bawait\s[^\n]*|\))\.start\(\)"
)
_LIVE_SERVER_FIXTURES = frozenset({"server", "seeded"})


@functools.cache
def _module_source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if _BUILDS_URL_OR_SERVES.search(_module_source(item.path)) or uses & _LIVE_SERVER_FIXTURES:
            item.add_marker(pytest.mark.embedded_db)


def schema_dsn(database_url: str, schema: str) -> str:
    """The DSN a subprocess (`camreg …`) uses to work in this module's schema; the URL may
    already carry a query (the embedded cluster's `?host=…&port=…`)."""
    return with_query(database_url, search_path=schema)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("CAMREG_TEST_DATABASE_URL")
    if url:
        yield url
        return
    pg = EmbeddedPostgres(ROOT / ".camreg" / "test-pg")
    yield pg.start()
    pg.stop()


@pytest.fixture(scope="module")
async def schema(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh schema for this test module, dropped afterwards."""
    name = f"t_{request.module.__name__.rsplit('.', 1)[-1][:40]}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("camreg"), secret_key=TEST_KEY)


@pytest.fixture(scope="module")
async def client(settings: Settings, database_url: str, schema: str) -> AsyncIterator[TestClient]:
    app = create_app(settings, Database(dsn=database_url, schema=schema))
    async with TestClient(TestServer(app)) as c:
        yield c


class Tok:
    """Bearer headers for tokens made on the fly."""

    def __init__(self, client: TestClient) -> None:
        from api.state import TOKENS

        self.tokens: Tokens = client.app[TOKENS]
        self.cache: dict[tuple[str, str | None], str] = {}

    async def __call__(self, role: str = "admin", region: str | None = None) -> dict[str, str]:
        key = (role, region)
        if key not in self.cache:
            _, secret = await self.tokens.create(
                Actor("test", Role.ADMIN), role=Role(role), name=f"{role}-{region}", region=region
            )
            self.cache[key] = secret
        return {"Authorization": f"Bearer {self.cache[key]}"}


@pytest.fixture(scope="module")
def auth(client: TestClient) -> Tok:
    return Tok(client)


def camera(**over: Any) -> dict[str, Any]:
    """A valid level-2 camera in 太原市小店区, overridable field by field."""
    body: dict[str, Any] = {
        "gb_id": "14010500001320000001",
        "name": "长风街与体育路交叉口东北角",
        "level": 2,
        "lon": 112.5650,
        "lat": 37.8120,
        "address": "山西省太原市小店区长风街",
        "azimuth": 45,
        "hfov": 62,
        "max_view_distance": 80,
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}
