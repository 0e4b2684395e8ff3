"""SIPp devices register with digest against our server, keep alive and hand over catalogs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ingest.gb28181.server import SipServer
from tests.ingest.gb28181.peers import IPC_ID, Recorder, Sipp


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
