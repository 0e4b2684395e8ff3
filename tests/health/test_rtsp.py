"""The RTSP probe against a fake camera speaking real RTSP on a loopback port.

The fake is a small asyncio server configured per test with the behaviours seen in the field:
plain cameras, Basic and Digest auth (the Digest response is recomputed and checked, not just
its presence), hung services, wrong ports, and hostile answers that never end.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from health.errors import HealthError, InvalidProbeTarget
from health.rtsp import ProbeResult, parse_sdp, probe_rtsp, redact_uri

USER = "admin"
PASSWORD = "Zq7-secret!pw"  # distinctive, so finding it anywhere is a real leak
REALM = "IP Camera(C2841)"

SDP = (
    "v=0\r\n"
    "o=- 1700000000000000 1 IN IP4 192.168.1.64\r\n"
    "s=Media Presentation\r\n"
    "e=NONE\r\n"
    "b=AS:5100\r\n"
    "t=0 0\r\n"
    "a=control:rtsp://192.168.1.64:554/Streaming/Channels/101/?transportmode=unicast\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "b=AS:5000\r\n"
    "a=recvonly\r\n"
    "a=x-dimensions:1920,1080\r\n"
    "a=control:trackID=1\r\n"
    "a=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 profile-level-id=420029; packetization-mode=1; "
    "sprop-parameter-sets=Z00AKp2oHgCJ+WbgICAoAAADAAgAAAMBlCA=,aO48gA==\r\n"
    "a=framesize:96 1920-1080\r\n"
    "a=framerate:25.000000\r\n"
    "m=audio 0 RTP/AVP 8\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "b=AS:50\r\n"
    "a=recvonly\r\n"
    "a=control:trackID=2\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=Media_header:MEDIAINFO=494D4B48010100000400010010710110401F000000FA000000000000000000;\r\n"
    "a=appversion:1.0\r\n"
)


@dataclass
class Request:
    method: str
    uri: str
    headers: dict[str, str]


@dataclass
class FakeCamera:
    """One camera behaviour; `mode` picks how it answers, `auth` what it demands."""

    mode: str = "normal"
    auth: str = "none"  # none | basic | digest | digest-noqop
    password: str = PASSWORD
    challenge_style: str = "one"  # one | combined (Basic and Digest in one header) | separate
    close_after_401: bool = False
    announce_close: bool = True  # send `Connection: close` before hanging up after a 401
    status: int = 200
    requests: list[Request] = field(default_factory=list)
    digest_verified: int = 0
    bytes_sent: int = 0
    nonce: str = "5f3a1c0b9e7d4a21"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *lines = head.decode().split("\r\n")
                method, uri, _ = request_line.split(" ")
                headers = {}
                for line in lines:
                    if line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                request = Request(method, uri, headers)
                self.requests.append(request)
                if not await self.answer(request, reader, writer):
                    return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self.bytes_sent += len(data)
        await writer.drain()

    async def answer(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False closes the connection."""
        cseq = request.headers.get("cseq", "0")
        if self.mode == "silent":  # swallow everything until the client gives up
            with contextlib.suppress(ConnectionError):
                while await reader.read(4096):
                    pass
            return False
        if self.mode == "garbage":
            await self.send(writer, b"SSH-2.0-OpenSSH_8.9p1\r\n\x00\xff\xfe binary \x01\r\n\r\n")
            return False
        if self.mode == "http":
            await self.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return True
        if self.mode == "endless_headers":
            await self.send(writer, f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n".encode())
            pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
            with contextlib.suppress(ConnectionError):
                for _ in range(20_000):  # 20 MB at most, should the client not stop reading
                    await self.send(writer, pad)
            return False
        if self.mode == "endless_body":
            await self.send(
                writer,
                f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                "Content-Length: 4000000000\r\n\r\n".encode(),
            )
            with contextlib.suppress(ConnectionError):
                for _ in range(20_000):
                    await self.send(writer, b"v" * 1000)
            return False
        if self.mode == "endless_line":
            with contextlib.suppress(ConnectionError):
                for _ in range(20_000):
                    await self.send(writer, b"R" * 1000)
            return False

        if not self.authorised(request):
            await self.send(writer, self.unauthorised(cseq))
            return not self.close_after_401
        if request.method == "OPTIONS":
            await self.send(
                writer,
                f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n"
                "Public: OPTIONS, DESCRIBE, PLAY, PAUSE, SETUP, TEARDOWN, SET_PARAMETER, "
                "GET_PARAMETER\r\n"
                "Date:  Fri, Nov 27 2026 06:00:00 GMT\r\n\r\n".encode(),
            )
            return True
        if self.status != 200:
            reason = {404: "Not Found", 454: "Session Not Found", 503: "Service Unavailable"}
            await self.send(
                writer,
                f"RTSP/1.0 {self.status} {reason.get(self.status, 'Error')}\r\n"
                f"CSeq: {cseq}\r\n\r\n".encode(),
            )
            return True
        body = SDP.encode()
        await self.send(
            writer,
            (
                f"RTSP/1.0 200 OK\r\ncseq: {cseq}\r\n"
                "content-type: application/sdp\r\n"
                "Content-Base: rtsp://192.168.1.64:554/Streaming/Channels/101/\r\n"
                "X-Folded: first part\r\n"
                "\tsecond part\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body,
        )
        return True

    def unauthorised(self, cseq: str) -> bytes:
        digest = f'Digest realm="{REALM}", nonce="{self.nonce}", stale="FALSE"'
        if self.auth == "digest":
            digest += ', qop="auth"'
        basic = f'Basic realm="{REALM}"'
        if self.auth == "basic":
            challenges = [basic]
        elif self.auth == "ntlm":
            challenges = ["NTLM"]
        elif self.challenge_style == "combined":
            challenges = [f"{basic}, {digest}"]
        elif self.challenge_style == "separate":
            challenges = [basic, digest]
        else:
            challenges = [digest]
        lines = ["RTSP/1.0 401 Unauthorized", f"CSeq: {cseq}"]
        lines += [f"WWW-Authenticate: {c}" for c in challenges]
        if self.close_after_401 and self.announce_close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def authorised(self, request: Request) -> bool:
        if self.auth == "none":
            return True
        header = request.headers.get("authorization", "")
        scheme, _, rest = header.partition(" ")
        if self.auth == "basic":
            if scheme != "Basic":
                return False
            return base64.b64decode(rest).decode() == f"{USER}:{self.password}"
        if scheme != "Digest":
            return False
        params = {
            m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)
        }

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        if params.get("username") != USER or params.get("uri") != request.uri:
            return False
        if params.get("realm") != REALM or params.get("nonce") != self.nonce:
            return False
        ha1 = md5(f"{USER}:{REALM}:{self.password}")
        ha2 = md5(f"{request.method}:{request.uri}")
        if self.auth == "digest":
            if params.get("qop") != "auth" or not params.get("cnonce"):
                return False
            expected = md5(f"{ha1}:{self.nonce}:{params.get('nc')}:{params['cnonce']}:auth:{ha2}")
        else:
            expected = md5(f"{ha1}:{self.nonce}:{ha2}")
        if params.get("response") != expected:
            return False
        self.digest_verified += 1
        return True


@contextlib.asynccontextmanager
async def serving(camera: FakeCamera) -> AsyncIterator[int]:
    """Run `camera` on a loopback port; on exit drop every connection and wait for handlers."""
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        await camera.handle(reader, writer)

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            assert not pending, "fake camera handlers did not stop"
        await server.wait_closed()


def assert_no_secret(result: ProbeResult, caplog: pytest.LogCaptureFixture) -> None:
    assert PASSWORD not in result.detail
    assert PASSWORD not in repr(result)
    assert PASSWORD not in caplog.text


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="health")


async def test_plain_camera_is_described_with_codec_resolution_and_controls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = FakeCamera()
    async with serving(camera) as port:
        uri = f"rtsp://127.0.0.1:{port}/Streaming/Channels/101"
        result = await probe_rtsp(uri, username=None, password=None)

    assert result.ok, result.detail
    assert result.failure is None
    assert result.status_code == 200
    assert result.sdp is not None
    assert result.sdp.video_codec == "H264"
    assert (result.sdp.width, result.sdp.height) == (1920, 1080)
    assert result.sdp.fps == 25.0
    assert result.sdp.audio_codec == "PCMA"
    assert [m.kind for m in result.sdp.media] == ["video", "audio"]
    assert [m.control for m in result.sdp.media] == [
        "rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=1",
        "rtsp://192.168.1.64:554/Streaming/Channels/101/trackID=2",
    ]
    assert result.sdp.media[0].clock_rate == 90000
    for ms in (result.connect_ms, result.options_ms, result.describe_ms):
        assert ms is not None and ms >= 0
    assert [r.method for r in camera.requests] == ["OPTIONS", "DESCRIBE"]
    assert [r.headers["cseq"] for r in camera.requests] == ["1", "2"]
    assert all(r.uri == uri for r in camera.requests)
    assert all(r.headers["user-agent"] for r in camera.requests)
    assert camera.requests[1].headers["accept"] == "application/sdp"
    assert "H264 1920x1080" in result.detail


async def test_digest_camera_accepts_a_correct_md5_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = FakeCamera(auth="digest")
    async with serving(camera) as port:
        result = await probe_rtsp(
            f"rtsp://127.0.0.1:{port}/h264/ch1/main/av_stream", username=USER, password=PASSWORD
        )
    assert result.ok, result.detail
    assert camera.digest_verified == 2  # OPTIONS retried, DESCRIBE authenticated up front
    ncs = [
        re.search(r"nc=(\w+)", r.headers["authorization"])
        for r in camera.requests
        if "authorization" in r.headers
    ]
    assert [m.group(1) for m in ncs if m] == ["00000001", "00000002"]
    assert_no_secret(result, caplog)


async def test_digest_without_qop_uses_rfc2069_response() -> None:
    camera = FakeCamera(auth="digest-noqop")
    async with serving(camera) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=USER, password=PASSWORD)
    assert result.ok, result.detail
    assert camera.digest_verified == 2


@pytest.mark.parametrize("style", ["combined", "separate"])
async def test_digest_is_preferred_when_basic_is_offered_too(style: str) -> None:
    camera = FakeCamera(auth="digest", challenge_style=style)
    async with serving(camera) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=USER, password=PASSWORD)
    assert result.ok, result.detail
    assert all(
        r.headers["authorization"].startswith("Digest ")
        for r in camera.requests
        if "authorization" in r.headers
    )


@pytest.mark.parametrize("announced", [True, False])
async def test_camera_hanging_up_after_401_is_reconnected_for_the_retry(announced: bool) -> None:
    camera = FakeCamera(auth="digest", close_after_401=True, announce_close=announced)
    async with serving(camera) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=USER, password=PASSWORD)
    assert result.ok, result.detail
    assert camera.digest_verified == 2


async def test_unsupported_auth_scheme_is_auth_failed_naming_the_scheme() -> None:
    async with serving(FakeCamera(auth="ntlm")) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=USER, password=PASSWORD)
    assert result.failure == "auth_failed"
    assert "ntlm" in result.detail


async def test_basic_camera_gets_base64_credentials(caplog: pytest.LogCaptureFixture) -> None:
    camera = FakeCamera(auth="basic")
    async with serving(camera) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=USER, password=PASSWORD)
    assert result.ok, result.detail
    assert camera.requests[-1].headers["authorization"].startswith("Basic ")
    assert_no_secret(result, caplog)


async def test_credentials_in_the_uri_are_used_and_stripped_from_the_request_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = FakeCamera(auth="digest", password="p@ss:w/rd")
    async with serving(camera) as port:
        uri = f"rtsp://{USER}:p%40ss%3Aw%2Frd@127.0.0.1:{port}/live"
        result = await probe_rtsp(uri, username=None, password=None)
    assert result.ok, result.detail
    assert result.uri == f"rtsp://***@127.0.0.1:{port}/live"
    assert all(r.uri == f"rtsp://127.0.0.1:{port}/live" for r in camera.requests)
    assert "p%40ss" not in repr(result) and "p%40ss" not in caplog.text
    assert "p@ss" not in repr(result) and "p@ss" not in caplog.text


async def test_wrong_password_is_auth_failed_and_never_echoed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = FakeCamera(auth="digest", password="the-right-one")
    async with serving(camera) as port:
        result = await probe_rtsp(
            f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{port}/", username=None, password=None
        )
    assert result.failure == "auth_failed"
    assert result.status_code == 401
    assert not result.ok
    assert "credentials" in result.detail
    assert_no_secret(result, caplog)
    assert "rejected" in caplog.text  # the failure is logged, redacted


async def test_auth_camera_without_configured_credentials_is_auth_failed() -> None:
    async with serving(FakeCamera(auth="digest")) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=None, password=None)
    assert result.failure == "auth_failed"
    assert "none are configured" in result.detail


async def test_silent_camera_times_out_within_the_request_timeout() -> None:
    async with serving(FakeCamera(mode="silent")) as port:
        start = time.monotonic()
        result = await probe_rtsp(
            f"rtsp://127.0.0.1:{port}/", username=None, password=None, request_timeout=0.5
        )
        elapsed = time.monotonic() - start
    assert result.failure == "timeout"
    assert "OPTIONS" in result.detail
    assert result.connect_ms is not None
    assert elapsed < 0.5 + 1.5  # correctness bound, not a benchmark


@pytest.mark.parametrize("mode", ["garbage", "http"])
async def test_non_rtsp_answer_is_protocol_error(mode: str) -> None:
    async with serving(FakeCamera(mode=mode)) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=None, password=None)
    assert result.failure == "protocol_error"
    assert result.detail


@pytest.mark.parametrize("mode", ["endless_headers", "endless_body", "endless_line"])
async def test_endless_answer_is_cut_off_as_protocol_error(mode: str) -> None:
    camera = FakeCamera(mode=mode)
    async with serving(camera) as port:
        start = time.monotonic()
        result = await probe_rtsp(
            f"rtsp://127.0.0.1:{port}/",
            username=None,
            password=None,
            max_response_bytes=8192,
            request_timeout=5.0,
        )
        elapsed = time.monotonic() - start
    assert result.failure == "protocol_error"
    assert "8192" in result.detail
    assert elapsed < 5.0  # stopped by the size bound, not by the timeout


async def test_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/", username=None, password=None)
    assert result.failure == "unreachable"
    assert f"127.0.0.1:{port}" in result.detail
    assert result.connect_ms is None


@pytest.mark.parametrize(
    ("status", "failure"), [(404, "not_found"), (454, "not_found"), (503, "server_error")]
)
async def test_describe_error_status_is_classified(status: int, failure: str) -> None:
    async with serving(FakeCamera(status=status)) as port:
        result = await probe_rtsp(f"rtsp://127.0.0.1:{port}/x", username=None, password=None)
    assert result.failure == failure
    assert result.status_code == status
    assert str(status) in result.detail


def test_non_rtsp_uri_is_rejected_before_any_connection() -> None:
    with pytest.raises(InvalidProbeTarget) as info:
        asyncio.run(probe_rtsp(f"http://u:{PASSWORD}@h/", username=None, password=None))
    assert isinstance(info.value, HealthError)
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        ("rtsp://admin:pw@10.0.0.1:554/a", "rtsp://***@10.0.0.1:554/a"),
        ("rtsp://admin:p@ss@10.0.0.1/a", "rtsp://***@10.0.0.1/a"),
        ("rtsp://admin:pa/ss@10.0.0.1/a", "rtsp://***@10.0.0.1/a"),
        ("rtsp://10.0.0.1/a", "rtsp://10.0.0.1/a"),
        ("not a uri", "not a uri"),
    ],
)
def test_redact_uri_hides_userinfo_even_when_malformed(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted


async def test_uri_without_host_is_rejected() -> None:
    with pytest.raises(InvalidProbeTarget):
        await probe_rtsp("rtsp:///Streaming/Channels/101", username=None, password=None)


async def test_password_with_unescaped_slash_is_rejected_without_echoing_it() -> None:
    with pytest.raises(InvalidProbeTarget) as info:
        await probe_rtsp("rtsp://admin:Zq7/x@10.0.0.1/", username=None, password=None)
    assert "Zq7" not in str(info.value)


def test_sdp_resolution_falls_back_to_x_dimensions_and_cliprect() -> None:
    dims = parse_sdp(
        "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=x-dimensions:704,576"
    )
    assert (dims.video_codec, dims.width, dims.height) == ("H265", 704, 576)
    clip = parse_sdp("m=video 0 RTP/AVP 26\na=cliprect:0,0,480,640\na=control:*")
    assert (clip.video_codec, clip.width, clip.height) == ("JPEG", 640, 480)
    none = parse_sdp("m=video 0 RTP/AVP 96\na=rtpmap:96 MP4V-ES/90000\na=framesize:96 junk")
    assert (none.video_codec, none.width, none.height, none.fps) == ("MP4V-ES", None, None, None)
