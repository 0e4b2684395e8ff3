"""The 云台失控 check's `PtzMover`: health asks to turn a camera, ONVIF does it.

Health may not import ingest (DESIGN.md §1), so the composition — `camreg serve`
(`api.app`) and `camreg worker` (`api.cli.main`) — builds this mover and hands it to the
health worker, as it hands GB/T 28181 channels' `MediaOpener`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg

from camera_registry.crypto import CredentialBox
from camera_registry.store.ptz import ptz_target
from health.errors import PtzUnavailable
from health.ptz import PtzMover
from ingest.onvif.ptz import PtzRefused, relative_pan

# Per SOAP call (the move there, the move back): a PTZ head answers a RelativeMove at once.
CALL_TIMEOUT_S = 4.0


def onvif_ptz_mover(
    pool: asyncpg.Pool, box: CredentialBox, *, call_timeout_s: float = CALL_TIMEOUT_S
) -> PtzMover:
    """A mover that pans registered PTZ cameras over ONVIF and back."""

    @contextlib.asynccontextmanager
    async def move(camera_id: uuid.UUID, pan: float) -> AsyncIterator[None]:
        target, why = await ptz_target(pool, box, camera_id)
        if target is None:
            raise PtzUnavailable(why)
        try:
            async with relative_pan(
                target.address,
                target.port,
                target.username,
                target.password,
                pan,
                timeout=call_timeout_s,
            ):
                yield
        except PtzRefused as exc:  # only entering raises it: the move back is logged
            raise PtzUnavailable(str(exc)) from None

    return move
