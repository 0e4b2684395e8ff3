"""Catalogs from SIPp devices: charsets that lie, and answers out of order, doubled, incomplete."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ingest.gb28181.server import SipServer
from tests.ingest.gb28181.peers import IPC_ID, NVR_ID, Recorder, Sipp

STREET = "迎泽大街"


async def registered_sipp(
    server: SipServer, recorder: Recorder, tmp_path: Path, **kwargs: object
) -> Sipp:
    sipp = await Sipp(tmp_path, server.port, "register.xml", **kwargs).start()  # type: ignore[arg-type]
    await asyncio.wait_for(recorder.registered.get(), 10)
    return sipp


@pytest.mark.parametrize(
    ("encoding", "declared"),
    [("gb2312", "UTF-8"), ("utf-8", "GB2312"), ("gb2312", "GB2312"), ("utf-8", "UTF-8")],
    ids=["gb2312-declared-utf8", "utf8-declared-gb2312", "gb2312-honest", "utf8-honest"],
)
async def test_catalog_names_decode_right_whatever_the_declared_charset(
    server: SipServer, recorder: Recorder, tmp_path: Path, encoding: str, declared: str
) -> None:
    sipp = await registered_sipp(
        server,
        recorder,
        tmp_path,
        ooc="ooc_catalog.xml",
        hold_ms=800,
        keys={
            "item_name": STREET.encode(encoding),
            "item_address": "太原市迎泽区".encode(encoding),
            "charset": declared,
        },
    )
    try:
        result = await asyncio.wait_for(server.query_catalog(IPC_ID), 10)
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    assert result.complete
    item = result.items[IPC_ID]
    assert item.name == STREET
    assert item.address == "太原市迎泽区"
    assert item.management_unit == STREET
    mislabelled = server.metrics()["mislabelled_charset"]
    assert mislabelled == (
        0 if encoding.upper().replace("-", "") in declared.replace("-", "") else 1
    )
    # the same result reached the registry side
    reported = await asyncio.wait_for(recorder.catalogs.get(), 5)
    assert reported.items[IPC_ID].name == STREET


async def test_catalog_item_carries_the_2022_info_fields(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await registered_sipp(server, recorder, tmp_path, ooc="ooc_catalog.xml")
    try:
        result = await asyncio.wait_for(server.query_catalog(IPC_ID), 10)
    finally:
        await sipp.stop()
    item = result.items[IPC_ID]
    assert (item.po_type, item.record_save_days) == (1, 90)
    assert (item.hfov, item.vfov, item.max_view_distance) == (62.5, 35.0, 120.0)
    assert (item.longitude, item.latitude) == (112.5489, 37.8706)
    assert (item.civil_code, item.parent_id, item.status) == ("140105", IPC_ID, "ON")
    assert item.ptz_type == 1
    assert item.mac == "00-11-22-33-44-55"
    assert item.install_time == "2024-05-01T00:00:00"
    assert item.problems == []


async def test_catalog_out_of_order_with_duplicate_and_missing_channel_is_partial(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await registered_sipp(
        server,
        recorder,
        tmp_path,
        device_id=NVR_ID,
        ooc="ooc_catalog_partial.xml",
        hold_ms=4000,
    )
    try:
        result = await asyncio.wait_for(server.query_catalog(NVR_ID), 10)
    finally:
        await sipp.stop()
    assert not result.complete
    assert result.sum_num == 4
    assert sorted(result.items) == [
        "34020000001320000101",
        "34020000001320000103",
        "34020000001320000104",
    ]
    assert result.repeated == 1
    assert result.missing == 1
    assert result.messages == 3
    assert server.metrics()["catalogs_partial"] == 1


async def test_ipc_over_tcp_registers_and_answers_the_catalog_on_its_own_connection(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await Sipp(
        tmp_path, server.port, "register.xml", ooc="ooc_catalog.xml", transport="t1", hold_ms=800
    ).start()
    try:
        reg, _ = await asyncio.wait_for(recorder.registered.get(), 10)
        assert reg.source.transport == "TCP"
        assert reg.target == reg.source
        result = await asyncio.wait_for(server.query_catalog(IPC_ID), 10)
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    assert result.complete
    assert list(result.items) == [IPC_ID]
