"""Asking an ONVIF camera what it is and where its streams are, without trusting it to behave.

Discovery (`ingest.wsdiscovery`) only says that something answers at an address; the registry
needs vendor, model, firmware, serial, MAC and the RTSP URIs of the main and sub streams. This
module gets them with onvif-zeep-async and turns every way a device can let us down into one of
a few failure categories a technician can act on (wrong password, not a camera, unreachable,
too slow, no usable stream), the way Home Assistant's ONVIF integration classifies them.

The library needs handling with care, and all of it is contained here:

* importing `onvif.client` calls `logging.basicConfig`, which would reconfigure the host
  application's logging; it is imported lazily, off the event loop, and the root logger is
  restored afterwards;
* `ONVIFCamera()` deletes `http_proxy`/`https_proxy` from the process environment; they are
  saved and put back;
* its HTTP timeouts are 90 s/30 s, far too long for sweeping thousands of devices, so every
  SOAP call runs under our own `asyncio.timeout` and the whole interrogation under a deadline;
* a wrong password surfaces as a raw `zeep.exceptions.Fault`, not `ONVIFAuthError`, and many
  firmwares put the reason only in the subcode or the text, so faults are classified by code,
  subcode and text;
* `nat_override` rewrites service addresses but not RTSP URIs, so a stream URI naming a
  private/unspecified host other than the one we reached is rewritten here;
* it reads whole response bodies into memory and parses with `xml_huge_tree`, so its
  sessions are given a response class that stops reading at `MAX_BODY` bytes, and zeep's
  settings are hardened (no DTD, no entities, no external references, no huge trees);
* `adjust_time=True` measures the device's clock and signs WS-UsernameToken digests with it;
  the measured skew is kept, so an auth refusal from a device whose clock is far off (or
  which reports local time as UTC) is told apart from a wrong password (`clock_skew`).

Credentials go to the library and nowhere else: they never appear in `DeviceFacts.detail` or
in our log records, and credentials some devices embed in stream URIs are stripped.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from lxml import etree  # type: ignore[import-untyped]

from camera_registry.stream_uri import split_stream_uri
from ingest.onvif.geolocation import GeoFlag, GeoReading, read_geolocation
from ingest.xml_safe import MalformedXml, parse_xml

__all__ = [
    "DeviceFacts",
    "Failure",
    "StreamProfile",
    "Target",
    "interrogate",
    "interrogate_many",
]

log = logging.getLogger(__name__)

Failure = Literal[
    "unreachable",
    "auth_failed",
    "clock_skew",
    "not_onvif",
    "no_media_profile",
    "timeout",
    "malformed_response",
]
FAILURES: tuple[Failure, ...] = (
    "unreachable",
    "auth_failed",
    "clock_skew",
    "not_onvif",
    "no_media_profile",
    "timeout",
    "malformed_response",
)
# Largest SOAP answer we read. Real answers are a few KiB (GetProfiles of a 64-channel NVR
# stays well under 1 MiB); a bigger one is hostile or broken, and stops being read here.
MAX_BODY = 2 * 2**20
# A measured skew beyond this, together with an auth refusal, is reported as clock_skew:
# WS-Security implementations commonly allow ±5 minutes.
CLOCK_SKEW_LIMIT_S = 300.0

NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
NS_MEDIA = "http://www.onvif.org/ver10/media/wsdl"
NS_PTZ = "http://www.onvif.org/ver20/ptz/wsdl"
_PROXY_VARS = ("http_proxy", "https_proxy")
# Calls whose failure is tolerated (GetNetworkInterfaces, GetSnapshotUri) get at most this
# share of the budget, so one optional call that hangs cannot starve the required ones.
_OPTIONAL_SHARE = 0.25
_MAC = re.compile(r"[0-9a-f]{12}")
_AUTH_WORDS = ("notauthorized", "not authorized", "unauthorized", "authority", "401", "auth")

_T = TypeVar("_T")
_P = TypeVar("_P")


@dataclass
class StreamProfile:
    """One media profile: what it encodes and where to pull it from.

    `rtsp_uri` is rewritten to the address the device was reached at when the device names a
    private or unspecified host other than that one (NAT, factory default address).
    """

    token: str
    name: str
    encoding: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rtsp_uri: str | None = None
    snapshot_uri: str | None = None
    source: str | None = None  # video source token: one per NVR channel / encoder input

    @property
    def pixels(self) -> int:
        """Resolution as one number, for ranking main stream before sub stream."""
        return (self.width or 0) * (self.height or 0)


@dataclass
class DeviceFacts:
    """What one interrogation learnt; `failure` is None when the device is usable.

    On failure the fields learnt before it are kept (e.g. vendor and model of a camera with no
    usable profile), and `detail` says briefly what happened, never quoting credentials.
    """

    address: str
    port: int
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    hardware_id: str | None = None
    mac: str | None = None
    profiles: list[StreamProfile] = field(default_factory=list)
    failure: Failure | None = None
    detail: str = ""
    clock_skew_s: float | None = None  # device clock minus ours, when it told us
    ptz: bool | None = None  # whether it offers a PTZ service (None: not learnt)
    # The device's own GeoLocation (WGS-84), when it has one; `geo_flag` says why it is
    # doubtful ("zero": the (0, 0) factory default; "outside_china"), None when plausible.
    geo_lon: float | None = None
    geo_lat: float | None = None
    geo_elevation: float | None = None
    geo_flag: GeoFlag | None = None

    @property
    def ok(self) -> bool:
        """Whether the device answered and offers at least one stream."""
        return self.failure is None

    def channels(self) -> list[tuple[str, list[StreamProfile]]]:
        """Profiles grouped by video source, in order of first appearance, main stream first.

        An NVR or encoder has one video source per channel and a main and sub profile on each;
        a camera has one. Profiles without a source token form one group.
        """
        return group_channels(self.profiles, lambda p: p.source, lambda p: p.pixels)


@dataclass(frozen=True)
class Target:
    """A device to interrogate; the password is kept out of `repr` so it cannot be logged."""

    address: str
    port: int = 80
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def group_channels(profiles: Iterable[_P], source: Any, pixels: Any) -> list[tuple[str, list[_P]]]:
    """Group profiles (objects or stored dicts) by video source, largest resolution first."""
    groups: dict[str, list[_P]] = {}
    for profile in profiles:
        groups.setdefault(source(profile) or "", []).append(profile)
    return [(key, sorted(group, key=pixels, reverse=True)) for key, group in groups.items()]


_SOAP11_NS = b"http://schemas.xmlsoap.org/soap/envelope/"
_SOAP12_NS = b"http://www.w3.org/2003/05/soap-envelope"


class ResponseTooLarge(Exception):
    """A device's answer exceeded `MAX_BODY`; reading stopped there."""


class _CappedResponse(aiohttp.ClientResponse):
    """aiohttp response whose `read()` stops at `MAX_BODY` bytes instead of buffering all.

    The library calls `read()` on every answer; a device streaming 10 MiB (or endlessly)
    would otherwise be held in memory whole, for every concurrent interrogation. It is also
    where a SOAP 1.1 envelope is accepted (see below).
    """

    async def read(self) -> bytes:
        if self._body is None:
            length = self.content_length
            if length is not None and length > MAX_BODY:
                self.close()
                raise ResponseTooLarge(f"answer of {length} bytes")
            chunks: list[bytes] = []
            total = 0
            try:
                async for chunk in self.content.iter_chunked(65536):
                    total += len(chunk)
                    if total > MAX_BODY:
                        raise ResponseTooLarge(f"answer over {MAX_BODY} bytes")
                    chunks.append(chunk)
            except BaseException:
                self.close()
                raise
            self._body = soap11_as_12(b"".join(chunks))
        return await super().read()


def soap11_as_12(body: bytes) -> bytes:
    """A SOAP 1.1 answer rewritten as SOAP 1.2, which is what zeep's ONVIF binding reads.

    Some firmwares answer our SOAP 1.2 request in a SOAP 1.1 envelope, which the 1.2 binding
    refuses by its root element; the bodies are the same ONVIF types, so the envelope
    namespace is swapped. A 1.1 fault (faultcode/faultstring) is rebuilt as a 1.2 one
    (Code/Value, Reason/Text), parsed with the hardened parser, so that "wrong password" is
    still recognised as such.
    """
    if _SOAP11_NS not in body:
        return body
    body = body.replace(_SOAP11_NS, _SOAP12_NS)
    if b"faultcode" not in body and b"faultstring" not in body:
        return body
    try:
        root = parse_xml(body, max_bytes=MAX_BODY)
    except MalformedXml:
        return body  # zeep will fail on it too, and say why
    ns = _SOAP12_NS.decode()
    fault = root.find(f"{{{ns}}}Body/{{{ns}}}Fault")
    if fault is None:
        return body
    code = (fault.findtext("faultcode") or "").strip()
    reason = (fault.findtext("faultstring") or "").strip()
    for child in list(fault):
        fault.remove(child)
    value = etree.SubElement(etree.SubElement(fault, f"{{{ns}}}Code"), f"{{{ns}}}Value")
    value.text = code
    etree.SubElement(etree.SubElement(fault, f"{{{ns}}}Reason"), f"{{{ns}}}Text").text = reason
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


class _Failed(Exception):
    """Internal: stop the interrogation with a known category and a safe message."""

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure: Failure = failure
        self.detail = detail


# --- the library, loaded once -------------------------------------------------------------

_onvif: Any = None
_onvif_lock: asyncio.Lock | None = None


def _import_onvif() -> Any:
    """Import `onvif.client` and undo the logging configuration it does at import time."""
    root = logging.getLogger()
    zeep_client = logging.getLogger("zeep.client")
    saved = (list(root.handlers), root.level, zeep_client.level)
    try:
        import onvif.client as client
    finally:
        for handler in root.handlers[:]:
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])
        zeep_client.setLevel(saved[2])
    # At DEBUG the library logs whole SOAP envelopes, WS-Security header (username, password
    # digest and nonce) included: keep its transport logger above DEBUG whatever the app sets.
    # (Set on the loggers themselves: a root level lowered later must not reopen them.)
    for name in ("onvif.zeep_aiohttp", "zeep.transports"):
        quiet = logging.getLogger(name)
        if quiet.level < logging.INFO:
            quiet.setLevel(logging.INFO)
    # Every session the library makes (one per service) reads through the capped response.
    client.ClientSession = functools.partial(aiohttp.ClientSession, response_class=_CappedResponse)
    # The library's shared zeep settings: a device's answer may carry no DTD at all.
    settings = client.DEFAULT_SETTINGS
    settings.forbid_dtd = True
    settings.forbid_entities = True
    settings.forbid_external = True
    settings.xml_huge_tree = False
    return client


async def load_onvif() -> Any:
    """Import the library and parse its WSDLs now (once), e.g. before a sweep starts."""
    return await _load_onvif()


async def _load_onvif() -> Any:
    """The `onvif.client` module with the WSDLs we use already parsed, loaded exactly once.

    The import and WSDL parsing take a noticeable fraction of a second of CPU and disk; both
    run in a thread, and before any interrogation's deadline starts, so the first camera of a
    sweep is not judged slow for our own start-up cost. The lock stops a concurrent sweep from
    parsing the same WSDL sixteen times.
    """
    global _onvif, _onvif_lock
    if _onvif is not None:
        return _onvif
    if _onvif_lock is None:
        _onvif_lock = asyncio.Lock()
    async with _onvif_lock:
        if _onvif is None:
            client = await asyncio.to_thread(_import_onvif)
            cached = getattr(client, "_cached_document", None)
            wsdl_dir = getattr(client, "_WSDL_PATH", None)
            if cached is not None and wsdl_dir is not None:
                for name in ("devicemgmt", "media"):
                    await cached(str(Path(wsdl_dir) / client.SERVICES[name]["wsdl"]))
            _onvif = client
    return _onvif


# --- interrogation ------------------------------------------------------------------------


async def interrogate(
    address: str,
    port: int,
    username: str | None,
    password: str | None,
    *,
    timeout: float = 8.0,  # noqa: ASYNC109 - a per-device budget, not a caller deadline
) -> DeviceFacts:
    """Interrogate one device; never raises for anything the device does, only on cancel.

    `timeout` bounds the whole interrogation (all SOAP calls together), not each call, so a
    sweep's duration is predictable whatever the devices do.
    """
    facts = DeviceFacts(address=address, port=port)
    secrets = [s for s in (password, username) if s]
    try:
        client = await _load_onvif()
    except Exception as exc:  # the library itself is broken: not the device's fault
        return _fail(
            facts, "malformed_response", f"ONVIF client unavailable: {_name(exc)}", secrets
        )

    saved = {name: os.environ.get(name) for name in _PROXY_VARS}
    try:
        # nat_override: service addresses the device advertises are forced to the host:port we
        # reached it at, so cameras behind NAT or with a stale configured address still work.
        camera = client.ONVIFCamera(
            address,
            port,
            username,
            password,
            no_cache=True,
            adjust_time=True,
            nat_override=True,
        )
    finally:
        for name, value in saved.items():
            if value is not None:
                os.environ[name] = value
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            await _collect(camera, facts, deadline, timeout)
    except _Failed as failed:
        _fail(facts, failed.failure, failed.detail, secrets)
    except TimeoutError:
        _fail(facts, "timeout", f"no complete answer within {timeout:g} s", secrets)
    except Exception as exc:
        failure, detail = _classify(exc)
        skew = _skew(camera)
        facts.clock_skew_s = skew
        if failure == "auth_failed" and skew is not None and abs(skew) > CLOCK_SKEW_LIMIT_S:
            # We signed with the device's reported time and it still refused: its clock is
            # wrong (or reported in local time). A wrong password is possible too; say both.
            failure = "clock_skew"
            detail = (
                f"device clock is {_hours(skew)} off ours and it refused the credentials;"
                " set its clock (NTP), then check the password"
            )
        _fail(facts, failure, detail, secrets)
    finally:
        try:
            await camera.close()
        except Exception as exc:  # closing must not turn a result into an exception
            log.debug("%s:%s: closing the ONVIF client failed: %s", address, port, _name(exc))
    if facts.failure is None:
        log.debug(
            "%s:%s: %s %s, %d profile(s)",
            address,
            port,
            facts.vendor,
            facts.model,
            len(facts.profiles),
        )
    return facts


async def _collect(camera: Any, facts: DeviceFacts, deadline: float, budget: float) -> None:
    """The SOAP conversation; raises on a failure that makes the device unusable."""
    loop = asyncio.get_running_loop()

    async def required(call: Awaitable[_T]) -> _T:
        async with asyncio.timeout_at(deadline):
            return await call

    async def optional(what: str, call: Awaitable[_T]) -> _T | None:
        """Run a call a partial implementation may lack; only an auth fault is fatal."""
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + budget * _OPTIONAL_SHARE)):
                return await call
        except TimeoutError:
            if loop.time() >= deadline:
                raise
            log.debug("%s:%s: %s timed out; skipped", facts.address, facts.port, what)
        except Exception as exc:
            failure, detail = _classify(exc)
            if failure == "auth_failed":
                raise
            log.debug("%s:%s: %s failed (%s); skipped", facts.address, facts.port, what, detail)
        return None

    # GetSystemDateAndTime (clock skew), then GetServices or GetCapabilities.
    await required(camera.update_xaddrs())
    facts.clock_skew_s = _skew(camera)
    facts.ptz = NS_PTZ in getattr(camera, "xaddrs", {})
    device = await required(camera.create_devicemgmt_service())

    info = await optional("GetDeviceInformation", device.GetDeviceInformation())
    if info is not None:
        facts.vendor = _text(getattr(info, "Manufacturer", None))
        facts.model = _text(getattr(info, "Model", None))
        facts.firmware = _text(getattr(info, "FirmwareVersion", None))
        facts.serial = _text(getattr(info, "SerialNumber", None))
        facts.hardware_id = _text(getattr(info, "HardwareId", None))

    interfaces = await optional("GetNetworkInterfaces", device.GetNetworkInterfaces())
    facts.mac = _first_enabled_mac(interfaces)

    if NS_MEDIA not in getattr(camera, "xaddrs", {}):
        raise _Failed("no_media_profile", "device offers no media service")
    media = await required(camera.create_media_service())
    raw_profiles = await required(media.GetProfiles()) or []

    profiles: list[StreamProfile] = []
    for raw in raw_profiles:
        token = _text(getattr(raw, "token", None))
        if not token:
            continue
        profile = _describe(raw, token)
        stream = await optional(
            f"GetStreamUri({token})",
            media.GetStreamUri(
                {
                    "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                    "ProfileToken": token,
                }
            ),
        )
        profile.rtsp_uri = _reachable_uri(_text(getattr(stream, "Uri", None)), facts.address)
        if profile.rtsp_uri is None:
            continue  # no stream to pull: not usable for the registry
        snapshot = await optional(
            f"GetSnapshotUri({token})", media.GetSnapshotUri({"ProfileToken": token})
        )
        profile.snapshot_uri = _reachable_uri(_text(getattr(snapshot, "Uri", None)), facts.address)
        profiles.append(profile)

    if not profiles:
        detail = (
            "device reports no media profiles"
            if not raw_profiles
            else f"none of {len(raw_profiles)} media profile(s) yields an RTSP stream URI"
        )
        raise _Failed("no_media_profile", detail)
    # Largest resolution first: by convention that is the main stream, then the sub stream.
    profiles.sort(key=lambda p: p.pixels, reverse=True)
    facts.profiles = profiles
    await _geolocation(camera, facts, deadline, budget)


async def _geolocation(camera: Any, facts: DeviceFacts, deadline: float, budget: float) -> None:
    """Add the device's GeoLocation to a usable device's facts, or a note why not.

    Asked last, and only of a device that is usable, with at most the optional calls' share of
    the budget: a location is a convenience for registration, never a reason to lose a camera.
    The device service address is the one the library uses (NAT-rewritten), else the default.
    """
    loop = asyncio.get_running_loop()
    remaining = min(deadline - loop.time(), budget * _OPTIONAL_SHARE)
    if remaining <= 0:
        return
    url = getattr(camera, "xaddrs", {}).get(NS_DEVICE) or (
        f"http://{_host(facts.address)}:{facts.port}/onvif/device_service"
    )
    try:
        reading = await read_geolocation(
            url,
            getattr(camera, "user", None),
            getattr(camera, "passwd", None),
            skew=getattr(camera, "dt_diff", None),
            max_body=MAX_BODY,
            timeout=remaining,
        )
    except Exception as exc:  # a bug of ours must not cost a usable camera its facts
        reading = GeoReading(note=f"GeoLocation not read: unexpected {_name(exc)}")
    facts.geo_lon, facts.geo_lat = reading.lon, reading.lat
    facts.geo_elevation, facts.geo_flag = reading.elevation, reading.flag
    if reading.note:
        facts.detail = "; ".join(filter(None, [facts.detail, reading.note]))


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _skew(camera: Any) -> float | None:
    """Device clock minus ours in seconds, as the library measured it (None if not yet)."""
    diff = getattr(camera, "dt_diff", None)
    return diff.total_seconds() if diff is not None else None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:+.1f} h" if abs(seconds) >= 3600 else f"{seconds:+.0f} s"


def _describe(raw: Any, token: str) -> StreamProfile:
    """Read a media1 profile's video encoder settings, tolerating missing parts."""
    profile = StreamProfile(token=token, name=_text(getattr(raw, "Name", None)) or token)
    source = getattr(raw, "VideoSourceConfiguration", None)
    profile.source = _text(getattr(source, "SourceToken", None))
    encoder = getattr(raw, "VideoEncoderConfiguration", None)
    if encoder is None:
        return profile
    profile.encoding = _text(getattr(encoder, "Encoding", None))
    resolution = getattr(encoder, "Resolution", None)
    profile.width = _int(getattr(resolution, "Width", None))
    profile.height = _int(getattr(resolution, "Height", None))
    rate = getattr(encoder, "RateControl", None)
    fps = getattr(rate, "FrameRateLimit", None)
    try:
        profile.fps = float(fps) if fps is not None else None
    except (TypeError, ValueError):
        profile.fps = None
    return profile


def _first_enabled_mac(interfaces: Any) -> str | None:
    """MAC of the first enabled interface, normalised to aa:bb:cc:dd:ee:ff."""
    for interface in interfaces or []:
        if getattr(interface, "Enabled", True) is False:
            continue
        mac = _normalise_mac(getattr(getattr(interface, "Info", None), "HwAddress", None))
        if mac is not None:
            return mac
    return None


def _normalise_mac(value: Any) -> str | None:
    """Accept aa:bb.., AA-BB-.., aabb.ccdd.eeff or bare hex; None for junk or all zeros."""
    if not isinstance(value, str):
        return None
    digits = re.sub(r"[^0-9a-f]", "", value.lower())
    if not _MAC.fullmatch(digits) or digits == "0" * 12:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _reachable_uri(uri: str | None, reached: str) -> str | None:
    """Strip embedded credentials and replace a host we cannot have meant with `reached`.

    Devices behind NAT, or left with a factory address, put their own LAN address (or 0.0.0.0)
    into stream URIs. A host that is an IP literal other than `reached` and not globally
    routable is replaced; a hostname or a different public address is kept, since it may name a
    deliberate stream relay. The port is kept as the device reports it.
    """
    if not uri:
        return None
    try:
        # userinfo first, by the registry's reader: a password with # ? or / in it would make
        # a strict parse lose the host (and the stream) or keep part of the password
        parts = urlsplit(split_stream_uri(uri).uri)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    new_host = host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and host != reached and (not ip.is_global or ip.is_unspecified):
        new_host = reached
    if ":" in new_host:
        new_host = f"[{new_host}]"
    netloc = new_host if port is None else f"{new_host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# --- failure classification ---------------------------------------------------------------


def _classify(exc: BaseException) -> tuple[Failure, str]:
    """Map what the library raised to a category and a short message safe to show.

    ONVIFError wraps the real cause, so the chain is walked; zeep and aiohttp exceptions are
    recognised by class name where importing them would load the library early.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify_one(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return "malformed_response", f"unexpected {_name(exc)}"


def _classify_one(exc: BaseException) -> tuple[Failure, str] | None:
    kind = type(exc).__name__
    module = type(exc).__module__
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) or kind in {
        "ONVIFTimeoutError",
        "ServerTimeoutError",
    }:
        return "timeout", "device did not answer in time"
    if isinstance(exc, ResponseTooLarge):
        return "malformed_response", f"answer larger than {MAX_BODY // 2**20} MiB; not read"
    if module.startswith("zeep") and kind in {
        "DTDForbidden",
        "EntitiesForbidden",
        "ExternalReferenceForbidden",
    }:
        return "malformed_response", "answer declares a DTD or XML entities; refused unexpanded"
    if module.startswith("zeep") and kind == "Fault":
        if _is_time_fault(exc):
            return "clock_skew", "device says our request expired: its clock is off; set NTP"
        if getattr(exc, "code", None) is None and not getattr(exc, "subcodes", None):
            # zeep's stand-in when the answer parsed as XML but held no SOAP Fault, e.g. the
            # HTML "404 Not Found" page of a web server that is not an ONVIF device.
            return "not_onvif", "answer is not a SOAP envelope (HTTP error page?)"
        if _is_auth_fault(exc):
            return "auth_failed", "device refused the credentials (NotAuthorized)"
        return "malformed_response", f"SOAP fault: {_fault_summary(exc)}"
    if module.startswith("zeep") and kind == "TransportError":
        status = getattr(exc, "status_code", None)
        if status == 401:
            return "auth_failed", "device refused the credentials (HTTP 401)"
        if status == 403:
            return "auth_failed", "device refused the credentials (HTTP 403)"
        if status == 200:
            return "not_onvif", "answer is not a SOAP envelope"
        return "not_onvif", f"not an ONVIF endpoint (HTTP {status})"
    if module.startswith("zeep") and kind in {"XMLSyntaxError", "XMLParseError"}:
        return "not_onvif", "answer is not well-formed XML"
    if isinstance(exc, AttributeError) and _raised_in(exc, "zeep/loader.py"):
        # zeep 4.3's recovering parser returns None for a body that is not XML at all (a text
        # "Not Found" page) and then fails on it with AttributeError.
        return "not_onvif", "answer is not XML"
    if module.startswith("zeep") and kind in {"ValidationError", "LookupError"}:
        return "malformed_response", f"answer does not match the ONVIF schema ({kind})"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "unreachable", f"cannot connect ({_oserror(exc)})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "not_onvif", "device closed the connection without answering"
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.status == 401:
            return "auth_failed", "device refused the credentials (HTTP 401)"
        return "not_onvif", f"not an ONVIF endpoint (HTTP {exc.status})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "not_onvif", "answer is not valid HTTP"
    if isinstance(exc, OSError | aiohttp.ClientConnectionError):
        return "unreachable", f"cannot connect ({_oserror(exc)})"
    return None


def _raised_in(exc: BaseException, path_suffix: str) -> bool:
    """Whether any frame of the exception's traceback is in a file ending with `path_suffix`."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.replace(os.sep, "/").endswith(path_suffix):
            return True
        tb = tb.tb_next
    return False


def _is_auth_fault(exc: BaseException) -> bool:
    """Whether a SOAP fault means "wrong credentials", as firmwares say it in many ways."""
    subcodes = getattr(exc, "subcodes", None) or []
    if not isinstance(subcodes, list):
        subcodes = [subcodes]
    parts = [str(getattr(code, "text", code)) for code in subcodes]
    parts += [str(getattr(exc, "code", "") or ""), str(getattr(exc, "message", "") or "")]
    text = " ".join(parts).lower()
    return any(word in text for word in _AUTH_WORDS)


def _is_time_fault(exc: BaseException) -> bool:
    """WS-Security's MessageExpired: the device checked the token's Created time and refused."""
    subcodes = getattr(exc, "subcodes", None) or []
    if not isinstance(subcodes, list):
        subcodes = [subcodes]
    parts = [
        str(getattr(code, "localname", None) or getattr(code, "text", code)) for code in subcodes
    ]
    parts.append(str(getattr(exc, "message", "") or ""))
    text = " ".join(parts).lower()
    return "messageexpired" in text or "message has expired" in text


def _fault_summary(exc: BaseException) -> str:
    subcodes = getattr(exc, "subcodes", None) or []
    if not isinstance(subcodes, list):
        subcodes = [subcodes]
    names = [
        str(getattr(code, "localname", None) or getattr(code, "text", code)) for code in subcodes
    ]
    message = str(getattr(exc, "message", "") or "").strip()
    return "; ".join(filter(None, [",".join(names), message]))[:160] or "no reason given"


def _oserror(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _name(exc)


def _fail(facts: DeviceFacts, failure: Failure, detail: str, secrets: list[str]) -> DeviceFacts:
    """Record a failure, scrubbing anything that could be a credential from the message."""
    for secret in secrets:
        detail = detail.replace(secret, "***")
    facts.failure = failure
    facts.detail = detail
    log.debug("%s:%s: %s: %s", facts.address, facts.port, failure, detail)
    return facts


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# --- many devices -------------------------------------------------------------------------


async def interrogate_many(
    targets: Iterable[Target | tuple[str, int, str | None, str | None]],
    *,
    concurrency: int = 16,
    timeout: float = 8.0,  # noqa: ASYNC109 - a per-device budget, not a caller deadline
) -> list[DeviceFacts]:
    """Interrogate many devices, at most `concurrency` at a time; results in input order.

    Tasks are created only when a slot is free, so a sweep over a large address block holds
    `concurrency` interrogations in memory, not one coroutine per target.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    await _load_onvif()
    slots = asyncio.Semaphore(concurrency)
    results: dict[int, DeviceFacts] = {}

    async def one(index: int, target: Target) -> None:
        try:
            results[index] = await interrogate(
                target.address, target.port, target.username, target.password, timeout=timeout
            )
        finally:
            slots.release()

    async with asyncio.TaskGroup() as group:
        for index, item in enumerate(targets):
            target = item if isinstance(item, Target) else Target(*item)
            await slots.acquire()
            group.create_task(one(index, target))
    return [results[i] for i in range(len(results))]
