"""Assembling a Catalog response from the several MESSAGEs a device sends for one query.

A device answers one Query Catalog (one SN) with as many MESSAGEs as its channels need, each
repeating SumNum. Over UDP they arrive out of order, twice, or never. WVP-GB28181-pro's users
lose and duplicate channels at scale here, so: items are keyed by their DeviceID within
(device, SN) — a duplicate can never add a channel twice — the catalog is complete exactly
when SumNum distinct items arrived, and an idle timeout finishes it as *partial* with what
did arrive (the registry then must not mark absent channels removed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.gb28181.manscdp import CatalogItem, Manscdp

IDLE_TIMEOUT_S = 10.0
MAX_SESSIONS = 10_000
MAX_ITEMS = 500_000
"""A lower platform (type 200) may hand up a whole city: hundreds of thousands of channels."""


@dataclass(slots=True)
class CatalogResult:
    device_id: str
    sn: int
    sum_num: int | None
    items: dict[str, CatalogItem]
    complete: bool
    messages: int = 0
    repeated: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def missing(self) -> int:
        return max(0, (self.sum_num or 0) - len(self.items))


@dataclass(slots=True)
class _Session:
    result: CatalogResult
    future: asyncio.Future[CatalogResult]
    timer: asyncio.TimerHandle | None = None
    last: float = field(default=0.0)


class CatalogAssembler:
    """One session per (device ID, SN); bounded in sessions and items per session."""

    def __init__(
        self,
        on_done: Callable[[CatalogResult], None],
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_sessions: int = MAX_SESSIONS,
        max_items: int = MAX_ITEMS,
    ) -> None:
        self._on_done = on_done
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self.max_items = max_items
        self._sessions: dict[tuple[str, int], _Session] = {}
        self.refused_sessions = 0
        self.dropped_items = 0

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
            CatalogResult(device_id, sn, None, {}, False, started=now),
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
            if item.device_id in result.items:
                result.repeated += 1
                result.items[item.device_id] = item  # the later copy is the newer state
            elif len(result.items) >= self.max_items:
                self.dropped_items += 1
            else:
                result.items[item.device_id] = item
        session.last = time.monotonic()
        if result.sum_num is not None and len(result.items) >= result.sum_num:
            self._finish(key, complete=True)
        else:
            self._arm(key, session)
        return True

    def _arm(self, key: tuple[str, int], session: _Session) -> None:
        if session.timer is not None:
            session.timer.cancel()
        loop = asyncio.get_running_loop()
        session.timer = loop.call_later(self.idle_timeout_s, self._finish, key, False)

    def _finish(self, key: tuple[str, int], complete: bool) -> None:
        session = self._sessions.pop(key, None)
        if session is None:
            return
        if session.timer is not None:
            session.timer.cancel()
        result = session.result
        result.complete = complete
        result.finished = time.monotonic()
        if not session.future.done():
            session.future.set_result(result)
        self._on_done(result)

    def abandon(self, device_id: str, sn: int) -> None:
        """Forget a session whose query never reached the device (no partial result)."""
        session = self._sessions.pop((device_id, sn), None)
        if session is not None and session.timer is not None:
            session.timer.cancel()

    def close(self) -> None:
        """Finish every open session as partial (server shutdown)."""
        for key in list(self._sessions):
            self._finish(key, complete=False)
