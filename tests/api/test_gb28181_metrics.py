"""GB/T 28181 on /metrics and per device: real peers (SIPp devices and our UDP device
simulator) register well and badly, send broken, oversized and undecodable bodies, NOTIFY
events, stray requests and a flood; every outcome is a counted series on /metrics, every SIP
4xx we sent has a counted reason, and each device's charset (really used vs declared) is
recorded, shown and used for what we send it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.state import SIP
from camera_registry.config import Settings
from ingest.gb28181.message import SipRequest
from tests.api.gb_app import SERVER_ID, gb_app
from tests.conftest import Tok
from tests.ingest.gb28181.peers import Sipp
from tests.ingest.gb28181.simdevice import SimDevice

GOOD = "14010500001320000011"
WRONG_PW = "14010500001320000012"
FOREIGN = "11010500001320000013"  # Beijing: outside our province
SIM = "14010500001320000014"
NAME = "迎泽大街"


@pytest.fixture(scope="module")
async def gb_client(
    settings: Settings, database_url: str, schema: str
) -> AsyncIterator[TestClient]:
    app = gb_app(
        settings, database_url, schema, catalog_idle_timeout_s=1.5, query_on_register=False
    )
    async with TestClient(TestServer(app)) as c:
        yield c


async def scrape(client: TestClient) -> dict[str, float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    out: dict[str, float] = {}
    for line in (await resp.text()).splitlines():
        if line.startswith("camreg_gb28181_") and not line.startswith("camreg_gb28181_upstream"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def run_sipp(sipp: Sipp) -> None:
    await sipp.start()
    try:
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()


def catalog_body(device_id: str, name: bytes, declared: str, sn: int = 7) -> bytes:
    return (
        b'<?xml version="1.0" encoding="' + declared.encode() + b'"?>\r\n<Response>'
        b"<CmdType>Catalog</CmdType><SN>" + str(sn).encode() + b"</SN><DeviceID>"
        + device_id.encode() + b"</DeviceID><SumNum>1</SumNum><DeviceList Num=\"1\"><Item>"
        b"<DeviceID>" + device_id.encode() + b"</DeviceID><Name>" + name + b"</Name>"
        b"<CivilCode>140105</CivilCode><Longitude>112.55</Longitude><Latitude>37.87</Latitude>"
        b"<Status>ON</Status><Info><PoType>3</PoType></Info></Item></DeviceList></Response>"
    )  # fmt: skip


async def test_every_registration_body_and_request_outcome_is_a_series_and_every_4xx_has_a_reason(
    gb_client: TestClient, tmp_path: Path
) -> None:
    port = gb_client.app[SIP].port
    keys: dict[str, str | bytes] = {"server_id": SERVER_ID, "domain": SERVER_ID[:10]}
    before = await scrape(gb_client)
    assert before['camreg_gb28181_registrations_total{outcome="ok"}'] == 0
    assert (
        before['camreg_gb28181_sip_responses_4xx_total{reason="wrong_password",status="403"}'] == 0
    )
    # SIPp: a wrong password, a device outside our regions, then one sending broken bodies
    await run_sipp(
        Sipp(
            tmp_path,
            port,
            "register_wrong_password.xml",
            device_id=WRONG_PW,
            password="not-the-password",
            keys=keys,
        )
    )
    await run_sipp(Sipp(tmp_path, port, "register_unknown.xml", device_id=FOREIGN, keys=keys))
    await run_sipp(
        Sipp(
            tmp_path,
            port,
            "register_malformed.xml",
            device_id=GOOD,
            keys={**keys, "big": "x" * 40_000},
        )
    )
    # our simulator: undecodable bytes, NOTIFY events, stray requests
    sim = await SimDevice(SIM, port).open()
    try:
        assert (await sim.register()).status == 200
        garbage = (
            b"<Notify><CmdType>Keepalive</CmdType><SN>9</SN><DeviceID>" + SIM.encode()
            + b"</DeviceID><Status>\xff\xfe\xff</Status></Notify>"
        )  # fmt: skip
        refused = await sim.ask(sim.request("MESSAGE", body=garbage))
        assert refused.status == 400 and "UTF-8" in refused.reason
        events = (
            b"<Notify><CmdType>Catalog</CmdType><SN>10</SN><DeviceID>" + SIM.encode()
            + b"</DeviceID><SumNum>2</SumNum><DeviceList Num=\"2\">"
            b"<Item><DeviceID>14010500001320000015</DeviceID><Event>ADD</Event>"
            b"<Name>A</Name><CivilCode>140105</CivilCode></Item>"
            b"<Item><DeviceID>14010500001320000016</DeviceID><Event>OFF</Event></Item>"
            b"</DeviceList></Notify>"
        )  # fmt: skip
        assert (await sim.ask(sim.request("MESSAGE", body=events))).status == 200
        wrong_event = sim.request("NOTIFY", body=events, extra={"Event": "presence"})
        assert (await sim.ask(wrong_event)).status == 489
        assert (await sim.ask(sim.request("BYE"))).status == 481
        assert (await sim.ask(sim.request("PUBLISH"))).status == 405
        # a flood from one source: beyond its budget, requests are dropped unanswered
        flood = await SimDevice("14010500001320000017", port).open()
        try:
            for _ in range(400):
                flood.send(flood.request("OPTIONS"))
            await asyncio.sleep(0.5)
        finally:
            flood.close()
    finally:
        sim.close()
    after = await scrape(gb_client)

    def delta(series: str) -> float:
        return after[series] - before.get(series, 0.0)

    assert delta('camreg_gb28181_registrations_total{outcome="ok"}') == 2  # SIPp + simulator
    assert (
        delta('camreg_gb28181_registrations_total{outcome="challenge"}') == 3
    )  # not the foreign one
    assert delta('camreg_gb28181_registrations_total{outcome="wrong_password"}') == 1
    assert delta('camreg_gb28181_registrations_total{outcome="out_of_scope"}') == 1
    assert after['camreg_gb28181_devices{state="registered"}'] == 2
    assert after['camreg_gb28181_devices{state="online"}'] == 2
    assert delta("camreg_gb28181_keepalives_total") == 1
    assert delta('camreg_gb28181_bodies_refused_total{reason="malformed_xml"}') == 3
    assert delta('camreg_gb28181_bodies_refused_total{reason="oversized"}') == 1
    assert delta('camreg_gb28181_bodies_refused_total{reason="content_type"}') == 1
    assert delta('camreg_gb28181_bodies_refused_total{reason="charset"}') == 1
    assert delta('camreg_gb28181_notify_events_total{event="ADD"}') == 1
    assert delta('camreg_gb28181_notify_events_total{event="OFF"}') == 1
    assert delta('camreg_gb28181_notify_events_total{event="DEL"}') == 0
    assert delta('camreg_gb28181_rate_limited_total{reason="source"}') > 0
    assert delta('camreg_gb28181_rate_limited_total{reason="platform"}') == 0
    assert "camreg_gb28181_shed_total" in after  # load shedding is a series, zero or not
    for series, status in (
        ('{reason="wrong_password",status="403"}', 1),
        ('{reason="out_of_scope",status="403"}', 1),
        ('{reason="malformed_body",status="400"}', 3),
        ('{reason="oversized_body",status="400"}', 1),
        ('{reason="charset_refused",status="400"}', 1),
        ('{reason="unsupported_content_type",status="415"}', 1),
        ('{reason="bad_event",status="489"}', 1),
        ('{reason="no_dialog",status="481"}', 1),
        ('{reason="method_not_allowed",status="405"}', 1),
    ):
        assert delta("camreg_gb28181_sip_responses_4xx_total" + series) == status, series
    unspecified = [k for k in after if "4xx" in k and 'reason="unspecified"' in k]
    assert unspecified == [], "a 4xx was sent without a counted reason"
    assert re.search(r"camreg_gb28181_invites_total\{outcome=\"ok\"\} 0", await
                     (await gb_client.get("/metrics")).text())  # fmt: skip


async def test_a_devices_charset_is_what_its_bytes_are_not_what_they_declare_and_we_answer_in_it(
    gb_client: TestClient, tmp_path: Path
) -> None:
    tok = Tok(gb_client)
    headers = await tok("technician")
    device = "14010500001320000021"
    sim = await SimDevice(device, gb_client.app[SIP].port).open()
    try:
        assert (await sim.register()).status == 200
        assert (await sim.keepalive()).status == 200  # ASCII, declared GB2312
        async with asyncio.timeout(10):  # recorded after the answer
            while True:
                resp = await gb_client.get(f"/api/v1/gb28181/devices/{device}", headers=headers)
                body = await resp.json()
                if resp.status == 200 and body["charset"] is not None:
                    break
                await asyncio.sleep(0.1)
        assert (body["charset"], body["charset_declared"], body["charset_sniffed"]) == (
            "gb18030", "GB2312", False
        )  # fmt: skip
        # UTF-8 bytes labelled GB2312: decoded as UTF-8, recorded as such
        catalog = catalog_body(device, NAME.encode("utf-8"), "GB2312")
        assert (await sim.ask(sim.request("MESSAGE", body=catalog))).status == 200
        assert (await sim.keepalive(2)).status == 200  # ASCII again: changes nothing
        async with asyncio.timeout(10):
            while True:
                resp = await gb_client.get(f"/api/v1/gb28181/devices/{device}", headers=headers)
                body = await resp.json()
                if body["charset"] == "utf-8":
                    break
                await asyncio.sleep(0.1)
        assert (body["charset_declared"], body["charset_sniffed"]) == ("GB2312", True)
        # what we send it now is UTF-8, whatever it declares
        query = asyncio.create_task(
            gb_client.post(f"/api/v1/gb28181/devices/{device}/catalog", headers=await tok("admin"))
        )
        async with asyncio.timeout(10):
            while True:
                msg = await sim.proto.inbox.get()
                if isinstance(msg, SipRequest) and b"<CmdType>Catalog</CmdType>" in msg.body:
                    break
        assert b'encoding="UTF-8"' in msg.body, msg.body[:80]
        sim.answer_catalog_with("", 0)
        sim.answer(msg, ("127.0.0.1", gb_client.app[SIP].port))
        resp = await query
        assert resp.status == 200, await resp.text()
    finally:
        sim.close()


async def test_a_sipp_device_sending_gb2312_labelled_utf8_is_recorded_as_gb18030(
    gb_client: TestClient, tmp_path: Path
) -> None:
    tok = Tok(gb_client)
    admin = await tok("admin")
    device = "14010500001320000031"
    sipp = await Sipp(
        tmp_path,
        gb_client.app[SIP].port,
        "register.xml",
        ooc="ooc_catalog.xml",
        device_id=device,
        hold_ms=8000,
        keys={
            "server_id": SERVER_ID,
            "domain": SERVER_ID[:10],
            "item_name": NAME.encode("gb2312"),
            "charset": "UTF-8",
        },
    ).start()
    try:
        async with asyncio.timeout(10):
            while True:  # the SIP server registers it on its own task
                if gb_client.app[SIP].registrar.live(device) is not None:
                    break
                await asyncio.sleep(0.05)
        resp = await gb_client.post(f"/api/v1/gb28181/devices/{device}/catalog", headers=admin)
        assert resp.status == 200, await resp.text()
        async with asyncio.timeout(10):
            while True:
                body = await (
                    await gb_client.get(f"/api/v1/gb28181/devices/{device}", headers=admin)
                ).json()
                if body["charset_sniffed"] and body["channels"]:  # both written after the 200
                    break
                await asyncio.sleep(0.1)
        assert (body["charset"], body["charset_declared"]) == ("gb18030", "UTF-8")
        assert [c["name"] for c in body["channels"]] == [NAME]
        assert gb_client.app[SIP].charset_for(device) == "GB2312"
    finally:
        await sipp.stop()
