"""Reading a camera's own GeoLocation (ONVIF `tds:GetGeoLocation`), when it has one.

The WSDLs bundled with onvif-zeep-async 4.3 predate `GetGeoLocation` (and their
`tds:SystemCapabilities` lacks the `GeoLocationEntries` attribute that announces it), so zeep
cannot build the call nor keep the attribute. Rather than patching the library's WSDLs, the
two requests are built here by hand as SOAP 1.2 and sent with aiohttp, under the same rules as
everything else a device sends us: WS-UsernameToken PasswordDigest signed with the device's
clock (the skew `interrogate` measured), our own deadline, answers capped at `MAX_BODY` and
parsed with the hardened parser (no DTD, no entities).

Support is asked first (`GetServiceCapabilities`, `System/@GeoLocationEntries`, ONVIF Core
"If present signals support for geo location"); only when that answer is missing or
unreadable is `GetGeoLocation` tried once blind. A fault, an auth refusal or a broken answer
only means "no location": it is never a failure category of the device, since the device is
usable without one. What went wrong is returned as a short note for the device's detail.

The location is sanity-checked: outside WGS-84's range it is dropped (with a note); (0, 0) —
the factory default many firmwares ship — and points outside China are kept but flagged
(`zero`, `outside_china`), so registration never takes them for the camera's place.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any, Literal
from xml.sax.saxutils import escape

import aiohttp

from geo.crs import CHINA_BBOX
from ingest.xml_safe import MalformedXml, parse_xml

__all__ = ["GeoFlag", "GeoReading", "plausibility", "read_geolocation"]

GeoFlag = Literal["zero", "outside_china"]

NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
NS_TT = "http://www.onvif.org/ver10/schema"
_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_BASE64 = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
_USERNAME_PROFILE = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
)
# Entities a location may be given for; the device's own comes first, a camera's only video
# source next (ONVIF tds:Entity: Device, VideoSource, AudioSource).
_ENTITY_RANK = {"device": 0, "": 1, "videosource": 2}


@dataclass
class GeoReading:
    """What asking for the location gave: a location (maybe flagged), or a note why not.

    `supported` is False when the device said it has no GeoLocation (capabilities or fault);
    `note` is empty then and when a location was read, so a device without the feature does
    not carry noise in its detail.
    """

    lon: float | None = None
    lat: float | None = None
    elevation: float | None = None
    flag: GeoFlag | None = None
    supported: bool | None = None
    note: str = ""


class _NoAnswer(Exception):
    """The device's answer cannot be used; the message is safe to show."""


class _Fault(Exception):
    """The device answered with a SOAP fault (e.g. ActionNotSupported, NotAuthorized)."""


def plausibility(lon: float, lat: float) -> GeoFlag | None:
    """None for a location that may be the camera's; else why it is doubtful.

    (0, 0) is the default of firmwares that support GeoLocation but were never configured;
    CHINA_BBOX is the same coarse box the registry uses to warn about imported points.
    """
    if abs(lon) < 1e-6 and abs(lat) < 1e-6:
        return "zero"
    lon_min, lat_min, lon_max, lat_max = CHINA_BBOX
    if not (lon_min <= lon <= lon_max and lat_min <= lat <= lat_max):
        return "outside_china"
    return None


async def read_geolocation(
    url: str,
    username: str | None,
    password: str | None,
    *,
    skew: dt.timedelta | None,
    max_body: int,
    timeout: float,  # noqa: ASYNC109 - a share of the interrogation's budget
) -> GeoReading:
    """Ask the device service at `url` for its location; never raises for the device.

    Raises only CancelledError (the caller's deadline or shutdown). Both requests together
    stay within `timeout` seconds.
    """
    reading = GeoReading()
    try:
        async with (
            asyncio.timeout(timeout),
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
            ) as session,
        ):
            announced = await _announced(session, url, username, password, skew, max_body)
            if announced is False:
                reading.supported = False
                return reading
            try:
                root = await _call(
                    session, url, "GetGeoLocation", username, password, skew, max_body
                )
            except _Fault:
                reading.supported = False
                if announced:  # it said it has one, then refused (admin-only, say)
                    reading.note = "GeoLocation announced but refused"
                return reading
            reading.supported = True
            _read_location(root, reading)
    except _NoAnswer as exc:
        reading.note = f"GeoLocation not read: {exc}"
    except TimeoutError:
        reading.note = "GeoLocation not read: no answer in time"
    except (aiohttp.ClientError, OSError):
        reading.note = "GeoLocation not read: connection failed"
    return reading


async def _announced(
    session: aiohttp.ClientSession,
    url: str,
    username: str | None,
    password: str | None,
    skew: dt.timedelta | None,
    max_body: int,
) -> bool | None:
    """True/False as the device service capabilities say; None when they say nothing.

    A fault or an unreadable answer also gives None: capability information is missing, so
    the location is asked for once blind.
    """
    try:
        root = await _call(
            session, url, "GetServiceCapabilities", username, password, skew, max_body
        )
    except (_Fault, _NoAnswer):
        return None
    system = next(root.iter(f"{{{NS_TDS}}}System"), None)
    if system is None:
        return None
    entries = system.get("GeoLocationEntries")
    if entries is None:
        return False
    try:
        return int(entries.strip()) > 0
    except ValueError:
        return None


def _read_location(root: Any, reading: GeoReading) -> None:
    """Pick the device's (or its video source's) GeoLocation and check it."""
    best: tuple[int, float, float, float | None] | None = None
    for entity in root.iter(f"{{{NS_TDS}}}Location"):
        geo = entity.find(f"{{{NS_TT}}}GeoLocation")
        if geo is None:
            continue
        rank = _ENTITY_RANK.get((entity.get("Entity") or "").strip().lower(), 3)
        try:
            lon, lat = float(geo.get("lon", "nan")), float(geo.get("lat", "nan"))
        except ValueError:
            lon = lat = math.nan
        if not (math.isfinite(lon) and math.isfinite(lat)):
            continue
        elevation: float | None
        try:
            elevation = float(geo.get("elevation")) if geo.get("elevation") else None
        except ValueError:
            elevation = None
        if elevation is not None and not math.isfinite(elevation):
            elevation = None
        if best is None or rank < best[0]:
            best = (rank, lon, lat, elevation)
    if best is None:
        reading.note = "GeoLocation: device reports none"
        return
    _, lon, lat, elevation = best
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        reading.note = f"GeoLocation ignored: ({lon:g}, {lat:g}) is not WGS-84 lon/lat"
        return
    reading.lon, reading.lat, reading.elevation = lon, lat, elevation
    reading.flag = plausibility(lon, lat)
    if reading.flag == "zero":
        reading.note = "GeoLocation is (0, 0), a factory default: not used"
    elif reading.flag == "outside_china":
        reading.note = f"GeoLocation ({lon:g}, {lat:g}) is outside China: not used"


async def _call(
    session: aiohttp.ClientSession,
    url: str,
    operation: str,
    username: str | None,
    password: str | None,
    skew: dt.timedelta | None,
    max_body: int,
) -> Any:
    """POST one empty-bodied tds operation; the parsed envelope, or _Fault / _NoAnswer."""
    envelope = _envelope(operation, username, password, skew)
    headers = {
        "Content-Type": (f'application/soap+xml; charset=utf-8; action="{NS_TDS}/{operation}"')
    }
    async with session.post(url, data=envelope, headers=headers) as resp:
        body = await _capped(resp, max_body)
        status = resp.status
    try:
        root = parse_xml(body, max_bytes=max_body)
    except MalformedXml as exc:
        if "DOCTYPE" in str(exc):
            raise _NoAnswer("answer declares a DTD or XML entities; refused") from None
        if status >= 400:
            raise _Fault(f"HTTP {status}") from None
        raise _NoAnswer(f"answer is not usable XML ({exc})") from None
    body_el = root.find(f"{{{_SOAP12}}}Body")
    if body_el is None:
        body_el = root.find(f"{{{_SOAP11}}}Body")
    if body_el is None:
        raise _NoAnswer("answer is not a SOAP envelope")
    if (
        body_el.find(f"{{{_SOAP12}}}Fault") is not None
        or body_el.find(f"{{{_SOAP11}}}Fault") is not None
    ):
        raise _Fault(operation)
    if status >= 400:
        raise _Fault(f"HTTP {status}")
    return body_el


async def _capped(resp: aiohttp.ClientResponse, max_body: int) -> bytes:
    """The body, or _NoAnswer as soon as it exceeds `max_body` (never buffered whole)."""
    if resp.content_length is not None and resp.content_length > max_body:
        raise _NoAnswer(f"answer larger than {max_body // 2**20} MiB; not read")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(65536):
        total += len(chunk)
        if total > max_body:
            raise _NoAnswer(f"answer larger than {max_body // 2**20} MiB; not read")
        chunks.append(chunk)
    return b"".join(chunks)


def _envelope(
    operation: str, username: str | None, password: str | None, skew: dt.timedelta | None
) -> bytes:
    """A SOAP 1.2 request with a WS-UsernameToken PasswordDigest in the device's time.

    Digest = Base64(SHA-1(nonce + created + password)) as WS-Security's UsernameToken Profile
    says; `created` is our clock plus the measured skew, as the library signs its own calls,
    so a device whose clock is hours off accepts it.
    """
    header = ""
    if username:
        created_at = dt.datetime.now(dt.UTC) + (skew or dt.timedelta(0))
        created = created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        nonce = os.urandom(16)
        digest = base64.b64encode(
            hashlib.sha1(  # noqa: S324 - WS-Security UsernameToken mandates SHA-1
                nonce + created.encode() + (password or "").encode()
            ).digest()
        ).decode()
        header = (
            f'<s:Header><wsse:Security xmlns:wsse="{_WSSE}" xmlns:wsu="{_WSU}"'
            ' s:mustUnderstand="1"><wsse:UsernameToken>'
            f"<wsse:Username>{escape(username)}</wsse:Username>"
            f'<wsse:Password Type="{_USERNAME_PROFILE}#PasswordDigest">{digest}</wsse:Password>'
            f'<wsse:Nonce EncodingType="{_BASE64}">{base64.b64encode(nonce).decode()}'
            f"</wsse:Nonce><wsu:Created>{created}</wsu:Created>"
            "</wsse:UsernameToken></wsse:Security></s:Header>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{_SOAP12}"'
        f' xmlns:tds="{NS_TDS}">{header}<s:Body><tds:{operation}/></s:Body></s:Envelope>'
    ).encode()
