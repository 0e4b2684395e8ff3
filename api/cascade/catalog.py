"""The catalog we hand to an upper platform: items, the civil-code tree, paced batches.

A province holds 2.4 M cameras, so the answer to one Catalog query is never built in memory:
the exact `SumNum` is counted and the rows streamed from a cursor inside one REPEATABLE READ
transaction (same snapshot, so every item is sent once and the count is exact), grouped into
MESSAGEs of `catalog_group_size` items, and paced by a token bucket per upstream so a UDP
peer's socket buffer is not flooded. A bounded window of MESSAGE transactions is in flight at
once: waiting for each 200 before the next would make the round trip, not the rate, the limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import asyncpg

from camera_registry.gbid import PROVINCES
from camera_registry.store import upstreams as store

MAX_BODY = 30 * 1024
"""Close a MESSAGE early past this many bytes: the receiving side caps MANSCDP bodies at 32 KiB."""

ON_STATUSES = frozenset({"online", "degraded"})


def _el(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def civil_nodes(region_codes: Sequence[str]) -> list[str]:
    """The 行政区划 nodes (2/4/6-digit civil codes) above a set of 6-digit region codes, sorted."""
    nodes: set[str] = set()
    for code in region_codes:
        nodes.add(code[:2])
        if code[2:4] != "00":
            nodes.add(code[:4])
            if code[4:6] != "00":
                nodes.add(code)
    return sorted(nodes, key=lambda c: (len(c), c))


def civil_parent(code: str) -> str | None:
    return code[: len(code) - 2] if len(code) > 2 else None


def civil_item(code: str, name: str | None) -> str:
    """A civil-code node of the tree: DeviceID is the code itself (GB/T 28181-2016 §A.2.4.4)."""
    label = name or (PROVINCES.get(code) if len(code) == 2 else None) or code
    parts = [_el("DeviceID", code), _el("Name", label)]
    parent = civil_parent(code)
    if parent is not None:
        parts.append(_el("ParentID", parent))
    return "<Item>" + "".join(parts) + "</Item>\r\n"


def _num(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else ""


def camera_item(rec: Any, parent_id: str, *, event: str | None = None) -> str:
    """One camera with the 2016 fields and the 2022 `<Info>` fields (WGS-84 positions)."""
    status = "ON" if rec["status"] in ON_STATUSES else "OFF"
    parts = [
        _el("DeviceID", rec["gb_id"]),
        _el("Name", rec["name"]),
        _el("Manufacturer", rec["vendor"] or ""),
        _el("Model", rec["model"] or ""),
        _el("Owner", rec["owner"] or ""),
        _el("CivilCode", rec["region_code"]),
        _el("Address", rec["address"] or ""),
        _el("Parental", 0),
        _el("ParentID", parent_id),
        _el("SafetyWay", 0),
        _el("RegisterWay", 1),
        _el("Secrecy", 0),
    ]
    if rec["ip"] is not None:
        parts.append(_el("IPAddress", rec["ip"]))
    if rec["onvif_port"] is not None:
        parts.append(_el("Port", rec["onvif_port"]))
    parts.append(_el("Status", status))
    if rec["lon"] is not None and rec["lat"] is not None:
        parts += [_el("Longitude", _num(rec["lon"])), _el("Latitude", _num(rec["lat"]))]
    if event:
        parts.append(_el("Event", event))
    info = [_el("PoType", rec["level"])]
    if rec["record_days"] is not None:
        info.append(_el("RecordSaveDays", rec["record_days"]))
    installed = rec["installed_at"]
    if isinstance(installed, dt.date):
        info.append(_el("InstallTime", installed.isoformat() + "T00:00:00"))
    if rec["owner"]:
        info.append(_el("ManagementUnit", rec["owner"]))
    if rec["contact"]:
        info.append(_el("ContactInfo", rec["contact"]))
    for tag, column in (
        ("HorizontalFieldAngle", "hfov"),
        ("VerticalFieldAngle", "vfov"),
        ("MaxViewDistance", "max_view_distance"),
    ):
        if rec[column] is not None:
            info.append(_el(tag, f"{rec[column]:g}"))
    if rec["mac"]:
        info.append(_el("MAC", rec["mac"]))
    parts.append("<Info>" + "".join(info) + "</Info>")
    return "<Item>" + "".join(parts) + "</Item>\r\n"


class Pacer:
    """A token bucket in items per second; `take(n)` waits until n items may go."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self.tokens = self.burst
        self.last = time.monotonic()

    async def take(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= n or (n > self.burst and self.tokens >= self.burst):
                self.tokens -= n
                return
            await asyncio.sleep(max(0.001, (min(n, self.burst) - self.tokens) / self.rate))


@dataclass(slots=True)
class CatalogPush:
    """What one answer to a Catalog query did (for counters, the API and the benchmark)."""

    sum_num: int = 0
    items_sent: int = 0
    messages: int = 0
    seconds: float = 0.0
    error: str | None = None


Sender = Callable[[str, int, int], Awaitable[None]]
"""`send(items_xml, item_count, sum_num)`: one Response MESSAGE; raises on a refusal/timeout."""


async def catalog_batches(
    conn: asyncpg.Connection,
    regions: Sequence[str],
    parent_id: str,
    group_size: int,
) -> AsyncIterator[tuple[int, list[str]]]:
    """(SumNum, items) batches: first the civil-code tree, then every camera once.

    The caller holds a REPEATABLE READ transaction on `conn`. The first value yielded
    carries SumNum with the first batch; every batch holds at most `group_size` items and
    stays under `MAX_BODY` bytes.
    """
    cameras, codes = await store.catalog_counts(conn, regions)
    nodes = civil_nodes(codes)
    names = await store.region_names(conn, nodes) if nodes else {}
    total = cameras + len(nodes)
    batch: list[str] = []
    size = 0

    def full(extra: int) -> bool:
        return len(batch) >= group_size or (batch != [] and size + extra > MAX_BODY)

    for code in nodes:
        xml = civil_item(code, names.get(code))
        if full(len(xml)):
            yield total, batch
            batch, size = [], 0
        batch.append(xml)
        size += len(xml)
    async for item in store.catalog_items(conn, regions, parent_id):
        xml = item + "\r\n"
        if full(len(xml)):
            yield total, batch
            batch, size = [], 0
        batch.append(xml)
        size += len(xml)
    if batch or total == 0:
        yield total, batch


async def push_catalog(
    pool: asyncpg.Pool,
    regions: Sequence[str],
    parent_id: str,
    group_size: int,
    pacer: Pacer,
    send: Sender,
    *,
    window: int = 16,
) -> CatalogPush:
    """Answer one Catalog query: stream, pace and send; stop at the first refused MESSAGE."""
    result = CatalogPush()
    started = time.monotonic()
    slots = asyncio.Semaphore(window)
    in_flight: set[asyncio.Task[None]] = set()
    failure: list[BaseException] = []

    async def one(items: str, count: int, total: int) -> None:
        try:
            await send(items, count, total)
            result.items_sent += count
            result.messages += 1
        except Exception as exc:  # recorded and stops the push; never silent
            failure.append(exc)
        finally:
            slots.release()

    try:
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            async for total, batch in catalog_batches(conn, regions, parent_id, group_size):
                result.sum_num = total
                if failure:
                    break
                await pacer.take(max(1, len(batch)))
                await slots.acquire()
                if failure:
                    slots.release()
                    break
                task = asyncio.create_task(one("".join(batch), len(batch), total))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()
        result.seconds = time.monotonic() - started
    if failure:
        result.error = str(failure[0]) or type(failure[0]).__name__
    return result
