"""A fresh SIP server per test on a free loopback port, with the registry side's stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ingest.gb28181.server import SipServer, SipServerConfig
from tests.ingest.gb28181.peers import DOMAIN, IPC_ID, NVR_ID, SERVER_ID, Directory, Recorder


@pytest.fixture
def directory() -> Directory:
    d = Directory()
    d.add(IPC_ID)
    d.add(NVR_ID)
    return d


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def config() -> SipServerConfig:
    return SipServerConfig(
        server_id=SERVER_ID,
        domain=DOMAIN,
        host="127.0.0.1",
        port=0,
        t1=0.1,
        catalog_idle_timeout_s=1.5,
        query_timeout_s=3.0,
        housekeeping_s=0.2,
        query_after_register=False,
    )


@pytest.fixture
async def server(
    config: SipServerConfig, directory: Directory, recorder: Recorder
) -> AsyncIterator[SipServer]:
    srv = SipServer(config, directory, recorder)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
