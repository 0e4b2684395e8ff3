"""Where to send a PTZ camera's ONVIF moves: its address, ONVIF port and credentials.

Read by the 云台失控 check of frame diagnosis (wired in `api.ptz`). A camera counts as PTZ
when interrogation found a PTZ service on its device (`discovered_devices.ptz`); a camera
registered by hand, never interrogated, is not moved: nobody said it can turn, and sending
moves to a fixed camera's device (an NVR with PTZ channels) could turn another camera.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from camera_registry.crypto import CredentialBox

# ONVIF's default device service port, when the registry row does not name one.
DEFAULT_ONVIF_PORT = 80


@dataclass(frozen=True, slots=True)
class PtzTarget:
    address: str
    port: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:  # never show credentials
        return f"PtzTarget({self.address}:{self.port})"


_SQL = """
SELECT host(c.ip) AS ip, c.onvif_port, c.credentials,
       EXISTS (SELECT 1 FROM discovered_devices d
               WHERE d.ptz AND (d.camera_id = c.id OR d.id IN (
                   SELECT dc.device_id FROM discovered_device_cameras dc
                   WHERE dc.camera_id = c.id))) AS ptz
FROM cameras c WHERE c.id = $1
"""


async def ptz_target(
    pool: asyncpg.Pool, box: CredentialBox, camera_id: uuid.UUID
) -> tuple[PtzTarget | None, str]:
    """(target, "") for a PTZ camera that can be reached, else (None, why not)."""
    row = await pool.fetchrow(_SQL, camera_id)
    if row is None:
        return None, "camera not found"
    if not row["ptz"]:
        return None, "not known as a PTZ camera (its device was not interrogated, or has no PTZ)"
    if row["ip"] is None:
        return None, "no IP address is registered for this camera"
    if row["credentials"] is None:
        return None, "no credentials are registered for this camera"
    username, password = box.open(row["credentials"])
    port = row["onvif_port"] or DEFAULT_ONVIF_PORT
    return PtzTarget(row["ip"], port, username, password), ""
