"""A catalog queried after registering that ends partial is queried once more, never again:
under load a device gives up the rest of its catalog after 32 s of unanswered retransmissions,
and without a second query those channels would wait for its next registration."""

from __future__ import annotations

import asyncio

from ingest.gb28181.server import SipServer, SipServerConfig
from tests.ingest.gb28181.peers import IPC_ID, Directory, Recorder
from tests.ingest.gb28181.simdevice import SimDevice

CHANNEL = "34020000001310000001"
ITEM = (
    f"<Item><DeviceID>{CHANNEL}</DeviceID><Name>Gate</Name><ParentID>{IPC_ID}</ParentID>"
    "<Status>ON</Status></Item>"
)


async def test_a_partial_catalog_after_registering_is_queried_once_more(
    config: SipServerConfig, directory: Directory, recorder: Recorder
) -> None:
    config.query_after_register = True
    config.query_timeout_s = 0.5  # DeviceInfo: this device answers only catalogs
    server = SipServer(config, directory, recorder)
    await server.start()
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        assert (await dev.register()).status == 200
        dev.answer_catalog_with(ITEM, 2)  # says 2 items, sends 1: partial every time
        first = await asyncio.wait_for(recorder.catalogs.get(), 10)
        second = await asyncio.wait_for(recorder.catalogs.get(), 10)
    finally:
        dev.close()
        await server.stop()
    assert not first.complete and not second.complete
    assert first.sn != second.sn  # a new query, not a repeat of the first answer
    assert list(second.items) == [CHANNEL]
    assert server.counters["catalogs_requeried"] == 1
    assert server.counters["catalogs_partial"] == 2
