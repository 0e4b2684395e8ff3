"""Server-Sent Events of status changes, filtered by each listener's region scope.

Workers anywhere publish transitions with PostgreSQL NOTIFY (in the same transaction that
stores them); each API process LISTENs on one connection and fans out to its SSE clients. A
slow client gets a bounded queue and, when it overflows, a `lagged` event telling it to
re-read the status it missed instead of an unbounded backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from api.auth import READERS
from api.broadcast import Broadcaster
from api.routes import RouteTable, caller
from api.state import EVENTS
from health.store import status_channel

ROUTES = RouteTable()

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0


async def events_ctx(app: web.Application) -> AsyncIterator[None]:
    """One LISTEN connection per process, owned by the app's lifecycle."""
    from api.state import POOL, TOKENS

    hub = Broadcaster()
    app[EVENTS] = hub
    forget = app[TOKENS].on_revoke(hub.close_token)
    conn: asyncpg.Connection = await app[POOL].acquire()

    def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            hub.publish(json.loads(payload))
        except ValueError:
            log.warning("ignored a malformed status notification")

    channel = status_channel(await conn.fetchval("SELECT current_schema()"))
    await conn.add_listener(channel, on_notify)
    try:
        yield
    finally:
        forget()
        hub.close()
        with contextlib.suppress(Exception):
            await conn.remove_listener(channel, on_notify)
        await app[POOL].release(conn)


async def end_streams(app: web.Application) -> None:
    """End every open event stream when the server begins to stop (`on_shutdown`).

    aiohttp waits for running handlers before it runs the cleanup contexts, and a command
    centre's wall keeps its stream open for days: ended only by `events_ctx`'s cleanup, one
    open stream held `camreg serve` on SIGTERM or Ctrl-C until its shutdown timeout.
    """
    hub = app.get(EVENTS)
    if hub is not None:
        hub.close()


@ROUTES.route(
    "GET",
    "/api/v1/events",
    "Status changes in your region scope (Server-Sent Events)",
    READERS,
    responses={200: "text/event-stream"},
    tag="health",
)
async def events(request: web.Request) -> web.StreamResponse:
    actor = caller(request)
    hub = request.app[EVENTS]
    q = hub.subscribe(actor)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        await resp.write(b": connected\n\n")
        while True:
            try:
                event = await asyncio.wait_for(q.get(), HEARTBEAT_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if event is None:  # the server stops, or the caller's token was revoked
                break
            kind = event.pop("type", "status")
            data = json.dumps(event, ensure_ascii=False)
            await resp.write(f"event: {kind}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(q)
    return resp
