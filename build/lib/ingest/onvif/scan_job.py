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
    """Run one scan to completion; never raises except CancelledError."""
    progress = Progress()
    pending: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def flush() -> None:
        batch = pending[:]
        del pending[: len(batch)]
        if batch:
            await inbox.upsert(actor, batch, scan_id=scan_id)
        await scans.progress(
            scan_id,
            probed=progress.probed,
            found=progress.found,
            interrogated=progress.interrogated,
        )

    async def flusher() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_S)
            await flush()

    username, password = await scans.credentials(scan_id)
    await scans.started(scan_id)
    task = asyncio.create_task(flusher(), name=f"scan-{scan_id}-flush")
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
            await task
        await scans.finish(scan_id, "done", failed=progress.failed)
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
        await scans.finish(scan_id, "failed", failed=progress.failed, error=str(exc)[:500])
    except Exception as exc:
        log.exception("discovery scan %s failed", scan_id)
        await scans.finish(scan_id, "failed", failed=progress.failed, error=type(exc).__name__)
