"""Backpressure on catalog intake: a lower platform (our own cascade client, a city registry)
pushes a catalog many times larger than the province's buffer while the province's store is
held back (its catalog table locked by another transaction, as a long VACUUM FULL or a slow
disk would). The province stops answering the catalog MESSAGEs (UDP: the city retransmits)
or answers them late (TCP), keeps only its bounded backlog, and resumes when the store
catches up: every item stored once, the catalog complete — not ended as partial by its idle
timeout while we made the sender wait — and the backpressure counted.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.cascade.client import UpstreamClient
from api.state import BOX, POOL, SIP
from camera_registry.config import Settings
from tests.api.cascade.peers import LOCAL_ID, PASSWORD, UPPER_ID, upstream_settings
from tests.conftest import TEST_KEY, Tok, camera

CAMERAS = 120
BUFFER = 10  # items the province buffers per catalog before the store gets them
BACKLOG = 20  # items waiting for the store beyond which intake pauses
IDLE_S = 1.0  # the province's catalog idle timeout: far shorter than the store is held


def gb_id(i: int) -> str:
    return f"1401050000132{i:07d}"


async def _wait(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll the province's state (its counters and database), kept by the peers, not us."""
    try:
        async with asyncio.timeout(60):
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not reached within 60 s") from None


@pytest.fixture
async def schemas(database_url: str) -> AsyncIterator[tuple[str, str]]:
    names = (f"t_city_{uuid.uuid4().hex[:8]}", f"t_province_{uuid.uuid4().hex[:8]}")
    conn = await asyncpg.connect(database_url)
    try:
        for name in names:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        yield names
        for name in names:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_a_catalog_pushed_faster_than_the_store_writes_is_paced_not_lost(
    database_url: str, schemas: tuple[str, str], tmp_path: Path, transport: str
) -> None:
    city_schema, province_schema = schemas
    city_app = create_app(
        Settings(data_dir=tmp_path / "city", secret_key=TEST_KEY, gb28181={"enabled": False}),
        Database(dsn=database_url, schema=city_schema),
    )
    province_app = create_app(
        Settings(
            data_dir=tmp_path / "province",
            secret_key=TEST_KEY,
            gb28181={
                "server_id": UPPER_ID,
                "sip_host": "127.0.0.1",
                "sip_port": 0,
                "password": PASSWORD,
                "regions": ["14"],
                "catalog_idle_timeout_s": IDLE_S,
                "catalog_batch_items": BUFFER,
                "catalog_backlog_items": BACKLOG,
                "platform_rate_per_source": 100_000,
            },
        ),
        Database(dsn=database_url, schema=province_schema),
        run_sip=True,
    )
    async with (
        TestClient(TestServer(province_app)) as province,
        TestClient(TestServer(city_app)) as city,
    ):
        headers = await Tok(city)("admin")
        for i in range(CAMERAS):
            body = camera(gb_id=gb_id(i), name=f"体育路{i}号", lon=112.56 + i / 10_000)
            resp = await city.post("/api/v1/cameras", json=body, headers=headers)
            assert resp.status == 201, await resp.text()
        sip = province.app[SIP]
        ppool: asyncpg.Pool = province.app[POOL]
        lock = await asyncpg.connect(database_url, server_settings={"search_path": province_schema})
        tx = lock.transaction()
        await tx.start()
        stalled = True
        await lock.execute("LOCK TABLE gb_catalog_items IN EXCLUSIVE MODE")  # the store stalls
        client = UpstreamClient(
            str(uuid.uuid4()),
            upstream_settings(sip.port, transport=transport, catalog_group_size=4),
            city.app[POOL],
            city.app[BOX],
            t1=0.5,  # RFC 3261's: an unanswered MESSAGE is retransmitted for 32 s, then given up
        )
        await client.start()
        try:
            unanswered = f"catalog_messages_{'deferred' if transport == 'udp' else 'held'}"

            async def paused() -> bool:
                return sip.counters["catalog_backpressure"] >= 1 and sip.counters[unanswered] >= 1

            await _wait(paused, "backpressure engaged")
            # the store stays stalled for longer than the idle timeout: the catalog must not
            # end as partial meanwhile (its sender is waiting for us, not silent)
            await asyncio.sleep(IDLE_S * 2.5)
            assert sip.catalog_backlog < BACKLOG + BUFFER + 4  # only the bounded backlog
            assert sip.counters["catalogs_partial"] == 0
            await tx.commit()
            stalled = False

            async def done() -> bool:
                state = await ppool.fetchval(
                    "SELECT catalog_complete FROM gb_devices WHERE device_id = $1", LOCAL_ID
                )
                return state is not None

            await _wait(done, "catalog finished")
        finally:
            await client.stop()
            if stalled:  # a wait failed: let the store go before closing
                await tx.rollback()
            await lock.close()
        assert await ppool.fetchval(
            "SELECT catalog_complete FROM gb_devices WHERE device_id = $1", LOCAL_ID
        )
        rows = await ppool.fetch("SELECT gb_id FROM cameras")
        assert sorted(r["gb_id"] for r in rows) == [gb_id(i) for i in range(CAMERAS)]  # once each
        items = await ppool.fetchval(
            "SELECT count(*) FROM gb_catalog_items WHERE device_id = $1 AND NOT removed", LOCAL_ID
        )
        assert items == CAMERAS + 3  # the cameras and the civil-code nodes 14, 1401, 140105
        assert sip.counters["catalogs_partial"] == 0
        assert sip.counters["catalog_backpressure"] >= 1
        assert sip.catalog_backlog == 0
        assert client.timings["last_catalog"]["error"] is None
        metrics = await (await province.get("/metrics")).text()
        engaged = re.search(
            r'^camreg_gb28181_catalog_backpressure_total\{what="engaged"\} (\S+)$', metrics, re.M
        )
        assert engaged is not None and float(engaged.group(1)) >= 1
        assert re.search(r"^camreg_gb28181_catalog_backlog_items 0\.0$", metrics, re.M)
