"""A fake ONVIF camera on loopback, so the prober is tested against real HTTP and real SOAP.

Mocks of the client library would test our assumptions about it, not its behaviour; this server
answers what onvif-zeep-async really sends (SOAP 1.2 envelopes with a WS-UsernameToken
PasswordDigest), checks the digest for real, and reproduces the vendor quirks the prober must
survive: Hikvision-like main/sub streams, Dahua-like RTSP URIs naming a private host, devices
without GetNetworkInterfaces or without profiles, plain web servers answering 404, and devices
that accept the connection but never answer. Responses are minimal but use the element names
and namespaces of the ONVIF schemas, because zeep parses them against the WSDL types.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from lxml import etree  # type: ignore[import-untyped]

NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NS_TDS = "http://www.onvif.org/ver10/device/wsdl"
NS_TRT = "http://www.onvif.org/ver10/media/wsdl"
NS_TT = "http://www.onvif.org/ver10/schema"
NS_TER = "http://www.onvif.org/ver10/error"

_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:tds="{NS_TDS}" xmlns:trt="{NS_TRT}"'
    f' xmlns:tt="{NS_TT}" xmlns:ter="{NS_TER}"><env:Body>{{body}}</env:Body></env:Envelope>'
)
_CONTENT_TYPE = "application/soap+xml"

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

    # Observations, for assertions.
    in_flight: int = 0
    max_in_flight: int = 0
    requests: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


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


class FakeOnvifServer:
    """Runs one `FakeCamera` behind an aiohttp server on 127.0.0.1 and an ephemeral port."""

    def __init__(self, camera: FakeCamera) -> None:
        self.camera = camera
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._hangs: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> FakeOnvifServer:
        app = web.Application()
        app.router.add_post("/onvif/device_service", self._handle)
        app.router.add_post("/onvif/media_service", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
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
            if cam.hang:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._hangs.add(fut)
                try:
                    await fut
                finally:
                    self._hangs.discard(fut)
            if cam.delay:
                await asyncio.sleep(cam.delay)
            if cam.http_401:
                # Devices that guard ONVIF with HTTP Digest instead of WS-UsernameToken.
                return web.Response(
                    status=401, headers={"WWW-Authenticate": 'Digest realm="IPCamera", nonce="1"'}
                )
            if cam.http_404:
                return web.Response(status=404, text=cam.http_404_body, content_type="text/html")
            return self._answer(request, body)
        finally:
            cam.in_flight -= 1

    def _answer(self, request: web.Request, raw: bytes) -> web.Response:
        try:
            root = etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError:
            return _fault("env:Sender", "ter:WellFormed", "not well-formed", status=400)
        body = root.find(f"{{{NS_SOAP12}}}Body")
        if body is None or len(body) == 0:
            return _fault("env:Sender", "ter:WellFormed", "no body", status=400)
        op_el = body[0]
        op = etree.QName(op_el).localname
        self.camera.requests.append(op)
        if op not in _PRE_AUTH and not self._authorised(root):
            return _fault("env:Sender", "ter:NotAuthorized", "Sender not Authorized")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return _fault(
                "env:Receiver", "ter:ActionNotSupported", "Optional Action Not Implemented"
            )
        result: web.Response = handler(request, op_el)
        return result

    def _authorised(self, root: Any) -> bool:
        """Check the UsernameToken digest: Base64(SHA1(nonce + created + password))."""
        token = root.find(f".//{{{NS_WSSE}}}UsernameToken")
        if token is None:
            return False
        user = token.findtext(f"{{{NS_WSSE}}}Username") or ""
        password = token.find(f"{{{NS_WSSE}}}Password")
        nonce = token.findtext(f"{{{NS_WSSE}}}Nonce") or ""
        created = token.findtext(f"{{{NS_WSU}}}Created") or ""
        if password is None or not password.get("Type", "").endswith("#PasswordDigest"):
            return False
        try:
            nonce_raw = base64.b64decode(nonce)
        except ValueError:
            return False
        expected = base64.b64encode(
            hashlib.sha1(  # noqa: S324 - WS-Security UsernameToken mandates SHA-1
                nonce_raw + created.encode() + self.camera.password.encode()
            ).digest()
        ).decode()
        return user == self.camera.username and hmac.compare_digest(
            expected, (password.text or "").strip()
        )

    # --- device service -------------------------------------------------------------------

    def _base(self, request: web.Request) -> str:
        return f"http://{request.host}"

    def _op_GetSystemDateAndTime(self, request: web.Request, op: Any) -> web.Response:
        import datetime as dt

        now = dt.datetime.now(dt.UTC)
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
            for ns, path in ((NS_TDS, "/onvif/device_service"), (NS_TRT, "/onvif/media_service"))
        )
        return _ok(f"<tds:GetServicesResponse>{services}</tds:GetServicesResponse>")

    def _op_GetCapabilities(self, request: web.Request, op: Any) -> web.Response:
        base = self._base(request)
        return _ok(
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Media><tt:XAddr>{base}/onvif/media_service</tt:XAddr>"
            "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast>"
            "<tt:RTP_TCP>true</tt:RTP_TCP><tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP>"
            "</tt:StreamingCapabilities></tt:Media>"
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

    # --- media service --------------------------------------------------------------------

    def _op_GetProfiles(self, request: web.Request, op: Any) -> web.Response:
        profiles = "".join(
            f'<trt:Profiles token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
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
