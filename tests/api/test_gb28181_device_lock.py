"""The per-device turns of the catalog writers: the middle batches of one streamed catalog
are written together, a catalog's end and a NOTIFY alone and in the order they asked."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from api.gb28181 import Bridge
from api.state import GB_DEVICES
from camera_registry.config import Gb28181Settings


def _bridge(client: TestClient) -> Bridge:
    return Bridge(client.app[GB_DEVICES], Gb28181Settings(server_id="14000000002000000001"))


async def test_middle_batches_share_a_device_and_its_end_waits_for_them(
    client: TestClient,
) -> None:
    bridge = _bridge(client)
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def write(name: str, shared: bool) -> None:
        async with bridge._devices(["D"], frozenset({"D"}) if shared else frozenset()):
            order.append(f"{name}+")
            first_in.set()
            await release.wait()
            order.append(f"{name}-")

    a = asyncio.create_task(write("a", True))
    await first_in.wait()
    end = asyncio.create_task(write("end", False))
    await asyncio.sleep(0)
    b = asyncio.create_task(write("b", True))  # asked after the end: waits behind it
    await asyncio.sleep(0.01)
    assert order == ["a+"]
    release.set()
    await asyncio.gather(a, end, b)
    assert order == ["a+", "a-", "end+", "end-", "b+", "b-"]
    assert bridge._locks == {}


async def test_two_shared_holders_run_together(client: TestClient) -> None:
    bridge = _bridge(client)
    inside = 0
    most = 0

    async def write() -> None:
        nonlocal inside, most
        async with bridge._devices(["D"], frozenset({"D"})):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(write(), write())
    assert most == 2


async def test_batches_over_several_devices_are_served_in_one_order(client: TestClient) -> None:
    """Requests for every device of a batch are queued at once: a batch of (D, E) and one
    of (E, D)-in-sorted-order never deadlock, and a cancelled wait gives its turn back."""
    bridge = _bridge(client)
    hold = asyncio.Event()

    async def write(devices: list[str]) -> None:
        async with bridge._devices(sorted(devices)):
            await hold.wait()

    first = asyncio.create_task(write(["D", "E"]))
    second = asyncio.create_task(write(["E", "D"]))
    cancelled = asyncio.create_task(write(["E"]))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0)
    hold.set()
    async with asyncio.timeout(5):
        await asyncio.gather(first, second)
    assert cancelled.cancelled()
    assert bridge._locks == {}
