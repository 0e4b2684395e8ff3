"""The discovery inbox over HTTP: scans as jobs, what they found, "ignore" and "register here".

Scans run as background tasks owned by `discovery_ctx` (cancelled and awaited on shutdown),
at most `SCAN_SLOTS_N` at a time; scan credentials arrive only in the request body, are sealed
in the job row while it runs and dropped when it ends, and never appear in a response or log.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.auth import WRITERS
from api.cameras import ID, etag
from api.models import CameraCreate, parse_body
from api.responses import json_response
from api.routes import FLAG, UUID, Param, RouteTable, caller, enum
from api.state import BACKGROUND, BOX, GB_DEVICES, INBOX, POOL, REGISTRY, SETTINGS
from camera_registry.actor import Actor
from camera_registry.errors import FieldError, ValidationFailed
from camera_registry.store.heartbeats import heartbeat
from camera_registry.store.inbox import FAILURE_CATEGORIES, INBOX_STATUSES, DiscoveryScans
from ingest.errors import IngestError
from ingest.onvif.discover import count_hosts
from ingest.onvif.probe import group_channels
from ingest.onvif.scan_job import run_scan

ROUTES = RouteTable()

log = logging.getLogger(__name__)
SCANS = web.AppKey("discovery_scans", DiscoveryScans)
SCAN_SLOTS = web.AppKey("discovery_scan_slots", asyncio.Semaphore)


@dataclass
class ScanConfig:
    """Deployment knobs of API scans; tests point `discovery_port` at their fake devices."""

    discovery_port: int = 3702


SCAN_CONFIG = web.AppKey("discovery_scan_config", ScanConfig)
SCAN_SLOTS_N = 2  # a sweep holds sockets, a rate budget and interrogations: few at a time
MAX_SCAN_ADDRESSES = 65_536  # a /16 per scan, in total over its ranges


async def discovery_ctx(app: web.Application) -> AsyncIterator[None]:
    """The scan store, slots and config (the scan tasks are the app's `BACKGROUND`)."""
    app[SCANS] = DiscoveryScans(app[POOL], app[BOX])
    app[SCAN_SLOTS] = asyncio.Semaphore(SCAN_SLOTS_N)
    app[SCAN_CONFIG] = ScanConfig()
    yield


@ROUTES.route(
    "GET",
    "/api/v1/discovery/devices",
    "Devices found: by default those not registered yet",
    WRITERS,
    params=(
        Param("all", "query", "1 to include registered ones", FLAG),
        Param("status", "query", "new, registered or ignored", enum(*INBOX_STATUSES)),
        Param("scan", "query", "only devices seen by this scan (id)", UUID),
        Param(
            "category",
            "query",
            "ok or a failure category (auth_failed, timeout, …)",
            enum("ok", *FAILURE_CATEGORIES),
        ),
    ),
    responses={200: "inbox"},
    tag="discovery",
)
async def list_devices(request: web.Request) -> web.Response:
    actor = caller(request)
    q = request.query
    pending = q.get("all", "0") not in ("1", "true", "yes")
    items = await request.app[INBOX].list(
        actor,
        pending_only=pending,
        status=q.get("status") or None,
        scan=q.get("scan") or None,
        category=q.get("category") or None,
    )
    return json_response({"items": items})


@ROUTES.route(
    "POST",
    "/api/v1/discovery/devices/{id}/ignore",
    "Ignore a found device (it stays out of the default inbox list)",
    WRITERS,
    params=(ID,),
    responses={200: "the device"},
    tag="discovery",
)
async def ignore_device(request: web.Request) -> web.Response:
    actor = caller(request)
    device = await request.app[INBOX].set_status(actor, request.match_info["id"], "ignored")
    return json_response(device)


class ChannelOverride(BaseModel):
    """Name or 国标编码 of one channel of an NVR/encoder, in channel order."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str | None = Field(default=None, max_length=200)
    gb_id: str | None = None


class RegisterFound(CameraCreate):
    """The camera's place and identity; device facts, streams and credentials come from the
    interrogation (fields given here win). A device with several video sources (NVR,
    encoder) becomes one camera per channel: names get " 通道N" and a given gb_id's serial is
    counted up per channel, unless `channels` names them. `lon`/`lat` may be omitted when
    the device reported a plausible GeoLocation (inbox `geo_flag` null): it is used, as
    WGS-84."""

    channels: list[ChannelOverride] | None = Field(default=None, max_length=256)


def _channel_gb_id(gb_id: str, index: int) -> str:
    """The index-th ID after `gb_id` (serial digits 15–20 counted up)."""
    if index == 0:
        return gb_id
    serial = int(gb_id[14:]) + index
    if serial >= 10**6:
        raise ValidationFailed(
            "the channels' IDs would run past serial 999999",
            [FieldError("gb_id", "choose a lower serial, or give channels[].gb_id")],
        )
    return f"{gb_id[:14]}{serial:06d}"


@ROUTES.route(
    "POST",
    "/api/v1/discovery/devices/{id}/register",
    "Register a found device as a camera (one per channel), here (facts and streams filled in)",
    WRITERS,
    params=(ID,),
    body=RegisterFound,
    responses={201: "the camera, or {items: cameras} for several channels"},
    tag="discovery",
)
async def register_device(request: web.Request) -> web.Response:
    actor = caller(request)
    inbox = request.app[INBOX]
    device = await inbox.get(actor, request.match_info["id"])
    body = await parse_body(request, RegisterFound)
    if device["status"] == "registered":
        raise ValidationFailed(
            "this device is registered already",
            [FieldError("id", "see its cameras in camera_ids")],
        )
    channel = await _gb_channel(request, device)
    if channel is not None:
        base = channel[1]
    else:
        base = {
            "vendor": device["vendor"],
            "model": device["model"],
            "firmware": device["firmware"],
            "serial": device["serial"],
            "mac": device["mac"],
            "ip": device["address"],
            "onvif_port": device["port"],
            "username": device["username"],
            "password": device["password"],
        }
    given = body.values(patch=False)
    given.pop("channels", None)
    crs, location = _place(device, given, body.crs)
    channels = group_channels(
        device["profiles"] or [],
        lambda p: p.get("source"),
        lambda p: (p.get("width") or 0) * (p.get("height") or 0),
    ) or [("", [])]
    overrides = body.channels or []
    if overrides and len(overrides) != len(channels):
        raise ValidationFailed(
            f"the device has {len(channels)} channel(s); channels lists {len(overrides)}",
            [FieldError("channels", f"give {len(channels)} entries, in channel order")],
        )
    planned: list[tuple[str, dict[str, Any]]] = []
    for index, (source, profiles) in enumerate(channels):
        values = dict(base)
        if profiles:
            values["stream_main"] = profiles[0].get("rtsp_uri")
            values["snapshot"] = profiles[0].get("snapshot_uri")
        if len(profiles) > 1:
            values["stream_sub"] = profiles[1].get("rtsp_uri")
        values = {k: v for k, v in values.items() if v is not None}
        values.update(given)
        if len(channels) > 1:
            over = overrides[index] if overrides else ChannelOverride()
            values["name"] = over.name or f"{body.name} 通道{index + 1}"
            if over.gb_id:
                values["gb_id"] = over.gb_id
            elif body.gb_id:
                values["gb_id"] = _channel_gb_id(body.gb_id, index)
        planned.append((source, values))
    registry = request.app[REGISTRY]
    for _, values in planned:  # every channel valid before any camera is made
        registry.validate_one(actor, values, crs)
    created: list[dict[str, Any]] = []
    try:
        for source, values in planned:
            cam = await registry.create(actor, values, crs)
            created.append({**cam, "channel": source or None})
    except Exception:
        # One channel clashed (e.g. its 国标编码 exists): undo the others, all or nothing.
        for cam in created:
            with contextlib.suppress(Exception):
                await registry.delete(actor, cam["id"])
        raise
    await inbox.mark_registered(
        actor,
        device["id"],
        created[0]["id"],
        [(c["channel"] or "", c["id"]) for c in created],
        location=location,
    )
    if channel is not None:
        await request.app[GB_DEVICES].link_channel(channel[0], base["gb_id"], created[0]["id"])
    if len(created) == 1:
        cam = created[0]
        cam.pop("channel")
        return json_response(
            {**cam, "location": location},
            201,
            ETag=etag(cam["version"]),
            Location=f"/api/v1/cameras/{cam['id']}",
        )
    return json_response({"items": created, "location": location}, 201)


async def _gb_channel(
    request: web.Request, device: dict[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """(device ID, camera values as its catalog listed them) of a GB/T 28181 channel refused
    into the inbox; None for any other found device. The technician's fields win over the
    catalog's; the GB ID stays the channel's, so the device's status and live view reach it."""
    endpoint = str(device["endpoint"])
    if not endpoint.startswith("gb28181:"):
        return None
    found = await request.app[GB_DEVICES].refused_channel(endpoint.removeprefix("gb28181:"))
    if found is None:
        raise ValidationFailed(
            "the device no longer lists this channel; query its catalog again",
            [FieldError("id", "a channel its device still lists")],
        )
    values = {k: v for k, v in found[1].items() if v is not None and k != "region_code"}
    return found[0], values


def _place(device: dict[str, Any], given: dict[str, Any], crs: str) -> tuple[str, dict[str, Any]]:
    """The crs to validate with, and where the cameras' lon/lat come from.

    When the technician gives neither lon nor lat and the device reported a plausible
    GeoLocation (not the (0, 0) default, inside China: `geo_flag` is null), that location is
    used, in WGS-84 as ONVIF defines it (a `crs` sent for absent coordinates does not apply to
    the device's). Otherwise nothing is filled in, and a camera level that needs a place gets
    the registry's usual problem naming lon/lat. Coordinates given win over the device's.
    """
    if "lon" in given or "lat" in given:
        return crs, {"source": "request", "crs": crs}
    lon, lat = device.get("geo_lon"), device.get("geo_lat")
    if lon is None or lat is None or device.get("geo_flag") is not None:
        return crs, {"source": None}  # no place: fine for a level-3 camera, else refused
    given["lon"], given["lat"] = lon, lat
    return "wgs84", {
        "source": "device_geolocation",
        "crs": "wgs84",
        "lon": lon,
        "lat": lat,
        "elevation": device.get("geo_elevation"),
    }


class ScanRequest(BaseModel):
    """What to sweep, with which credentials, how gently. Credentials are write-only."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    cidrs: list[str] = Field(default_factory=list, max_length=64)
    interfaces: list[str] = Field(default_factory=list, max_length=16)
    ports: list[int] = Field(default_factory=list, max_length=8)
    username: str | None = Field(default=None, max_length=128, description="write-only")
    password: str | None = Field(default=None, max_length=256, description="write-only")
    rate: float = Field(default=500.0, gt=0, le=5000, description="probe packets per second")
    concurrency: int = Field(default=16, ge=1, le=128, description="interrogations at a time")
    timeout: float = Field(default=3.0, ge=0.1, le=30, description="listen after last probe, s")

    @field_validator("interfaces")
    @classmethod
    def _ipv4(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.IPv4Address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an interface's IPv4 address") from None
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        if any(not 0 < p < 65536 for p in value):
            raise ValueError("ports are 1–65535")
        return value


@ROUTES.route(
    "POST",
    "/api/v1/discovery/scans",
    "Start a discovery scan (WS-Discovery, unicast sweep, ONVIF interrogation) as a job",
    WRITERS,
    body=ScanRequest,
    responses={202: "scan accepted; follow Location"},
    tag="discovery",
)
async def create_scan(request: web.Request) -> web.Response:
    actor = caller(request)
    body = await parse_body(request, ScanRequest)
    if not body.cidrs and not body.interfaces:
        raise ValidationFailed(
            "nothing to scan", [FieldError("cidrs", "give cidrs (or interfaces for multicast)")]
        )
    try:
        addresses = count_hosts(body.cidrs)
    except IngestError as exc:
        raise ValidationFailed(str(exc), [FieldError("cidrs", "IPv4 ranges, each ≤ /16")]) from None
    if addresses > MAX_SCAN_ADDRESSES:
        raise ValidationFailed(
            f"{addresses} addresses in one scan; the limit is {MAX_SCAN_ADDRESSES} (a /16)",
            [FieldError("cidrs", "split the ranges over several scans")],
        )
    spec = body.model_dump(exclude={"username", "password"})
    scans = request.app[SCANS]
    scan = await scans.create(actor, spec, body.username, body.password, addresses)
    request.app[BACKGROUND].spawn(
        _run(request.app, actor, scan["id"], spec), name=f"scan-{scan['id']}"
    )
    url = f"/api/v1/discovery/scans/{scan['id']}"
    return json_response(scan, 202, Location=url)


async def _run(app: web.Application, actor: Actor, scan_id: str, spec: dict[str, Any]) -> None:
    began = False
    try:
        async with (
            heartbeat(app[POOL], "discovery_scans", scan_id, app[SETTINGS].job_stale_after_s),
            app[SCAN_SLOTS],
        ):
            began = True
            await run_scan(
                app[SCANS],
                app[INBOX],
                actor,
                scan_id,
                spec,
                discovery_port=app[SCAN_CONFIG].discovery_port,
            )
    except asyncio.CancelledError:
        if not began:  # stopped while queued: close the job and drop its credentials
            await asyncio.shield(
                app[SCANS].finish(
                    scan_id, "cancelled", error="the server stopped before the scan started"
                )
            )
        raise
    except Exception:  # the job row could not even be updated (database gone)
        log.exception("discovery scan %s: the job could not record its end", scan_id)


@ROUTES.route(
    "GET",
    "/api/v1/discovery/scans/{id}",
    "Scan job status, progress and counts (found, interrogated, failed by category)",
    WRITERS,
    params=(Param("id", "path", "scan id", UUID, required=True),),
    responses={200: "the scan"},
    tag="discovery",
)
async def get_scan(request: web.Request) -> web.Response:
    actor = caller(request)
    return json_response(await request.app[SCANS].get(actor, request.match_info["id"]))
