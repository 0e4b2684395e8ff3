"""Load shedding against real SIPp peers: while the server is behind, a new device's REGISTER
gets 503 + Retry-After, a registered device's keepalives still get 200, and retransmissions of
requests in hand never become work again.

"Behind" is made deterministic here, without timing: the registry side holds the password
lookups of a flood of booting devices, so their REGISTERs stay in hand (`shed_in_flight` of
them is the threshold), exactly as a slow database holds them at a registration wave.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ingest.gb28181 import manscdp
from ingest.gb28181.registrar import DeviceAccess
from ingest.gb28181.server import SipServer, SipServerConfig
from tests.ingest.gb28181.peers import IPC_ID, NVR_ID, Directory, Recorder, Sipp
from tests.ingest.gb28181.simdevice import SimDevice

FLOOD = [f"3402000000132000{i:04d}" for i in range(100, 108)]
IN_HAND = 4


@dataclass
class HeldDirectory(Directory):
    """The registry side with a slow path: lookups of `held` IDs wait until `release` is set."""

    held: set[str] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    lookups: Counter[str] = field(default_factory=Counter)

    async def lookup(self, device_id: str) -> DeviceAccess | None:
        self.lookups[device_id] += 1
        if device_id in self.held:
            await self.release.wait()
        return self.devices.get(device_id)


async def until(check: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    """Wait for a condition the peers will bring about (bounded; not a timing assertion)."""
    async with asyncio.timeout(within_s):
        while not check():  # noqa: ASYNC110 - the server's counters, polled
            await asyncio.sleep(0.05)
    assert check(), what


async def run(sipp: Sipp) -> int:
    await sipp.start()
    try:
        return await sipp.wait()
    finally:
        await sipp.stop()


async def test_new_devices_are_shed_with_503_while_registered_devices_keep_alive(
    config: SipServerConfig, recorder: Recorder, tmp_path: Path
) -> None:
    config.shed_in_flight = IN_HAND
    config.shed_admit_per_s = 0.0  # no newcomer admitted while behind: all shed
    config.shed_retry_after_s = (3, 7)
    directory = HeldDirectory()
    for device_id in (IPC_ID, NVR_ID, *FLOOD):
        directory.add(device_id)
    directory.held.update(FLOOD)
    server = SipServer(config, directory, recorder)
    await server.start()
    flood: Sipp | None = None
    try:
        # a device registered before the wave
        assert await run(Sipp(tmp_path, server.port, "register.xml", hold_ms=0)) == 0
        assert server.registrar.live(IPC_ID) is not None

        # the wave: 8 devices boot at once; 4 are taken in hand (their lookups held), and
        # from then on the server is behind: the others are shed
        inject = tmp_path / "flood.csv"
        inject.write_text("SEQUENTIAL\n" + "".join(f"{d};\n" for d in FLOOD))
        flood = Sipp(
            tmp_path,
            server.port,
            "register_flood.xml",
            extra=["-inf", str(inject), "-m", str(len(FLOOD)), "-r", "100"],
        )
        await flood.start()
        await until(lambda: server.metrics()["requests_in_flight"] == IN_HAND, "4 in hand")
        await until(lambda: server.counters["shed"] >= len(FLOOD) - IN_HAND, "the rest shed")
        # SIPp retransmits the REGISTERs in hand every 500 ms: absorbed, never work again
        await until(lambda: server.counters["retransmissions_absorbed"] >= IN_HAND, "retrans")

        # a new device now: 503 with a Retry-After of whole seconds, before any work
        shed_before = server.counters["shed"]
        newcomer = Sipp(tmp_path, server.port, "register_shed.xml", device_id=NVR_ID)
        assert await run(newcomer) == 0, newcomer.logs()
        assert server.counters["shed"] == shed_before + 1
        assert directory.lookups[NVR_ID] == 0

        # the registered device is served meanwhile: both keepalives answered 200
        keeper = Sipp(tmp_path, server.port, "keepalive.xml", device_id=IPC_ID)
        assert await run(keeper) == 0, keeper.logs()
        assert server.metrics()["requests_in_flight"] == IN_HAND  # still behind throughout

        in_hand = [d for d in FLOOD if directory.lookups[d]]
        assert len(in_hand) == IN_HAND
        assert all(directory.lookups[d] == 1 for d in in_hand)  # each looked up once only
        assert server.registrar.live(NVR_ID) is None

        # the wave passes: the shed device comes back and registers
        directory.release.set()
        await until(lambda: server.metrics()["requests_in_flight"] == 0, "caught up")
        again = Sipp(tmp_path, server.port, "register.xml", device_id=NVR_ID, hold_ms=0)
        assert await run(again) == 0, again.logs()
        assert server.registrar.live(NVR_ID) is not None
    finally:
        if flood is not None:
            await flood.stop()
        await server.stop()
    m = server.metrics()
    assert m["shed"] >= len(FLOOD) - IN_HAND + 1
    assert m["keepalives"] == 1 + 2 + 1  # register.xml, keepalive.xml (two), register.xml


async def test_a_registered_device_re_registering_is_never_shed(
    config: SipServerConfig, recorder: Recorder, tmp_path: Path
) -> None:
    config.shed_in_flight = 0  # behind all the time
    config.shed_admit_per_s = 0.0
    directory = Directory()
    directory.add(IPC_ID)
    server = SipServer(config, directory, recorder)
    await server.start()
    try:
        shed = Sipp(tmp_path, server.port, "register_shed.xml", device_id=IPC_ID)
        assert await run(shed) == 0, shed.logs()  # not registered yet: shed
        server.config.shed_in_flight = 1_000
        assert await run(Sipp(tmp_path, server.port, "register.xml", hold_ms=0)) == 0
        server.config.shed_in_flight = 0
        again = Sipp(tmp_path, server.port, "register.xml", hold_ms=0)
        assert await run(again) == 0, again.logs()  # registered: served though behind
    finally:
        await server.stop()
    assert server.counters["shed"] == 1
    assert server.counters["registered"] == 2


async def test_requests_that_waited_in_the_socket_shed_a_new_device_not_a_registered_one(
    config: SipServerConfig, directory: Directory, recorder: Recorder
) -> None:
    """The other signal: how long requests waited in the socket buffer (the kernel's arrival
    stamp). The process is made to stall with both requests waiting: they are read 0.4 s late,
    past `shed_wait_s`, so the new device is shed and the registered one is served."""
    config.shed_wait_s = 3_600.0  # not yet
    config.shed_after_s = 0.0  # shed at the first late read
    config.shed_admit_per_s = 0.0
    server = SipServer(config, directory, recorder)
    await server.start()
    old = await SimDevice(IPC_ID, server.port).open()
    new = await SimDevice(NVR_ID, server.port).open()
    try:
        assert (await old.register()).status == 200
        server.config.shed_wait_s = 0.25
        register = new.request("REGISTER", extra={"Expires": "3600"})
        keepalive = old.request("MESSAGE", body=manscdp.build_keepalive(7, IPC_ID))
        new.send(register)
        old.send(keepalive)
        time.sleep(0.4)  # noqa: ASYNC251 - the stall under test: the loop cannot read meanwhile
        shed = await new.response(20.0, to=register)
        assert shed.status == 503, shed
        assert (shed.headers.get("Retry-After") or "").isdigit()
        assert (await old.response(20.0, to=keepalive)).status == 200
    finally:
        old.close()
        new.close()
        await server.stop()
    assert server.counters["shed"] == 1
    assert server.registrar.live(NVR_ID) is None


async def test_while_behind_newcomers_are_still_admitted_at_the_admission_rate(
    config: SipServerConfig, directory: Directory, recorder: Recorder
) -> None:
    """A server kept behind by its registered devices alone must still let new ones in, at
    `shed_admit_per_s` (one per 1,000 s here: the first newcomer in, the next one shed)."""
    config.shed_in_flight = 0  # behind all the time
    config.shed_admit_per_s = 0.001
    server = SipServer(config, directory, recorder)
    await server.start()
    first = await SimDevice(IPC_ID, server.port).open()
    second = await SimDevice(NVR_ID, server.port).open()
    try:
        assert (await first.register()).status == 200
        shed = await second.register()
        assert shed.status == 503
    finally:
        first.close()
        second.close()
        await server.stop()
    assert server.counters["shed"] == 1


async def test_a_register_whose_lookup_is_too_slow_is_told_to_come_back(
    config: SipServerConfig, recorder: Recorder
) -> None:
    """The database is behind: the password lookup outlasts `register_deadline_s`, and the
    device gets 503 + Retry-After instead of silence for its 32 s of retransmissions."""
    config.register_deadline_s = 0.3
    directory = HeldDirectory()
    directory.add(IPC_ID)
    directory.held.add(IPC_ID)  # never released
    server = SipServer(config, directory, recorder)
    await server.start()
    dev = await SimDevice(IPC_ID, server.port).open()
    try:
        late = await dev.register()
        assert late.status == 503
        assert (late.headers.get("Retry-After") or "").isdigit()
        assert server.metrics()["requests_in_flight"] == 0  # given up, not left in hand
    finally:
        dev.close()
        await server.stop()
    assert server.counters["register_late"] == 1
    assert server.counters["shed"] == 0
