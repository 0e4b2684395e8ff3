"""A discovery scan run as a background job: sweep, interrogate, fill the inbox as it goes.

The API starts it; the job owns nothing but its own flusher. Found devices reach the inbox in
small batches while the sweep runs (so the inbox and the job's counts move together), and the
job always ends in a final state, even when the server stops under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from camera_registry.actor import Actor
from camera_registry.store.db import CONNECTION_LOST, while_connection_lost
from camera_registry.store.inbox import DiscoveryScans, Inbox
from ingest.errors import IngestError
from ingest.onvif.discover import Progress, discover

log = logging.getLogger(__name__)
FLUSH_S = 0.5


async def run_scan(
    scans: DiscoveryScans,
    inbox: Inbox,
    actor: Actor,
    scan_id: str,
    request: Mapping[str, Any],
    *,
    discovery_port: int = 3702,
) -> None:
    """Run one scan to completion and record how it ended; raises only CancelledError, or a
    connection error when the database stays unreachable past the retry bound."""
    progress = Progress()
    pending: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def flush() -> None:
        batch = pending[:]
        del pending[: len(batch)]
        try:
            if batch:
                await inbox.upsert(actor, batch, scan_id=scan_id)
        except BaseException:
            pending[:0] = batch  # kept for the next flush: an upsert is idempotent
            raise
        await scans.progress(
            scan_id,
            probed=progress.probed,
            found=progress.found,
            interrogated=progress.interrogated,
        )

    async def flusher() -> None:
        # A database restart mid-scan must not freeze the job's progress while the sweep goes
        # on: a flush that cannot reach the database is tried again at the next tick.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_S)
            try:
                await flush()
            except CONNECTION_LOST as exc:
                if stop.is_set():
                    raise
                log.warning("discovery scan %s: progress not saved yet (%s)", scan_id, exc)

    username, password = await scans.credentials(scan_id)
    await scans.started(scan_id)
    task = asyncio.create_task(flusher(), name=f"scan-{scan_id}-flush")
    status, error = "done", None
    try:
        try:
            await discover(
                interfaces=request.get("interfaces", []),
                cidrs=request.get("cidrs", []),
                ports=request.get("ports", []),
                username=username,
                password=password,
                discovery_port=discovery_port,
                timeout=float(request.get("timeout", 3.0)),
                rate=float(request.get("rate", 500.0)),
                concurrency=int(request.get("concurrency", 16)),
                on_device=pending.append,
                progress=progress,
            )
        finally:
            stop.set()
            with contextlib.suppress(*CONNECTION_LOST):
                await task  # its last flush is repeated below until the database answers
    except asyncio.CancelledError:
        await asyncio.shield(
            scans.finish(
                scan_id,
                "cancelled",
                failed=progress.failed,
                error="the server stopped during the scan; found devices are in the inbox",
            )
        )
        raise
    except (IngestError, OSError, ValueError) as exc:
        status, error = "failed", str(exc)[:500]
    except Exception as exc:
        log.exception("discovery scan %s failed", scan_id)
        status, error = "failed", type(exc).__name__
    # The sweep is over; what it found and how it ended reach the database even across a
    # restart (bounded: a database gone for longer leaves the job to the reaper).
    what = f"discovery scan {scan_id}"
    await while_connection_lost(what, flush)
    await while_connection_lost(
        what, lambda: scans.finish(scan_id, status, failed=progress.failed, error=error)
    )
