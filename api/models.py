"""Request bodies: strict shapes (unknown fields are errors), domain rules live in the registry."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from camera_registry.actor import Role
from camera_registry.errors import BadRequest, FieldError, ValidationFailed

Number = StrictFloat  # accepts JSON integers too, but not strings or booleans


class InvalidBody(ValidationFailed):
    """A JSON body that does not fit its endpoint's schema. Cameras' own bodies keep
    ValidationFailed ("Invalid camera data"); a video wall's `camera_ids` is not camera data."""


class Streams(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    main: str | None = Field(default=None, max_length=2000)
    sub: str | None = Field(default=None, max_length=2000)
    snapshot: str | None = Field(default=None, max_length=2000)


class CameraPatch(BaseModel):
    """Fields a client may send; `null` clears a field in a PATCH (JSON merge patch)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    gb_id: str | None = Field(
        default=None, description="GB/T 28181 20-digit ID; generated when absent"
    )
    name: str | None = Field(default=None, max_length=200)
    level: StrictInt | str | None = Field(default=None, description="1/2/3/9 or 一类/二类/三类")
    lon: Number | None = None
    lat: Number | None = None
    crs: Literal["wgs84", "gcj02", "bd09"] = Field(
        default="wgs84", description="system of lon/lat as sent; stored as WGS-84"
    )
    region_code: str | None = Field(default=None, description="6-digit GB/T 2260 code")
    address: str | None = Field(default=None, max_length=500)
    azimuth: Number | None = Field(default=None, description="degrees clockwise from north")
    hfov: Number | None = None
    vfov: Number | None = None
    max_view_distance: Number | None = None
    mount_height: Number | None = None
    owner: str | None = None
    contact: str | None = None
    installed_at: dt.date | None = None
    record_days: StrictInt | None = None
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    mac: str | None = None
    ip: str | None = None
    onvif_port: StrictInt | None = None
    streams: Streams | None = None
    username: str | None = Field(default=None, description="write-only")
    password: str | None = Field(default=None, description="write-only")

    @field_validator("installed_at", mode="before")
    @classmethod
    def _date_text(cls, value: Any) -> Any:
        # the document says a YYYY-MM-DD string; pydantic alone would read 0 as 1970-01-01
        if value is not None and not isinstance(value, str | dt.date):
            raise ValueError("give a date as YYYY-MM-DD")
        return value

    def values(self, *, patch: bool) -> dict[str, Any]:
        data = self.model_dump(exclude_unset=patch, exclude={"crs"})
        if not patch:
            data = {k: v for k, v in data.items() if v is not None}
        streams = data.pop("streams", None) if "streams" in data else None
        if streams is not None or "streams" in self.model_fields_set:
            s = streams or {}
            for key, col in (
                ("main", "stream_main"),
                ("sub", "stream_sub"),
                ("snapshot", "snapshot"),
            ):
                if not patch or key in (self.streams.model_fields_set if self.streams else {key}):
                    data[col] = s.get(key)
        return data


class CameraCreate(CameraPatch):
    name: str = Field(max_length=200)
    level: StrictInt | str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    name: str = Field(min_length=1, max_length=100)
    region: str | None = Field(
        default=None, pattern="^[0-9]{2,6}$", description="region-code prefix scope, e.g. 1401"
    )
    expires_at: dt.datetime | None = Field(
        default=None, description="ISO 8601 date-time in the future; absent: never expires"
    )
    rate_limit_per_min: StrictInt | None = Field(default=None, ge=1, le=1_000_000)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        # pydantic would read 0 as 1970-01-01: a token born expired, never what was meant
        if value is not None and not isinstance(value, str):
            raise ValueError("give an ISO 8601 date-time, e.g. 2027-01-01T00:00:00+08:00")
        return value

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        if aware <= dt.datetime.now(dt.UTC):
            raise ValueError("must be in the future; omit it for a token that does not expire")
        return value


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            msg = "unknown field; see the schema at /api/v1/openapi.json"
        elif err["type"] == "missing":
            msg = "is required"
        else:
            msg = err["msg"]
        out.append(FieldError(loc, msg))
    return out


M = TypeVar("M", bound=BaseModel)


# No request body of this API nests deeper than a GeoJSON MultiPolygon inside a few objects;
# Python's parser recurses per level and fails past ~1,000, so depth is checked first.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


def _too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `raw` nests more than `limit` arrays/objects (brackets inside strings ignored)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for b in _BRACKETS.findall(_JSON_STRING.sub(b"", raw)):
        depth += 1 if b in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def load_json(raw: bytes) -> Any:
    """Parse a request body: 400 naming the body for malformed or too deeply nested JSON."""
    if _too_deep(raw):
        raise BadRequest(
            f"the body nests arrays/objects more than {MAX_JSON_DEPTH} levels deep; "
            "no request of this API needs that",
            [FieldError("body", f"nested deeper than {MAX_JSON_DEPTH} levels")],
        )
    try:
        return json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(
            f"the body is not valid JSON ({exc}); send a JSON object",
            [FieldError("body", "malformed JSON")],
        ) from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()  # 413 beyond client_max_size
    data = load_json(raw)
    if not isinstance(data, dict):
        raise BadRequest(
            "the body must be a JSON object", [FieldError("body", "expected an object")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = ValidationFailed if issubclass(model, CameraPatch) else InvalidBody
        raise error(
            "the body has invalid fields; correct them and send it again", _field_errors(exc)
        ) from None
