"""Two instances of our own service on loopback: the city registry cascades to the province's.

The province runs its GB/T 28181 device-access side (SIP server on its own port, own schema);
the city's admin adds the province as an upstream over the API. The province accepts the city
as a lower platform (type 200), asks its catalog and gets the city's cameras into its registry
with positions and levels; a live INVITE province → city reaches the city's media server,
whose RTP arrives at the province's media port (a real UDP socket). A commander at the province
then asks for a stream link of a city camera over HTTP: the province's media server opens an RTP
port, the province INVITEs the city, the city's media server sends there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import Database, create_app
from api.state import GB_PLAYER, POOL, SIP
from camera_registry.config import Relay, Settings
from tests.api.cascade.peers import (
    CITY_CAMERAS,
    LOCAL_ID,
    OUTSIDE,
    PASSWORD,
    UPPER_ID,
    seed,
    wait_for,
)
from tests.conftest import TEST_KEY, Tok, camera
from tests.fake_zlm import SECRET, FakeZlm, RtpSink

RELAY_SECRET = "relay-hook-secret-0123456789"


async def _fresh_schema(database_url: str, what: str) -> AsyncIterator[str]:
    name = f"t_{what}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def province_schema(database_url: str) -> AsyncIterator[str]:
    async for name in _fresh_schema(database_url, "province"):
        yield name


@pytest.fixture
async def city_schema(database_url: str) -> AsyncIterator[str]:
    async for name in _fresh_schema(database_url, "city"):
        yield name


@pytest.mark.parametrize("charset", ["GB2312", "UTF-8"])
async def test_province_registry_holds_the_city_cameras_and_invites_through_the_city(
    database_url: str,
    city_schema: str,
    province_schema: str,
    tmp_path: Path,
    charset: str,
) -> None:
    zlm = await FakeZlm(packets=10).start()
    province_zlm = await FakeZlm().start()
    relay = Relay(
        name="zlm",
        urls={"flv": "http://127.0.0.1:8081/rtp/{stream_key}.live.flv?sign={sign}"},
        secret=RELAY_SECRET,
    )
    city_settings = Settings(
        data_dir=tmp_path / "city",
        secret_key=TEST_KEY,
        gb28181={
            "enabled": False,
            "media": {"api_url": zlm.url, "secret": SECRET, "rtp_ip": "127.0.0.1"},
        },
    )
    province_settings = Settings(
        data_dir=tmp_path / "province",
        secret_key=TEST_KEY,
        gb28181={
            "server_id": UPPER_ID,
            "sip_host": "127.0.0.1",
            "sip_port": 0,
            "password": PASSWORD,
            "regions": ["14"],
            "charset": charset,
            "media": {"api_url": province_zlm.url, "secret": SECRET, "rtp_ip": "127.0.0.1"},
        },
        relays=(relay,),
    )
    city_app = create_app(city_settings, Database(dsn=database_url, schema=city_schema))
    province_app = create_app(
        province_settings, Database(dsn=database_url, schema=province_schema), run_sip=True
    )
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(RtpSink, local_addr=("127.0.0.1", 0))
    try:
        async with (
            TestClient(TestServer(province_app)) as province,
            TestClient(TestServer(city_app)) as city,
        ):
            auth = Tok(city)
            await seed(city, auth)
            sip = province.app[SIP]
            resp = await city.post(
                "/api/v1/gb28181/upstreams",
                json={
                    "name": "province",
                    "server_id": UPPER_ID,
                    "host": "127.0.0.1",
                    "port": sip.port,
                    "password": PASSWORD,
                    "local_id": LOCAL_ID,
                    "regions": ["1401"],
                    "charset": charset,
                    "catalog_group_size": 4,
                    "notify_interval_s": 0.2,
                },
                headers=await auth("admin"),
            )
            assert resp.status == 201, await resp.text()
            uid = (await resp.json())["id"]
            ppool = province.app[POOL]
            want = {c["gb_id"]: c for c in CITY_CAMERAS}

            async def province_cameras() -> dict[str, asyncpg.Record]:
                rows = await ppool.fetch("SELECT gb_id, name, level, lon, lat FROM cameras")
                return {r["gb_id"]: r for r in rows}

            async def catalog_done() -> bool:
                done = await ppool.fetchval(
                    "SELECT catalog_complete FROM gb_devices WHERE device_id = $1", LOCAL_ID
                )
                return done is True

            got: dict[str, asyncpg.Record] = {}
            for _ in range(300):
                got = await province_cameras()
                if len(got) >= len(want) and await catalog_done():
                    break
                await asyncio.sleep(0.1)
            assert set(got) == set(want)  # every city camera once, nothing outside its regions
            assert OUTSIDE["gb_id"] not in got
            for gb_id, cam in want.items():
                assert got[gb_id]["name"] == cam["name"]  # 迎泽大街… intact in either charset
                assert got[gb_id]["level"] == cam["level"]
                assert abs(got[gb_id]["lon"] - cam["lon"]) < 1e-6
                assert abs(got[gb_id]["lat"] - cam["lat"]) < 1e-6
            tree = await ppool.fetch(
                "SELECT item_id FROM gb_catalog_items WHERE device_id = $1 AND type_code = ''",
                LOCAL_ID,
            )
            assert {r["item_id"] for r in tree} == {"14", "1401", "140105", "140106"}
            assert await catalog_done()
            status = await sip.query(LOCAL_ID, "DeviceStatus")
            assert (status.fields["Online"], status.fields["Status"]) == ("ONLINE", "OK")
            info = await sip.query(LOCAL_ID, "DeviceInfo")
            assert info.fields["Channel"] == str(len(want))

            # the province watches a city camera: INVITE province → city → media server
            channel = CITY_CAMERAS[0]["gb_id"]
            await city.app[POOL].execute(
                "UPDATE cameras SET streams = $2 WHERE gb_id = $1",
                channel,
                {"main": "rtsp://127.0.0.1:8554/city1"},
            )
            rtp_port = transport.get_extra_info("sockname")[1]
            session = await sip.invite(LOCAL_ID, channel, media_ip="127.0.0.1", media_port=rtp_port)
            await asyncio.wait_for(sink.got.wait(), 5)
            assert sink.ssrcs() == {int(session.ssrc)}
            await sip.bye(session)
            state = await (
                await city.get(f"/api/v1/gb28181/upstreams/{uid}", headers=await auth("admin"))
            ).json()
            await wait_for(lambda: zlm.called("stopSendRtp") != [], what="media leg stopped")
            assert state["state"] == "registered"
            assert state["counters"]["views_started"] == 1
            assert state["timings"]["last_catalog"]["items_sent"] == len(want) + 4

            # a commander at the province asks for a link over HTTP: province → city → media
            camera_id = await ppool.fetchval("SELECT id FROM cameras WHERE gb_id = $1", channel)
            commander = await Tok(province)("commander")
            resp = await province.get(
                f"/api/v1/cameras/{camera_id}/stream?protocol=flv", headers=commander
            )
            assert resp.status == 200, await resp.text()
            key = f"{channel}_main"
            link = await resp.json()
            assert link["url"].startswith(f"http://127.0.0.1:8081/rtp/{key}.live.flv?sign=")
            (opened,) = province_zlm.called("openRtpServer")
            assert opened["stream_id"] == key
            _, leg = province_zlm.rtp_servers[key]
            rtp_in = leg.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            await asyncio.wait_for(leg.got.wait(), 5)  # the city's media reached our RTP port
            down = province.app[GB_PLAYER].sessions[key]  # the province's INVITE to the city
            assert {p[8:12] for p in leg.packets} == {int(down.ssrc).to_bytes(4, "big")}
            city_send = zlm.called("startSendRtp")[-1]
            assert (city_send["dst_url"], city_send["dst_port"]) == ("127.0.0.1", str(rtp_in))
            assert zlm.called("addStreamProxy")[-1]["url"] == "rtsp://127.0.0.1:8554/city1"
            hook = await province.post(
                f"/api/v1/hooks/zlm/on_stream_none_reader?secret={RELAY_SECRET}",
                json={"app": "rtp", "stream": key, "schema": "rtsp"},
            )
            assert await hook.json() == {"code": 0, "close": True}  # BYE province → city
            await wait_for(lambda: len(zlm.called("stopSendRtp")) == 2, what="city leg stopped")
            assert [c["stream_id"] for c in province_zlm.called("closeRtpServer")] == [key]

            # the province subscribes; the city's changes arrive as NOTIFY ADD/UPDATE/DEL
            admin = await auth("admin")
            await sip.subscribe_catalog(LOCAL_ID)
            await asyncio.sleep(0.3)
            added = camera(gb_id="14010500001320000201", name="新建路口", lon=112.57, lat=37.81)
            resp = await city.post("/api/v1/cameras", json=added, headers=admin)
            assert resp.status == 201, await resp.text()
            renamed = CITY_CAMERAS[1]["gb_id"]
            city_rows = {
                r["gb_id"]: r
                for r in await city.app[POOL].fetch("SELECT id, gb_id, version FROM cameras")
            }
            resp = await city.patch(
                f"/api/v1/cameras/{city_rows[renamed]['id']}",
                json={"name": "迎泽大街改名"},
                headers={**admin, "If-Match": f'"{city_rows[renamed]["version"]}"'},
            )
            assert resp.status == 200, await resp.text()
            removed = CITY_CAMERAS[2]["gb_id"]
            resp = await city.delete(
                f"/api/v1/cameras/{city_rows[removed]['id']}",
                headers={**admin, "If-Match": f'"{city_rows[removed]["version"]}"'},
            )
            assert resp.status == 204, await resp.text()

            async def notified() -> bool:
                got = await province_cameras()
                gone = await ppool.fetchval(
                    "SELECT removed FROM gb_catalog_items WHERE item_id = $1", removed
                )
                return (
                    added["gb_id"] in got
                    and got[renamed]["name"] == "迎泽大街改名"
                    and gone is True
                )

            for _ in range(300):
                if await notified():
                    break
                await asyncio.sleep(0.1)
            assert await notified()

            # the city removes the upstream while the province watches: BYE from below
            again = await sip.invite(LOCAL_ID, channel, media_ip="127.0.0.1", media_port=rtp_port)
            assert again.dialog.call_id in sip.sessions
            resp = await city.delete(f"/api/v1/gb28181/upstreams/{uid}", headers=admin)
            assert resp.status == 204
            await wait_for(lambda: again.dialog.call_id not in sip.sessions, what="BYE from below")
            assert len(zlm.called("stopSendRtp")) == 3
    finally:
        transport.close()
        await zlm.stop()
        await province_zlm.stop()
