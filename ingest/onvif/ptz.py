"""A small ONVIF RelativeMove there and back, for the 云台失控 check of frame diagnosis.

Health decides when to move and judges the picture (`health.ptz`); this module only talks to
the device, with the same care as interrogation (`ingest.onvif.probe`): the library is loaded
once off the event loop, every SOAP call runs under our own timeout (the library's are 90 s),
the proxy variables it deletes are put back, and credentials appear in no message or log line.

The move back is the reason this is a context manager: whatever happens while the camera is
turned (the sample fails, the task is cancelled), leaving the block sends the opposite move,
so a camera is never left looking elsewhere by a check an operator did not ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ingest.errors import IngestError
from ingest.onvif.probe import _PROXY_VARS, NS_MEDIA, NS_PTZ, _classify, _load_onvif, _text

__all__ = ["PtzRefused", "relative_pan"]

log = logging.getLogger(__name__)


class PtzRefused(IngestError):
    """The device offers no PTZ service, has no profile to move, refused or did not answer
    the move; the message says which (never the credentials)."""


_ptz_wsdl_loaded = False


async def _client() -> Any:
    """The ONVIF library with the PTZ WSDL parsed too (once, in a thread, before any timeout
    starts: parsing is our start-up cost, not the device's slowness)."""
    global _ptz_wsdl_loaded
    client = await _load_onvif()
    if not _ptz_wsdl_loaded:
        cached = getattr(client, "_cached_document", None)
        wsdl_dir = getattr(client, "_WSDL_PATH", None)
        if cached is not None and wsdl_dir is not None:
            await cached(str(Path(wsdl_dir) / client.SERVICES["ptz"]["wsdl"]))
        _ptz_wsdl_loaded = True
    return client


async def _call(what: str, call: Any, limit_s: float) -> Any:
    """One SOAP call under our timeout; failures become `PtzRefused` naming the step."""
    try:
        async with asyncio.timeout(limit_s):
            return await call
    except TimeoutError:
        raise PtzRefused(f"{what}: device did not answer within {limit_s:g} s") from None
    except Exception as exc:
        _, detail = _classify(exc)
        raise PtzRefused(f"{what}: {detail}") from None


def _move(pan: float, token: str) -> dict[str, Any]:
    return {"ProfileToken": token, "Translation": {"PanTilt": {"x": pan, "y": 0.0}}}


@contextlib.asynccontextmanager
async def relative_pan(
    address: str,
    port: int,
    username: str | None,
    password: str | None,
    pan: float,
    *,
    timeout: float = 4.0,  # noqa: ASYNC109 - per SOAP call, the move back included
) -> AsyncIterator[None]:
    """Pan the camera by `pan` (ONVIF generic space, relative) on entering; pan back by
    `-pan` on leaving. Raises `PtzRefused` on entering when the camera cannot be moved; a
    failed move back is logged (the camera stays where it went: a technician must look)."""
    client = await _client()
    saved = {name: os.environ.get(name) for name in _PROXY_VARS}
    try:
        camera = client.ONVIFCamera(
            address, port, username, password, no_cache=True, adjust_time=True, nat_override=True
        )
    finally:
        for name, value in saved.items():
            if value is not None:
                os.environ[name] = value
    try:
        await _call("GetServices", camera.update_xaddrs(), timeout)
        xaddrs = getattr(camera, "xaddrs", {})
        if NS_PTZ not in xaddrs:
            raise PtzRefused("device offers no PTZ service")
        if NS_MEDIA not in xaddrs:
            raise PtzRefused("device offers no media service (no profile to move)")
        media = await _call("media service", camera.create_media_service(), timeout)
        profiles = await _call("GetProfiles", media.GetProfiles(), timeout) or []
        # A profile with a PTZ configuration first: an NVR's or encoder's other profiles
        # may belong to fixed channels.
        ordered = sorted(profiles, key=lambda p: getattr(p, "PTZConfiguration", None) is None)
        token = next((t for t in (_text(getattr(p, "token", None)) for p in ordered) if t), None)
        if token is None:
            raise PtzRefused("device reports no media profile to move")
        ptz = await _call("PTZ service", camera.create_ptz_service(), timeout)
        await _call("RelativeMove", ptz.RelativeMove(_move(pan, token)), timeout)
        try:
            yield
        finally:
            # Shielded: a cancelled diagnosis must still turn the camera back.
            back = asyncio.ensure_future(
                _call("RelativeMove back", ptz.RelativeMove(_move(-pan, token)), timeout)
            )
            try:
                await asyncio.shield(back)
            except PtzRefused as exc:
                log.warning("%s:%s: the PTZ check could not move it back: %s", address, port, exc)
            except asyncio.CancelledError:
                with contextlib.suppress(PtzRefused):
                    await back
                raise
    finally:
        with contextlib.suppress(Exception):
            await camera.close()
