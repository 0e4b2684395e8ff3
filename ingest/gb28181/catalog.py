"""Assembling a Catalog response from the several MESSAGEs a device sends for one query.

A device answers one Query Catalog (one SN) with as many MESSAGEs as its channels need, each
repeating SumNum. Over UDP they arrive out of order, twice, or never. WVP-GB28181-pro's users
lose and duplicate channels at scale here, so: items are keyed by their DeviceID within
(device, SN) — a duplicate can never add a channel twice — the catalog is complete exactly
when SumNum distinct items arrived, and an idle timeout finishes it as *partial* with what
did arrive (the registry then must not mark absent channels removed).

A lower platform (type 200) hands up a whole city: hundreds of thousands to millions of
items. So the assembler never holds a catalog: it buffers at most `batch_items` items per
session and hands each full buffer over as a batch (`final=False`), marked with the query's
`generation`; the store writes each batch and, at the final one, itself counts the items
marked by that generation against SumNum to decide "complete" and "removed". What stays here
per session is counts and, for finishing as soon as SumNum distinct items arrived, the set of
item IDs seen (a 20-digit GB ID as an int: ~70 bytes each where its string, kept alive
after its batch left, was ~110), bounded for all sessions together by `max_tracked`
(500,000 IDs, ~35 MB): a session that finds no room stops tracking and ends at the idle
timeout instead, and the store's count still decides whether it was complete.

While the store falls behind, the server stops taking catalog MESSAGEs (backpressure: the
sender retransmits or waits) and `hold`s the assembler: no session ends idle while held,
and `resume` counts every session's idle timeout afresh, so a catalog is never recorded
partial because we ourselves made its sender wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

from ingest.gb28181.manscdp import CatalogItem, Manscdp

IDLE_TIMEOUT_S = 10.0
RETRANSMIT_GRACE_S = 4.0
"""RFC 3261's T2: a UDP sender retransmits a MESSAGE we left unanswered within this long."""
UNTRACKED_SETTLE_S = 2.0
"""Quiet after SumNum items of an untracked catalog that ends it (see `_quiet_s`)."""
MAX_SESSIONS = 10_000
BATCH_ITEMS = 2_000
MAX_TRACKED = 500_000
"""Item IDs remembered for SumNum completion, over all sessions (~100 bytes each)."""

# Generations of one process are increasing and start at the clock, so a later process's
# queries never reuse a mark left in the store by an earlier one.
_GENERATIONS = count(time.time_ns() // 1_000)


def _compact(item_id: str) -> int | str:
    """A GB ID as it is remembered for SumNum: 20 digits fit an int, half a string's size
    (the fixed length keeps leading zeros from making two IDs one)."""
    return int(item_id) if len(item_id) == 20 and item_id.isdigit() else item_id


@dataclass(slots=True)
class CatalogResult:
    device_id: str
    sn: int
    sum_num: int | None
    items: dict[str, CatalogItem]
    """This batch's items: the whole catalog when it fit one buffer (`streamed` False)."""
    complete: bool
    messages: int = 0
    repeated: int = 0
    started: float = 0.0
    finished: float = 0.0
    final: bool = True
    """The end of the catalog; False for a batch handed over while more items may come."""
    streamed: bool = False
    """Batches of this query were handed over before this one: only the store has them all."""
    generation: int = 0
    received: int = 0
    """Distinct items of the whole query so far (items counted, once no longer tracked)."""
    tracked: bool = True
    """False: no room was left to remember item IDs, so `complete` is False and only the
    store's count of the items it wrote says whether the catalog was complete."""

    @property
    def missing(self) -> int:
        return max(0, (self.sum_num or 0) - max(self.received, len(self.items)))


@dataclass(slots=True)
class _Session:
    result: CatalogResult
    future: asyncio.Future[CatalogResult]
    timer: asyncio.TimerHandle | None = None
    last: float = field(default=0.0)
    seen: set[int | str] | None = field(default_factory=set)
    """Item IDs of this query (None: no room left to track them; completion at idle)."""
    received: int = 0


class CatalogAssembler:
    """One session per (device ID, SN); bounded in sessions, buffered items per session and
    item IDs tracked over all sessions."""

    def __init__(
        self,
        on_done: Callable[[CatalogResult], None],
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_sessions: int = MAX_SESSIONS,
        batch_items: int = BATCH_ITEMS,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._on_done = on_done
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self.batch_items = max(1, batch_items)
        self.max_tracked = max_tracked
        self._sessions: dict[tuple[str, int], _Session] = {}
        self._tracked = 0
        self.refused_sessions = 0
        self.untracked_sessions = 0
        self.batches = 0
        self.held = False
        self._deferred_at = -1e9

    def __len__(self) -> int:
        return len(self._sessions)

    def expect(self, device_id: str, sn: int) -> asyncio.Future[CatalogResult] | None:
        """Open a session for a query we are sending; None when too many are open."""
        key = (device_id, sn)
        if key in self._sessions:
            return self._sessions[key].future
        if len(self._sessions) >= self.max_sessions:
            self.refused_sessions += 1
            return None
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        session = _Session(
            CatalogResult(
                device_id, sn, None, {}, False, started=now, generation=next(_GENERATIONS)
            ),
            loop.create_future(),
            last=now,
        )
        self._sessions[key] = session
        self._arm(key, session)
        return session.future

    def add(self, device_id: str, msg: Manscdp, *, open_if_unknown: bool = True) -> bool:
        """Take one Catalog response MESSAGE; False if it belongs to no session we can keep."""
        key = (device_id, msg.sn)
        session = self._sessions.get(key)
        if session is None:
            # Devices also push their catalog unasked after registering.
            if not open_if_unknown or self.expect(device_id, msg.sn) is None:
                return False
            session = self._sessions[key]
        result = session.result
        result.messages += 1
        if msg.sum_num is not None:
            result.sum_num = msg.sum_num
        for item in msg.items:
            seen_as = _compact(item.device_id)
            if session.seen is None:
                session.received += 1
            elif seen_as in session.seen:
                result.repeated += 1
            elif self._tracked < self.max_tracked:
                session.seen.add(seen_as)
                self._tracked += 1
                session.received += 1
            else:  # no room to remember IDs: count items, let the store count distinct ones
                self._untrack(session)
                self.untracked_sessions += 1
                session.received += 1
            result.items[item.device_id] = item  # a later copy is the newer state
            if len(result.items) >= self.batch_items:
                self._hand_over(session)
        session.last = time.monotonic()
        tracked = session.seen is not None
        if tracked and result.sum_num is not None and session.received >= result.sum_num:
            self._finish(key, complete=True)
        else:
            self._arm(key, session, self._quiet_s(session))
        return True

    def _quiet_s(self, session: _Session) -> float:
        """How long a session may stay silent before it ends.

        Untracked (beyond the ID budget: a province's catalog), every item is counted, a
        repeat too, so SumNum counted items are most likely the end but not surely: the
        session then ends after `UNTRACKED_SETTLE_S` of quiet (a late item still joins it)
        and the store counts the distinct items. The idle timeout there (40 s) added that
        much to every big catalog's end.
        """
        result = session.result
        if (
            session.seen is None
            and result.sum_num is not None
            and session.received >= result.sum_num
        ):
            return min(self.idle_timeout_s, UNTRACKED_SETTLE_S)
        return self.idle_timeout_s

    def _untrack(self, session: _Session) -> None:
        if session.seen is not None:
            self._tracked -= len(session.seen)
            session.seen = None

    def _hand_over(self, session: _Session) -> None:
        """A full buffer goes to the store now; the session keeps only counts."""
        result = session.result
        batch = CatalogResult(
            result.device_id, result.sn, result.sum_num, result.items, False,
            messages=result.messages, repeated=result.repeated, started=result.started,
            finished=time.monotonic(), final=False, streamed=True,
            generation=result.generation, received=session.received,
        )  # fmt: skip
        result.items = {}
        result.streamed = True
        self.batches += 1
        self._on_done(batch)

    def _arm(self, key: tuple[str, int], session: _Session, after_s: float | None = None) -> None:
        if session.timer is not None:
            session.timer.cancel()
        loop = asyncio.get_running_loop()
        delay = self.idle_timeout_s if after_s is None else after_s
        session.timer = loop.call_later(delay, self._idle, key)

    def _idle(self, key: tuple[str, int]) -> None:
        session = self._sessions.get(key)
        if session is None:
            return
        if self.held:  # its sender is waiting for us, not silent
            session.timer = None
            return
        # what we left unanswered comes back within T2: silence counts only after that
        quiet_until = self._deferred_at + RETRANSMIT_GRACE_S + self._quiet_s(session)
        now = time.monotonic()
        if now < quiet_until:
            self._arm(key, session, quiet_until - now)
            return
        self._finish(key, complete=False)

    def deferred(self) -> None:
        """A catalog MESSAGE was left unanswered (backpressure): its sender will retransmit."""
        self._deferred_at = time.monotonic()

    def hold(self) -> None:
        """Backpressure is on: the senders wait for us, so no session may end idle."""
        self.held = True

    def resume(self) -> None:
        """Backpressure is off: every session's idle timeout counts from now (and from the
        retransmissions of what was left unanswered; see `_idle`)."""
        self.held = False
        now = time.monotonic()
        for key, session in self._sessions.items():
            session.last = now
            self._arm(key, session, self._quiet_s(session))

    def _finish(self, key: tuple[str, int], complete: bool) -> None:
        session = self._sessions.pop(key, None)
        if session is None:
            return
        if session.timer is not None:
            session.timer.cancel()
        result = session.result
        result.complete = complete
        result.finished = time.monotonic()
        result.received = session.received
        result.tracked = session.seen is not None
        self._untrack(session)
        if not session.future.done():
            session.future.set_result(result)
        self._on_done(result)

    def abandon(self, device_id: str, sn: int) -> None:
        """Forget a session whose query never reached the device (no partial result)."""
        session = self._sessions.pop((device_id, sn), None)
        if session is not None:
            self._untrack(session)
            if session.timer is not None:
                session.timer.cancel()

    def close(self) -> None:
        """Finish every open session as partial (server shutdown)."""
        for key in list(self._sessions):
            self._finish(key, complete=False)
