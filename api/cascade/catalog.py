"""The catalog we hand to an upper platform: items, the tree, paced batches.

A province holds 2.4 M cameras, so the answer to one Catalog query is never built in memory:
the push's membership is fixed once (the exact `SumNum`, every counted camera sent once), the
items read by key a page at a time in short statements (no snapshot held for minutes, see
`store.catalog_plan`), grouped into MESSAGEs of `catalog_group_size` items, and paced by a
token bucket per upstream so a UDP peer's socket buffer is not flooded. A bounded window of
MESSAGE transactions is in flight at once: waiting for each 200 before the next would make
the round trip, not the rate, the limit.

The tree: 行政区划 nodes from our cameras' region codes, then the business groups (215) and
virtual organisations (216) our devices' catalogs carry, each once, parents before children,
every ParentID and BusinessGroupID pointing at an item we send (or at us, the root).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import asyncpg

from camera_registry.gbid import PROVINCES
from camera_registry.store import upstreams as store

MAX_BODY = 30 * 1024
"""Close a MESSAGE early past this many bytes: the receiving side caps MANSCDP bodies at 32 KiB."""

ON_STATUSES = frozenset({"online", "degraded"})


# U+0001-U+001F but TAB, LF, CR: XML 1.0 cannot carry them, not even as character references
_CONTROLS = dict.fromkeys(c for c in range(1, 32) if c not in (9, 10, 13))


def _el(name: str, value: object) -> str:
    """Escaped as `store.upstreams.xml_text` escapes in SQL (a CR kept as a reference, since a
    parser would read a raw one as LF), so a NOTIFY's item is the catalog's byte for byte."""
    text = escape(str(value).translate(_CONTROLS), {"\r": "&#x0d;"})
    return f"<{name}>{text}</{name}>"


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


def camera_item(
    rec: Any, parent_id: str, *, event: str | None = None, business_group: str | None = None
) -> str:
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
        *([_el("BusinessGroupID", business_group)] if business_group else []),
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


@dataclass(frozen=True, slots=True)
class Group:
    """A 215/216 item as we send it: links resolved to items of this push or to the root."""

    item_id: str
    name: str
    parent_id: str
    business_group_id: str | None

    def xml(self) -> str:
        parts = [_el("DeviceID", self.item_id), _el("Name", self.name)]
        parts.append(_el("ParentID", self.parent_id))
        if self.business_group_id is not None and self.business_group_id != self.item_id:
            parts.append(_el("BusinessGroupID", self.business_group_id))
        return "<Item>" + "".join(parts) + "</Item>\r\n"


def resolve_groups(rows: Sequence[Any], root: str) -> list[Group]:
    """Links a tree can be built from, whatever the devices said.

    A group's ParentID becomes the first of its (`/`-separated) parents that we send, else
    its business group, else `root`; a 216's BusinessGroupID is kept only when that 215 is
    sent; a cycle is cut at the root. Parents come before their children in the result.
    """
    ids = {r["item_id"] for r in rows}
    business = {r["item_id"] for r in rows if r["type_code"] == "215"}
    parent: dict[str, str] = {}
    group_of: dict[str, str | None] = {}
    names: dict[str, str] = {}
    for r in rows:
        gid = r["item_id"]
        names[gid] = r["name"] or gid
        bg = gid if r["type_code"] == "215" else r["business_group_id"]
        bg = bg if bg in business else None
        group_of[gid] = bg
        if r["type_code"] == "215":
            parent[gid] = root
            continue
        up = [p for p in (r["parent_id"] or "").split("/") if p in ids and p != gid]
        parent[gid] = up[0] if up else (bg if bg is not None else root)
    depth: dict[str, int] = {}
    for gid in parent:
        path: list[str] = []
        cur = gid
        while cur in parent and cur not in depth and cur not in path:
            path.append(cur)
            cur = parent[cur]
        if cur in path:  # a cycle in the devices' data: cut it here
            parent[cur] = root
            path = path[: path.index(cur) + 1]
            cur = root
        base = depth.get(cur, -1)
        for i, node in enumerate(reversed(path)):
            depth[node] = base + 1 + i
    order = sorted(parent, key=lambda g: (depth[g], g))
    return [Group(g, names[g], parent[g], group_of[g]) for g in order]


def business_group_of(groups: Sequence[Group]) -> list[str | None]:
    """For each group, the business group a camera filed under it belongs to."""
    return [g.business_group_id for g in groups]


PAGE = 2000
"""Cameras read per statement: a page is milliseconds; MESSAGEs are paced far slower."""


async def catalog_batches(
    conn: asyncpg.Connection,
    regions: Sequence[str],
    parent_id: str,
    group_size: int,
    *,
    page: int = PAGE,
) -> AsyncGenerator[tuple[int, list[str]], None]:
    """(SumNum, items) batches: the civil-code tree, the 215/216 groups, every camera once.

    The caller holds `conn` (outside any transaction) until the iterator is closed. The
    first value yielded carries SumNum with the first batch; every batch holds at most
    `group_size` items and stays under `MAX_BODY` bytes.
    """
    cameras, codes, group_rows = await store.catalog_plan(conn, regions)
    ahead: asyncio.Task[list[asyncpg.Record]] | None = None
    try:
        nodes = civil_nodes(codes)
        names = await store.region_names(conn, nodes) if nodes else {}
        groups = resolve_groups(group_rows, parent_id)
        total = cameras + len(nodes) + len(groups)
        batch: list[str] = []
        size = 0

        def full(extra: int) -> bool:
            return len(batch) >= group_size or (batch != [] and size + extra > MAX_BODY)

        tree = [civil_item(code, names.get(code)) for code in nodes] + [g.xml() for g in groups]
        for xml in tree:
            if full(len(xml)):
                yield total, batch
                batch, size = [], 0
            batch.append(xml)
            size += len(xml)
        group_ids = [g.item_id for g in groups]
        group_business = business_group_of(groups)

        def fetch(after: str) -> asyncio.Task[list[asyncpg.Record]]:
            return asyncio.create_task(
                store.catalog_page(conn, parent_id, after, page, group_ids, group_business)
            )

        # the next page is read while this one is sent: a page read in series with the
        # pacing would leave the pacer's bucket full and idle for its duration
        ahead = fetch("")
        while ahead is not None:
            rows = await ahead
            ahead = fetch(rows[-1]["gb_id"]) if len(rows) == page else None
            for rec in rows:
                xml = rec["item"] + "\r\n"
                if full(len(xml)):
                    yield total, batch
                    batch, size = [], 0
                batch.append(xml)
                size += len(xml)
        if batch or total == 0:
            yield total, batch
    finally:
        if ahead is not None:  # closed early: the connection must be idle before it is reused
            ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncpg.PostgresError):
                await ahead
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
            await store.drop_catalog_plan(conn)


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
            contextlib.aclosing(catalog_batches(conn, regions, parent_id, group_size)) as batches,
        ):
            async for total, batch in batches:
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
