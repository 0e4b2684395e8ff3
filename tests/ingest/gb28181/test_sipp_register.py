"""SIPp devices register with digest against our server, keep alive and hand over catalogs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ingest.gb28181.server import SipServer
from tests.ingest.gb28181.peers import IPC_ID, Directory, Recorder, Sipp


async def test_ipc_registers_with_digest_then_keepalive_is_recorded(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await Sipp(tmp_path, server.port, "register.xml", hold_ms=200).start()
    try:
        reg, is_new = await asyncio.wait_for(recorder.registered.get(), 10)
        assert reg.device_id == IPC_ID
        assert is_new
        assert reg.source.port == sipp.port
        assert await asyncio.wait_for(recorder.keepalives.get(), 10) == IPC_ID
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    m = server.metrics()
    assert m["challenged"] == 1
    assert m["registered"] == 1
    assert m["keepalives"] == 1


async def test_register_with_wrong_password_gets_403(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await Sipp(
        tmp_path, server.port, "register_wrong_password.xml", password="not-the-password"
    ).start()
    try:
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    assert server.metrics()["wrong_password"] == 1
    assert server.registrar.live(IPC_ID) is None
    assert recorder.registered.empty()


async def test_unknown_device_gets_403_and_is_counted(server: SipServer, tmp_path: Path) -> None:
    stranger = "34020000001320009999"
    sipp = await Sipp(tmp_path, server.port, "register_unknown.xml", device_id=stranger).start()
    try:
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    assert server.metrics()["unknown_device"] == 1


async def test_out_of_scope_device_gets_403_and_is_counted(
    server: SipServer, directory: Directory, tmp_path: Path
) -> None:
    other = "11010000001320000001"
    directory.add(other, in_scope=False)
    sipp = await Sipp(tmp_path, server.port, "register_unknown.xml", device_id=other).start()
    try:
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    assert server.metrics()["out_of_scope"] == 1


async def test_malformed_hostile_and_oversized_bodies_get_400_and_are_counted(
    server: SipServer, recorder: Recorder, tmp_path: Path
) -> None:
    sipp = await Sipp(
        tmp_path,
        server.port,
        "register_malformed.xml",
        keys={"big": "x" * 40_000},
    ).start()
    try:
        assert await sipp.wait() == 0, sipp.logs()
    finally:
        await sipp.stop()
    m = server.metrics()
    assert m["malformed_body"] == 3  # not well-formed, DOCTYPE/ENTITY, no DeviceID
    assert m["oversized_body"] == 1
    assert m["unsupported_content_type"] == 1
    assert m["keepalives"] == 1  # the server kept serving the device
    assert await asyncio.wait_for(recorder.keepalives.get(), 5) == IPC_ID
