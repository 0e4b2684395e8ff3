"""Response bodies as the OpenAPI document declares them.

Closed shapes (`additionalProperties: false`): the schemathesis run in the tests checks every
answer against them, so a field that should never leave the registry (a user name, a password,
a sealed credential, a token's hash) cannot appear in a camera or a token listing unnoticed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from camera_registry.actor import Role


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(_Closed):
    field: str
    message: str
    row: int | None = None


class StreamsOut(_Closed):
    """Stream URIs as stored: never with credentials in them."""

    main: str | None = None
    sub: str | None = None
    snapshot: str | None = None


class CameraOut(_Closed):
    id: uuid.UUID
    gb_id: str = Field(pattern="^[0-9]{20}$")
    name: str
    level: Literal[1, 2, 3, 9]
    lon: float | None
    lat: float | None
    region_code: str = Field(pattern="^[0-9]{6}$")
    address: str | None
    azimuth: float | None
    hfov: float | None
    vfov: float | None
    max_view_distance: float | None
    mount_height: float | None
    owner: str | None
    contact: str | None
    installed_at: dt.date | None
    record_days: int | None
    vendor: str | None
    model: str | None
    firmware: str | None
    serial: str | None
    mac: str | None
    ip: str | None
    onvif_port: int | None
    streams: StreamsOut
    has_credentials: bool = Field(description="the credentials themselves are never returned")
    status: Literal["unknown", "online", "offline", "degraded"]
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    distance_m: float | None = Field(default=None, description="with near=: metres away")
    warnings: list[FieldProblem] | None = Field(
        default=None, description="on a write: the point lies far outside its county"
    )


class CameraPage(_Closed):
    items: list[CameraOut]
    next_cursor: str | None


class TokenOut(_Closed):
    id: uuid.UUID
    name: str
    role: Role
    region_prefix: str | None
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    rate_limit_per_min: int | None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown this once, stored only as a digest")


class TokenList(_Closed):
    items: list[TokenOut]
