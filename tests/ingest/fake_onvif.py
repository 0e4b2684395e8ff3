"""A fake ONVIF camera on loopback, so the prober is tested against real HTTP and real SOAP.

Mocks of the client library would test our assumptions about it, not its behaviour; this server
answers what onvif-zeep-async really sends (SOAP 1.2 envelopes with a WS-UsernameToken
PasswordDigest), checks the digest for real, and reproduces the vendor quirks the prober must
survive: Hikvision-like main/sub streams, Dahua-like RTSP URIs naming a private host, devices
without GetNetworkInterfaces or without profiles, plain web servers answering 404, and devices
that accept the connection but never answer. Responses are minimal but use the element names
and namespaces of the ONVIF schemas, because zeep parses them against the WSDL types.

The fleet behaviours of issue 3 are switches on `FakeCamera` (each tested in
test_onvif_fleet.py): SOAP 1.1 replies, a clock hours off (with a `time_window` check of the
token's Created time, as real devices do), local time reported as UTC, MessageExpired faults,
auth on GetSystemDateAndTime, no GetServices, NAT-wrong XAddrs, faults with HTTP 200, empty
200s, plain-text 500s, dropped connections, XXE and billion-laughs DTDs, 10 MiB answers
(with or without Content-Length), PTZ, and `nvr()` for a multi-channel recorder.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from lxml import etree  # type: ignore[import-untyped]

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
NS_TRT = "http://www.onvif.org/ver10/media/wsdl"
NS_TT = "http://www.onvif.org/ver10/schema"
NS_TER = "http://www.onvif.org/ver10/error"
NS_PTZ = "http://www.onvif.org/ver20/ptz/wsdl"

_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:tds="{NS_TDS}" xmlns:trt="{NS_TRT}"'
    f' xmlns:tt="{NS_TT}" xmlns:ter="{NS_TER}" xmlns:wsse="{NS_WSSE}">'
    "<env:Body>{body}</env:Body></env:Envelope>"
)
_CONTENT_TYPE = "application/soap+xml"
_CONTENT_TYPE11 = "text/xml"
_XXE_DOCTYPE = '<!DOCTYPE env:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
_LAUGHS_DOCTYPE = (
    '<!DOCTYPE env:Envelope [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)

# Operations a camera must answer before authentication (ONVIF Core §5.12.1).
_PRE_AUTH = frozenset({"GetSystemDateAndTime"})


@dataclass
class FakeProfile:
    """One media profile as the fake reports it."""

    token: str
    name: str
    width: int
    height: int
    fps: int = 25
    encoding: str = "H264"
    source: str = "VideoSource_1"  # the video input (an NVR channel) the profile encodes


@dataclass
class FakeCamera:
    """What the fake device says about itself and which quirk it has.

    `stream_host` is the host written into RTSP URIs; None means "the Host header the client
    used", i.e. a correctly configured camera.
    """

    username: str = "admin"
    password: str = "Secr3t!pass"
    vendor: str = "HIKVISION"
    model: str = "DS-2CD2T47G2-L"
    firmware: str = "V5.7.3 build 220112"
    serial: str = "DS-2CD2T47G2-L20220101AACHJ12345678"
    hardware_id: str = "88"
    mac: str = "44:19:B6:0A:0B:0C"
    profiles: list[FakeProfile] = field(
        default_factory=lambda: [
            FakeProfile("Profile_101", "mainStream", 1920, 1080, 25),
            FakeProfile("Profile_102", "subStream", 640, 360, 15),
        ]
    )
    stream_host: str | None = None
    snapshot: bool = True
    network_interfaces: bool = True
    http_404: bool = False
    http_404_body: str = "<html><body><h1>404 Not Found</h1></body></html>"
    http_401: bool = False
    hang: bool = False
    delay: float = 0.0
    # Fleet behaviours (issue 3): each off by default, i.e. a well-behaved camera.
    soap11: bool = False  # answer with SOAP 1.1 envelopes and text/xml
    clock_offset: float = 0.0  # seconds the device's clock is ahead of ours
    reported_offset: float = 0.0  # extra offset only in what GetSystemDateAndTime reports
    time_window: float | None = None  # reject a UsernameToken Created further off than this
    time_fault: bool = False  # say wsse:MessageExpired (not NotAuthorized) for a stale token
    auth_on_date: bool = False  # GetSystemDateAndTime needs credentials too
    get_services: bool = True  # False: GetServices is not implemented
    xaddr_host: str | None = None  # host[:port] advertised in XAddrs (NAT); None: Host header
    fault_status: int | None = None  # HTTP status of every SOAP fault (e.g. 200)
    empty_200: bool = False  # every answer is HTTP 200 with an empty body
    text_500: bool = False  # every answer is HTTP 500 with a plain-text body
    drop: bool = False  # close the connection without answering
    hostile: str | None = None  # "xxe" or "billion_laughs": a DTD in every answer
    huge: int = 0  # pad every answer to this many bytes
    huge_chunked: bool = False  # send the padding chunked, without a Content-Length
    ptz: bool = False  # advertise a PTZ service (answering RelativeMove)
    ptz_stuck: bool = False  # accept RelativeMove but never move (a dead pan-tilt head)
    ptz_file: str | None = None  # where the pan position is written after each move
    ptz_position: float = 0.0  # generic pan, -1 … 1
    # GeoLocation: (lon, lat, elevation) the device reports; None: GetGeoLocation is not
    # implemented (ActionNotSupported) and GetServiceCapabilities does not announce it.
    geolocation: tuple[float, float, float] | None = None
    geo_announced: bool = True  # announce System/@GeoLocationEntries when it has a location
    service_capabilities: bool = True  # False: GetServiceCapabilities is a fault
    geo_entity: str = "Device"  # the Location's Entity attribute
    geo_hostile: str | None = None  # "xxe", "billion_laughs" or "huge": GetGeoLocation only
    geo_hang: bool = False  # GetGeoLocation is accepted and never answered

    # Observations, for assertions.
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    moves: list[tuple[str, float, float]] = field(default_factory=list)  # (profile, x, y)


def hikvision() -> FakeCamera:
    """Two H.264 profiles, main stream listed second so the prober's sort is exercised."""
    cam = FakeCamera()
    cam.profiles.reverse()
    return cam


def dahua() -> FakeCamera:
    """RTSP URIs name the camera's factory LAN address instead of the one reached."""
    return FakeCamera(
        vendor="Dahua",
        model="IPC-HFW2431S-S-S2",
        firmware="2.800.0000000.22.R",
        serial="6J0A1B2PAZ12345",
        hardware_id="1.00",
        mac="3C:EF:8C:01:02:03",
        profiles=[
            FakeProfile("MediaProfile00000", "MediaProfile_Channel1_MainStream", 2688, 1520, 20),
            FakeProfile("MediaProfile00001", "MediaProfile_Channel1_SubStream1", 704, 576, 15),
        ],
        stream_host="192.168.1.64",
        snapshot=False,
    )


def nvr(channels: int = 4) -> FakeCamera:
    """A multi-channel NVR: one video source per channel, a main and a sub profile on each."""
    profiles = []
    for ch in range(1, channels + 1):
        source = f"VideoSource_{ch}"
        profiles.append(
            FakeProfile(f"Profile_{ch}01", f"ch{ch}main", 1920, 1080, 25, "H264", source)
        )
        profiles.append(FakeProfile(f"Profile_{ch}02", f"ch{ch}sub", 704, 576, 15, "H264", source))
    return FakeCamera(
        vendor="HIKVISION",
        model="DS-7608NI-K2",
        firmware="V4.30.085",
        serial="DS-7608NI-K20820211111CCRRG12345678",
        mac="24:0F:9B:11:22:33",
        profiles=profiles,
    )


class FakeOnvifServer:
    """Runs one `FakeCamera` behind an aiohttp server on 127.0.0.1 and an ephemeral port."""

    def __init__(self, camera: FakeCamera, host: str = "127.0.0.1", port: int = 0) -> None:
        self.camera = camera
        self.host = host
        self.bind_port = port
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._hangs: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> FakeOnvifServer:
        app = web.Application()
        app.router.add_post("/onvif/device_service", self._handle)
        app.router.add_post("/onvif/media_service", self._handle)
        app.router.add_post("/onvif/ptz_service", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.bind_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        for fut in self._hangs:
            fut.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        cam = self.camera
        cam.in_flight += 1
        cam.max_in_flight = max(cam.max_in_flight, cam.in_flight)
        try:
            body = await request.read()
            cam.bodies.append(body)
            if cam.hang or (cam.geo_hang and b"GetGeoLocation" in body):
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._hangs.add(fut)
                try:
                    await fut
                finally:
                    self._hangs.discard(fut)
            if cam.delay:
                await asyncio.sleep(cam.delay)
            if cam.drop:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("dropped on purpose")
            if cam.empty_200:
                return web.Response(status=200, body=b"", content_type=_CONTENT_TYPE)
            if cam.text_500:
                return web.Response(status=500, text="Internal Server Error\n")
            if cam.http_401:
                # Devices that guard ONVIF with HTTP Digest instead of WS-UsernameToken.
                return web.Response(
                    status=401, headers={"WWW-Authenticate": 'Digest realm="IPCamera", nonce="1"'}
                )
            if cam.http_404:
                return web.Response(status=404, text=cam.http_404_body, content_type="text/html")
            response = self._answer(request, body)
            return await self._dress(request, response)
        finally:
            cam.in_flight -= 1

    async def _dress(self, request: web.Request, response: web.Response) -> web.StreamResponse:
        """Apply the envelope-level behaviours: SOAP 1.1, fault status, DTDs, padding."""
        cam = self.camera
        text = response.text or ""
        content_type = response.content_type
        status = response.status
        if cam.soap11:
            text = _as_soap11(text)
            content_type = _CONTENT_TYPE11
        if cam.fault_status is not None and "<env:Fault>" in text:
            status = cam.fault_status
        if cam.hostile is not None:
            doctype = _XXE_DOCTYPE if cam.hostile == "xxe" else _LAUGHS_DOCTYPE
            entity = "&xxe;" if cam.hostile == "xxe" else "&lol9;"
            head, _, rest = text.partition("?>")
            text = f"{head}?>{doctype}{rest}"
            text = text.replace("<env:Body>", f"<env:Header><x>{entity}</x></env:Header><env:Body>")
            for tag in ("tt:Hour", "tds:Manufacturer"):
                text = text.replace(f"<{tag}>", f"<{tag}>{entity}", 1)
        if not cam.huge:
            return web.Response(status=status, text=text, content_type=content_type)
        head, sep, tail = text.partition("<env:Body>")
        pad = max(0, cam.huge - len(text))
        out = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        if not cam.huge_chunked:
            out.content_length = len(text) + pad + len("<!---->")
        await out.prepare(request)
        await out.write(head.encode() + b"<!--")
        chunk = b"x" * 65536
        while pad > 0:
            await out.write(chunk[: min(pad, len(chunk))])
            pad -= len(chunk)
        await out.write(b"-->" + (sep + tail).encode())
        await out.write_eof()
        return out

    def _answer(self, request: web.Request, raw: bytes) -> web.Response:
        try:
            root = etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError:
            return _fault("env:Sender", "ter:WellFormed", "not well-formed", status=400)
        body = root.find(f"{{{NS_SOAP12}}}Body")
        if body is None:
            body = root.find(f"{{{NS_SOAP11}}}Body")
        if body is None or len(body) == 0:
            return _fault("env:Sender", "ter:WellFormed", "no body", status=400)
        op_el = body[0]
        op = etree.QName(op_el).localname
        self.camera.requests.append(op)
        if op not in _PRE_AUTH or self.camera.auth_on_date:
            verdict = self._authorised(root)
            if verdict == "stale" and self.camera.time_fault:
                return _fault("env:Sender", "wsse:MessageExpired", "The message has expired")
            if verdict != "ok":
                return _fault("env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        if op == "GetServices" and not self.camera.get_services:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        result: web.Response = handler(request, op_el)
        if op == "GetGeoLocation" and self.camera.geo_hostile is not None:
            result = _hostile(result, self.camera.geo_hostile)
        return result

    def _now(self) -> dt.datetime:
        """The device's own clock."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.camera.clock_offset)

    def _authorised(self, root: Any) -> str:
        """Check the UsernameToken digest: Base64(SHA1(nonce + created + password)), and when
        `time_window` is set, that Created is close to the device's clock (as real cameras do,
        which is why a skewed device needs the client to sign with the device's time).

        Returns "ok", "stale" (right digest, Created too far off) or "bad".
        """
        token = root.find(f".//{{{NS_WSSE}}}UsernameToken")
        if token is None:
            return "bad"
        user = token.findtext(f"{{{NS_WSSE}}}Username") or ""
        password = token.find(f"{{{NS_WSSE}}}Password")
        nonce = token.findtext(f"{{{NS_WSSE}}}Nonce") or ""
        created = token.findtext(f"{{{NS_WSU}}}Created") or ""
        if password is None or not password.get("Type", "").endswith("#PasswordDigest"):
            return "bad"
        try:
            nonce_raw = base64.b64decode(nonce)
        except ValueError:
            return "bad"
        expected = base64.b64encode(
            hashlib.sha1(  # noqa: S324 - WS-Security UsernameToken mandates SHA-1
                nonce_raw + created.encode() + self.camera.password.encode()
            ).digest()
        ).decode()
        if not (
            user == self.camera.username
            and hmac.compare_digest(expected, (password.text or "").strip())
        ):
            return "bad"
        if self.camera.time_window is not None:
            try:
                when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
            except ValueError:
                return "bad"
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            if abs((when - self._now()).total_seconds()) > self.camera.time_window:
                return "stale"
        return "ok"

    # --- device service -------------------------------------------------------------------

    def _base(self, request: web.Request) -> str:
        return f"http://{self.camera.xaddr_host or request.host}"

    def _op_GetSystemDateAndTime(self, request: web.Request, op: Any) -> web.Response:
        now = self._now() + dt.timedelta(seconds=self.camera.reported_offset)
        return _ok(
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time>"
            f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month>"
            f"<tt:Day>{now.day}</tt:Day></tt:Date>"
            "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _op_GetServices(self, request: web.Request, op: Any) -> web.Response:
        base = self._base(request)
        services = "".join(
            f"<tds:Service><tds:Namespace>{ns}</tds:Namespace>"
            f"<tds:XAddr>{base}{path}</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version></tds:Service>"
            for ns, path in self._services()
        )
        return _ok(f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>")

    def _services(self) -> list[tuple[str, str]]:
        out = [(NS_TDS, "/onvif/device_service"), (NS_TRT, "/onvif/media_service")]
        if self.camera.ptz:
            out.append((NS_PTZ, "/onvif/ptz_service"))
        return out

    def _op_GetCapabilities(self, request: web.Request, op: Any) -> web.Response:
        base = self._base(request)
        ptz = f"<tt:PTZ><tt:XAddr>{base}/onvif/ptz_service</tt:XAddr></tt:PTZ>"
        return _ok(
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Media><tt:XAddr>{base}/onvif/media_service</tt:XAddr>"
            "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
            "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            "</tt:StreamingCapabilities></tt:Media>"
            f"{ptz if self.camera.ptz else ''}"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _op_GetDeviceInformation(self, request: web.Request, op: Any) -> web.Response:
        c = self.camera
        return _ok(
            "<tds:GetDeviceInformationResponse>"
            f"<tds:Manufacturer>{c.vendor}</tds:Manufacturer><tds:Model>{c.model}</tds:Model>"
            f"<tds:FirmwareVersion>{c.firmware}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{c.serial}</tds:SerialNumber>"
            f"<tds:HardwareId>{c.hardware_id}</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        )

    def _op_GetNetworkInterfaces(self, request: web.Request, op: Any) -> web.Response:
        if not self.camera.network_interfaces:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        return _ok(
            "<tds:GetNetworkInterfacesResponse>"
            # A disabled interface first: the prober must take the first *enabled* one.
            '<tds:NetworkInterfaces token="eth1"><tt:Enabled>false</tt:Enabled>'
            "<tt:Info><tt:Name>eth1</tt:Name><tt:HwAddress>00:00:00:00:00:01</tt:HwAddress>"
            "</tt:Info></tds:NetworkInterfaces>"
            '<tds:NetworkInterfaces token="eth0"><tt:Enabled>true</tt:Enabled>'
            f"<tt:Info><tt:Name>eth0</tt:Name><tt:HwAddress>{self.camera.mac}</tt:HwAddress>"
            "<tt:MTU>1500</tt:MTU></tt:Info></tds:NetworkInterfaces>"
            "</tds:GetNetworkInterfacesResponse>"
        )

    def _op_GetServiceCapabilities(self, request: web.Request, op: Any) -> web.Response:
        """Device service capabilities; `GeoLocationEntries` is how ONVIF Core announces
        GetGeoLocation (a number of entries the device keeps)."""
        if not self.camera.service_capabilities:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        geo = (
            ' GeoLocationEntries="1"'
            if self.camera.geolocation is not None and self.camera.geo_announced
            else ""
        )
        return _ok(
            "<tds:GetServiceCapabilitiesResponse><tds:Capabilities>"
            '<tds:Network IPFilter="false" ZeroConfiguration="false" IPVersion6="false"'
            ' DynDNS="false"/><tds:Security TLS1.2="false" UsernameToken="true"/>'
            f'<tds:System DiscoveryResolve="true" DiscoveryBye="true"{geo}/>'
            "</tds:Capabilities></tds:GetServiceCapabilitiesResponse>"
        )

    def _op_GetGeoLocation(self, request: web.Request, op: Any) -> web.Response:
        if self.camera.geolocation is None:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        lon, lat, elevation = self.camera.geolocation
        return _ok(
            "<tds:GetGeoLocationResponse>"
            f'<tds:Location Entity="{self.camera.geo_entity}" Token="loc0" Fixed="true">'
            f'<tt:GeoLocation lon="{lon}" lat="{lat}" elevation="{elevation}"/>'
            "</tds:Location></tds:GetGeoLocationResponse>"
        )

    # --- media service --------------------------------------------------------------------

    def _op_GetProfiles(self, request: web.Request, op: Any) -> web.Response:
        profiles = "".join(
            f'<trt:Profiles token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
            f'<tt:VideoSourceConfiguration token="VSC_{p.source}"><tt:Name>{p.source}</tt:Name>'
            f"<tt:UseCount>2</tt:UseCount><tt:SourceToken>{p.source}</tt:SourceToken>"
            '<tt:Bounds x="0" y="0" width="1920" height="1080"/></tt:VideoSourceConfiguration>'
            f'<tt:VideoEncoderConfiguration token="VE_{p.token}">'
            f"<tt:Name>VE_{p.name}</tt:Name><tt:UseCount>1</tt:UseCount>"
            f"<tt:Encoding>{p.encoding}</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height>"
            "</tt:Resolution><tt:Quality>3</tt:Quality>"
            f"<tt:RateControl><tt:FrameRateLimit>{p.fps}</tt:FrameRateLimit>"
            "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>4096</tt:BitrateLimit>"
            "</tt:RateControl><tt:SessionTimeout>PT5S</tt:SessionTimeout>"
            "</tt:VideoEncoderConfiguration></trt:Profiles>"
            for p in self.camera.profiles
        )
        return _ok(f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>")

    def _token(self, op: Any) -> str | None:
        token = op.findtext(f"{{{NS_TRT}}}ProfileToken")
        if token not in {p.token for p in self.camera.profiles}:
            return None
        return str(token)

    def _op_GetStreamUri(self, request: web.Request, op: Any) -> web.Response:
        token = self._token(op)
        if token is None:
            return _fault("env:Sender", "ter:InvalidArgVal", "No such profile")
        host = self.camera.stream_host or request.host.rsplit(":", 1)[0]
        return _ok(
            "<trt:GetStreamUriResponse><trt:MediaUri>"
            f"<tt:Uri>rtsp://{host}:554/Streaming/Channels/{token}?transportmode=unicast</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            "</trt:MediaUri></trt:GetStreamUriResponse>"
        )

    def _op_GetSnapshotUri(self, request: web.Request, op: Any) -> web.Response:
        token = self._token(op)
        if not self.camera.snapshot:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        if token is None:
            return _fault("env:Sender", "ter:InvalidArgVal", "No such profile")
        return _ok(
            "<trt:GetSnapshotUriResponse><trt:MediaUri>"
            f"<tt:Uri>{self._base(request)}/onvif/snapshot/{token}.jpg</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
            "</trt:MediaUri></trt:GetSnapshotUriResponse>"
        )

    # --- PTZ service ----------------------------------------------------------------------

    def _op_RelativeMove(self, request: web.Request, op: Any) -> web.Response:
        """Move by the PanTilt translation (ONVIF generic space); a stuck head answers the
        same and stays put. The position goes to `ptz_file`, which the GStreamer `/ptz-<i>`
        mounts read: the picture moves as the camera does."""
        if not self.camera.ptz:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        token = str(op.findtext(f"{{{NS_PTZ}}}ProfileToken") or "")
        if token not in {p.token for p in self.camera.profiles}:
            return _fault("env:Sender", "ter:InvalidArgVal", "No such profile")
        pan_tilt = op.find(f"{{{NS_PTZ}}}Translation/{{{NS_TT}}}PanTilt")
        if pan_tilt is None:
            return _fault("env:Sender", "ter:InvalidArgVal", "No PanTilt translation")
        x, y = float(pan_tilt.get("x", 0)), float(pan_tilt.get("y", 0))
        self.camera.moves.append((token, x, y))
        if not self.camera.ptz_stuck:
            self.camera.ptz_position = max(-1.0, min(1.0, self.camera.ptz_position + x))
            if self.camera.ptz_file is not None:
                with open(self.camera.ptz_file, "w") as f:
                    f.write(f"{self.camera.ptz_position}\n")
        return _ok(f'<tptz:RelativeMoveResponse xmlns:tptz="{NS_PTZ}"/>')


def _as_soap11(text: str) -> str:
    """The same answer in a SOAP 1.1 envelope; a fault in 1.1 form (faultcode/faultstring),
    the subcode in faultcode as SOAP 1.1 devices send it."""
    if "<env:Fault>" in text:
        root = etree.fromstring(text.encode())
        fault = root.find(f"{{{NS_SOAP12}}}Body/{{{NS_SOAP12}}}Fault")
        sub = fault.findtext(f".//{{{NS_SOAP12}}}Subcode/{{{NS_SOAP12}}}Value") or ""
        reason = fault.findtext(f".//{{{NS_SOAP12}}}Text") or ""
        one = (
            f"<env:Fault><faultcode>{sub}</faultcode>"
            f"<faultstring>{reason}</faultstring></env:Fault>"
        )
        head, _, rest = text.partition("<env:Fault>")
        text = head + one + rest.partition("</env:Fault>")[2]
    return text.replace(NS_SOAP12, NS_SOAP11)


def _hostile(response: web.Response, kind: str) -> web.Response:
    """One answer made hostile: a DTD with an external entity or nested expansions, or
    padded past the prober's 2 MiB cap (Content-Length announced)."""
    text = response.text or ""
    if kind == "huge":
        head, sep, tail = text.partition("<env:Body>")
        text = head + sep + "<!--" + "x" * (3 * 2**20) + "-->" + tail
    else:
        doctype = _XXE_DOCTYPE if kind == "xxe" else _LAUGHS_DOCTYPE
        entity = "&xxe;" if kind == "xxe" else "&lol9;"
        head, _, rest = text.partition("?>")
        text = f"{head}?>{doctype}{rest}".replace(
            "<tt:GeoLocation", f"<tt:Note>{entity}</tt:Note><tt:GeoLocation", 1
        )
    return web.Response(status=response.status, text=text, content_type=_CONTENT_TYPE)


def _ok(body: str) -> web.Response:
    return web.Response(text=_ENVELOPE.format(body=body), content_type=_CONTENT_TYPE)


def _fault(code: str, subcode: str, reason: str, *, status: int = 400) -> web.Response:
    """A SOAP 1.2 fault as ONVIF devices send them (HTTP 400 for sender faults)."""
    body = (
        f"<env:Fault><env:Code><env:Value>{code}</env:Value>"
        f"<env:Subcode><env:Value>{subcode}</env:Value></env:Subcode></env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>'
    )
    status = 500 if code == "env:Receiver" and status == 400 else status
    return web.Response(status=status, text=_ENVELOPE.format(body=body), content_type=_CONTENT_TYPE)
