"""Fan-out of status events to SSE listeners, each filtered by its region scope."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from camera_registry.actor import Actor

QUEUE = 1000


class Broadcaster:
    def __init__(self) -> None:
        self._subs: dict[asyncio.Queue[dict[str, Any] | None], Actor] = {}

    def subscribe(self, actor: Actor) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
        self._subs[q] = actor
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subs.pop(q, None)

    def publish(self, event: dict[str, Any]) -> None:
        region = str(event.get("region_code") or "")
        for q, actor in list(self._subs.items()):
            if not actor.covers(region):
                continue
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        q.get_nowait()
                q.put_nowait({"type": "lagged"})

    def close_token(self, token_id: str) -> None:
        """End the streams of a revoked token: a revoked token must not keep listening."""
        for q, actor in list(self._subs.items()):
            if actor.token_id == token_id:
                self._subs.pop(q, None)
                _end(q)

    def close(self) -> None:
        for q in list(self._subs):
            _end(q)
        self._subs.clear()


def _end(q: asyncio.Queue[dict[str, Any] | None]) -> None:
    """Tell the stream reading `q` to end, even if its queue is full (the backlog is moot)."""
    try:
        q.put_nowait(None)
    except asyncio.QueueFull:
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                q.get_nowait()
        q.put_nowait(None)
