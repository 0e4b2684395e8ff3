"""RTSP/1.0 protocol probe: TCP connect, `OPTIONS`, `DESCRIBE` (with Basic or Digest auth).

This is the second rung of the probe ladder (DESIGN.md §2 "Health and KPIs"): it costs one short
TCP conversation and no decoding, so it can run on every camera every cycle, while frame sampling
runs on a rotating subset. It speaks the protocol itself rather than through OpenCV/FFmpeg
because those hide *why* a stream fails (refused, timed out, wrong password, wrong path, broken
server) behind one "could not open", and the operator needs exactly that distinction.

Every answer from the camera is untrusted: sizes are bounded by `max_response_bytes`, every wait
by a timeout, and anything unparseable becomes `failure="protocol_error"` instead of an
exception. Credentials never leave this module in text: results and log lines carry the URI
through `redact_uri`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from health.errors import InvalidProbeTarget

__all__ = [
    "Failure",
    "ProbeResult",
    "SdpInfo",
    "SdpMedia",
    "parse_sdp",
    "probe_rtsp",
    "redact_uri",
]

log = logging.getLogger(__name__)

Failure = Literal[
    "unreachable", "timeout", "auth_failed", "not_found", "protocol_error", "server_error"
]

USER_AGENT = "camera-registry/0.1 (health probe)"
DEFAULT_PORT = 554

# RTP/AVP static payload types (RFC 3551) so an SDP without `a=rtpmap` still names its codec.
_STATIC_PAYLOADS = {
    0: "PCMU",
    3: "GSM",
    4: "G723",
    8: "PCMA",
    9: "G722",
    14: "MPA",
    18: "G729",
    26: "JPEG",
    31: "H261",
    32: "MPV",
    33: "MP2T",
    34: "H263",
}
_STATUS_LINE = re.compile(r"RTSP/(\d)\.(\d) +(\d{3})(?: (.*))?")


def redact_uri(uri: str) -> str:
    """Replace the userinfo of `uri` with `***`, so the URI can go into logs and messages.

    Works on strings that do not parse as URLs too (falls back to cutting at the last `@` of the
    authority), because a malformed URI is exactly the kind that ends up in an error message.
    """
    scheme_sep = uri.find("://")
    if scheme_sep < 0:
        return uri
    start = scheme_sep + 3
    end = len(uri)
    for stop in "/?#":
        pos = uri.find(stop, start)
        if pos >= 0:
            end = min(end, pos)
    at = uri.rfind("@", start, end)
    if at < 0:
        # An unescaped '/', '?' or '#' in a password ends the authority early; masking up to the
        # last '@' may hide part of a path too, which is the safe way to be wrong.
        at = uri.rfind("@", start)
    if at < 0:
        return uri
    return f"{uri[:start]}***@{uri[at + 1 :]}"


@dataclass(frozen=True, slots=True)
class SdpMedia:
    """One `m=` section: what the camera offers and where to `SETUP` it."""

    kind: str
    payload_type: int | None
    codec: str | None
    clock_rate: int | None
    control: str | None


@dataclass(frozen=True, slots=True)
class SdpInfo:
    """What the DESCRIBE answer says about the stream; `None` where the camera did not say."""

    media: tuple[SdpMedia, ...]
    video_codec: str | None
    width: int | None
    height: int | None
    fps: float | None
    audio_codec: str | None
    control: str | None = None


@dataclass(slots=True)
class ProbeResult:
    """Outcome of one probe; `detail` is a sentence for the operator, free of credentials."""

    uri: str
    ok: bool
    failure: Failure | None
    detail: str
    status_code: int | None = None
    connect_ms: float | None = None
    options_ms: float | None = None
    describe_ms: float | None = None
    sdp: SdpInfo | None = None
    server: str | None = None


class _ProtocolError(Exception):
    """The camera's answer is not RTSP we can read; message is operator-facing."""


class _ClosedBeforeAnswer(_ProtocolError):
    """EOF before the first byte: on a reused connection the camera merely hung up idle."""


@dataclass(slots=True)
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]


@dataclass(slots=True)
class _Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Target:
    host: str
    port: int
    request_uri: str
    redacted: str
    username: str | None
    password: str | None


def _parse_target(uri: str, username: str | None, password: str | None) -> _Target:
    redacted = redact_uri(uri)
    # The parser's own message may quote part of the password, so it is not passed on.
    try:
        parts = urlsplit(uri)
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise InvalidProbeTarget(
            f"{redacted} is not a valid RTSP URI; check the host and port, and percent-encode "
            "reserved characters in embedded credentials"
        ) from None
    if parts.netloc and "@" in uri.partition("://")[2].partition(parts.netloc)[2]:
        raise InvalidProbeTarget(
            f"{redacted} has an '@' after the host; percent-encode reserved characters "
            "(/ ? # @) in the password or pass the credentials separately"
        )
    if parts.scheme.lower() != "rtsp":
        raise InvalidProbeTarget(
            f"{redacted} is not an rtsp:// URI; only plain RTSP can be probed here"
        )
    host = parts.hostname
    if not host:
        raise InvalidProbeTarget(f"{redacted} names no host; register the camera's address")
    netloc = parts.netloc.rpartition("@")[2]
    request_uri = urlunsplit(("rtsp", netloc, parts.path or "/", parts.query, ""))
    # Explicit credentials win over ones embedded in the URI: the registry's credential store is
    # the maintained source, the URI may be a stale copy from a ledger.
    if username is None and parts.username is not None:
        username = unquote(parts.username)
    if password is None and parts.password is not None:
        password = unquote(parts.password)
    return _Target(host, port, request_uri, redacted, username, password)


def _scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    """Last line of defence: text from the OS or the camera must not echo a password back."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def _read_response(reader: asyncio.StreamReader, limit: int) -> _Response:
    """Read one RTSP answer, never buffering more than `limit` bytes of it.

    Lines are read with `readuntil`, whose own buffer limit (set on the connection) stops a line
    without end; the running total stops an endless header section; Content-Length is checked
    before the body is read, so a hostile length never allocates.
    """
    total = 0

    async def line() -> str:
        nonlocal total
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _ProtocolError(f"sent a line longer than {limit} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if total == 0 and not exc.partial:
                raise _ClosedBeforeAnswer("closed the connection without answering") from None
            raise _ProtocolError("closed the connection in the middle of its answer") from None
        total += len(raw)
        if total > limit:
            raise _ProtocolError(f"sent an answer larger than {limit} bytes")
        # latin-1 maps every byte, so a binary answer fails the status-line check, not decoding.
        return raw.decode("latin-1").rstrip("\r\n")

    status_line = await line()
    skipped = 0
    while not status_line and skipped < 4:  # tolerate stray CRLFs left from a previous answer
        skipped += 1
        status_line = await line()
    match = _STATUS_LINE.fullmatch(status_line.strip())
    if match is None:
        if status_line.startswith("HTTP/"):
            raise _ProtocolError("answered with HTTP, not RTSP (is this the web port?)")
        raise _ProtocolError("did not answer with an RTSP status line")
    status = int(match.group(3))
    reason = (match.group(4) or "").strip()

    headers: list[tuple[str, str]] = []
    while True:
        text = await line()
        if not text:
            break
        if text[0] in " \t":
            if not headers:
                raise _ProtocolError("sent a continuation line before any header")
            key, value = headers[-1]
            headers[-1] = (key, f"{value} {text.strip()}".strip())
            continue
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise _ProtocolError("sent a malformed header line")
        headers.append((name.strip().lower(), value.strip()))

    body = b""
    lengths = [value for key, value in headers if key == "content-length"]
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit():
            raise _ProtocolError("sent an invalid Content-Length")
        length = int(lengths[0])
        if total + length > limit:
            raise _ProtocolError(f"announced a {length}-byte body, more than the {limit} allowed")
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise _ProtocolError("closed the connection before sending the whole body") from None
    return _Response(status, reason, headers, body)


_CHALLENGE_TOKEN = re.compile(
    r"""\s*(?:
        (?P<key>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*
            (?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<token>[^\s,]*))
        | (?P<scheme>[!#$%&'*+\-.^_`|~0-9A-Za-z]+)
        | (?P<comma>,)
    )""",
    re.VERBOSE,
)


def _parse_challenges(values: list[str]) -> list[_Challenge]:
    """Split `WWW-Authenticate` headers into challenges (RFC 7235 §4.1).

    One header may carry several challenges (`Digest realm=.., nonce=.., Basic realm=..`) and
    several headers may each carry one; both happen on real cameras.
    """
    challenges: list[_Challenge] = []
    for value in values:
        pos = 0
        current: _Challenge | None = None
        while pos < len(value):
            match = _CHALLENGE_TOKEN.match(value, pos)
            if match is None or match.end() == pos:
                break
            pos = match.end()
            if match.group("scheme"):
                current = _Challenge(match.group("scheme").lower())
                challenges.append(current)
            elif match.group("key") and current is not None:
                quoted = match.group("quoted")
                param = (
                    re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group("token")
                )
                current.params[match.group("key").lower()] = param or ""
    return challenges


_DIGEST_HASHES = {"md5": hashlib.md5, "sha-256": hashlib.sha256}


class _Authenticator:
    """Holds the chosen challenge so later requests on the connection authenticate up front."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.challenge: _Challenge | None = None
        self.nc = 0

    def accept(self, challenges: list[_Challenge]) -> bool:
        """Pick the best challenge we can answer; Digest first, as it never sends the password."""
        usable = [
            c
            for c in challenges
            if c.scheme == "digest"
            and "nonce" in c.params
            and c.params.get("algorithm", "MD5").lower().removesuffix("-sess") in _DIGEST_HASHES
        ]
        usable.sort(key=lambda c: c.params.get("algorithm", "MD5").lower().startswith("md5"))
        usable += [c for c in challenges if c.scheme == "basic"]
        if not usable:
            return False
        self.challenge = usable[0]
        self.nc = 0
        return True

    def header(self, method: str, uri: str) -> str | None:
        challenge = self.challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return f"Basic {token}"
        params = challenge.params
        algorithm = params.get("algorithm", "MD5")
        base_alg = algorithm.lower().removesuffix("-sess")
        hash_fn = _DIGEST_HASHES[base_alg]

        def h(text: str) -> str:
            return hash_fn(text.encode()).hexdigest()

        realm = params.get("realm", "")
        nonce = params["nonce"]
        cnonce = os.urandom(8).hex()
        ha1 = h(f"{self.username}:{realm}:{self.password}")
        if algorithm.lower().endswith("-sess"):
            ha1 = h(f"{ha1}:{nonce}:{cnonce}")
        qops = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else ("auth-int" if "auth-int" in qops else None)
        # DESCRIBE and OPTIONS have no body, so auth-int hashes the empty entity.
        ha2 = h(f"{method}:{uri}:{h('')}") if qop == "auth-int" else h(f"{method}:{uri}")
        fields = [
            f'username="{_quote(self.username)}"',
            f'realm="{_quote(realm)}"',
            f'nonce="{_quote(nonce)}"',
            f'uri="{_quote(uri)}"',
        ]
        if qop is None:
            response = h(f"{ha1}:{nonce}:{ha2}")
        else:
            self.nc += 1
            nc = f"{self.nc:08x}"
            response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
            fields += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        fields.append(f'response="{response}"')
        if "algorithm" in params:
            fields.append(f"algorithm={algorithm}")
        if "opaque" in params:
            fields.append(f'opaque="{_quote(params["opaque"])}"')
        return "Digest " + ", ".join(fields)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class _Session:
    """One TCP connection to the camera, re-opened when the camera closes it between requests."""

    def __init__(
        self,
        target: _Target,
        *,
        connect_timeout: float,
        request_timeout: float,
        max_response_bytes: int,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.limit = max_response_bytes
        self.cseq = 0
        self.sent_on_connection = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.auth: _Authenticator | None = None
        self.unsupported_schemes: list[str] | None = None
        if target.username is not None:
            self.auth = _Authenticator(target.username, target.password or "")

    async def connect(self) -> None:
        async with asyncio.timeout(self.connect_timeout):
            self.reader, self.writer = await asyncio.open_connection(
                self.target.host, self.target.port, limit=self.limit
            )
        self.sent_on_connection = 0

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

    async def request(self, method: str, extra: dict[str, str]) -> _Response:
        """Send `method`; on a 401 answer the challenge and retry exactly once."""
        response = await self._exchange(method, extra)
        if response.status != 401 or self.auth is None:
            return response
        challenges = _parse_challenges(response.get_all("www-authenticate"))
        if not self.auth.accept(challenges):
            self.unsupported_schemes = sorted({c.scheme for c in challenges})
            return response
        if (response.get("connection") or "").lower() == "close" or self.writer is None:
            await self.close()
        return await self._exchange(method, extra)

    async def _exchange(self, method: str, extra: dict[str, str]) -> _Response:
        if self.writer is None:
            await self.connect()
        if self.sent_on_connection == 0:
            return await self._send(method, extra)
        # Many cameras hang up after a 401 or between requests without saying
        # `Connection: close`; that is not a fault, so one fresh connection is tried.
        try:
            return await self._send(method, extra)
        except (_ClosedBeforeAnswer, ConnectionError):
            await self.close()
            await self.connect()
            return await self._send(method, extra)

    async def _send(self, method: str, extra: dict[str, str]) -> _Response:
        assert self.reader is not None and self.writer is not None
        self.cseq += 1
        lines = [
            f"{method} {self.target.request_uri} RTSP/1.0",
            f"CSeq: {self.cseq}",
            f"User-Agent: {USER_AGENT}",
        ]
        lines += [f"{k}: {v}" for k, v in extra.items()]
        if self.auth is not None:
            header = self.auth.header(method, self.target.request_uri)
            if header is not None:
                lines.append(f"Authorization: {header}")
        self.sent_on_connection += 1
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(self.request_timeout):
            await self.writer.drain()
            response = await _read_response(self.reader, self.limit)
        if (response.get("connection") or "").lower() == "close":
            await self.close()
        return response


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000.0, 3)


async def probe_rtsp(
    uri: str,
    *,
    username: str | None,
    password: str | None,
    connect_timeout: float = 2.0,
    request_timeout: float = 3.0,
    max_response_bytes: int = 65536,
) -> ProbeResult:
    """Probe one RTSP stream; never raises for anything the camera does.

    Raises `InvalidProbeTarget` only when `uri` itself is unusable (not rtsp://, no host), since
    that is a registry row to fix rather than a camera state. `connect_timeout` bounds the TCP
    connect (including DNS); `request_timeout` bounds each request/answer exchange separately.
    OPTIONS and DESCRIBE may each be retried once with credentials, and a camera that hangs up
    between requests is reconnected once per request, so the worst case is four connects and
    seven exchanges, each under its own timeout; a camera that simply does not answer costs one
    connect plus one `request_timeout`.
    """
    target = _parse_target(uri, username, password)
    secrets = (target.password,)
    result = ProbeResult(uri=target.redacted, ok=False, failure=None, detail="")
    session = _Session(
        target,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        max_response_bytes=max_response_bytes,
    )
    where = f"{target.host}:{target.port}"
    step = "connect"
    try:
        start = time.monotonic()
        try:
            await session.connect()
        except TimeoutError:
            return _fail(
                result,
                "timeout",
                f"TCP connect to {where} got no answer within {connect_timeout:g} s; check the "
                "camera is powered and routed, and that no firewall drops RTSP traffic.",
            )
        except OSError as exc:
            reason = _scrub(exc.strerror or str(exc) or type(exc).__name__, secrets)
            return _fail(
                result,
                "unreachable",
                f"Cannot connect to {where} ({reason}); check the address and port, that the "
                "camera is on, and that its RTSP service is enabled.",
            )
        result.connect_ms = _ms(start)

        step = "OPTIONS"
        start = time.monotonic()
        options = await session.request("OPTIONS", {})
        result.options_ms = _ms(start)
        result.server = options.get("server")
        if options.status == 401:
            return _auth_failed(result, target, options.status, session.unsupported_schemes)
        # OPTIONS is optional in practice: some cameras answer 404/405/501 and still stream, so
        # only DESCRIBE decides.

        step = "DESCRIBE"
        start = time.monotonic()
        describe = await session.request("DESCRIBE", {"Accept": "application/sdp"})
        result.describe_ms = _ms(start)
        result.server = describe.get("server") or result.server
        if describe.status == 401:
            return _auth_failed(result, target, describe.status, session.unsupported_schemes)
        return _judge_describe(result, target, describe, secrets)
    except TimeoutError:
        return _fail(
            result,
            "timeout",
            f"{where} accepted the connection but did not answer {step} within "
            f"{request_timeout:g} s; the RTSP service may be hung, reboot the camera or NVR.",
        )
    except _ProtocolError as exc:
        return _fail(
            result,
            "protocol_error",
            f"{where} {exc} (during {step}); check that the port is the camera's RTSP port and the "
            "firmware is not faulty.",
        )
    except OSError as exc:
        reason = _scrub(exc.strerror or str(exc) or type(exc).__name__, secrets)
        return _fail(
            result,
            "protocol_error",
            f"The connection to {where} broke during {step} ({reason}); the RTSP service may be "
            "crashing or refusing this client.",
        )
    finally:
        await session.close()


def _fail(result: ProbeResult, failure: Failure, detail: str) -> ProbeResult:
    result.ok = False
    result.failure = failure
    result.detail = detail
    log.info("RTSP probe of %s failed (%s): %s", result.uri, failure, detail)
    return result


def _auth_failed(
    result: ProbeResult, target: _Target, status: int, unsupported: list[str] | None
) -> ProbeResult:
    result.status_code = status
    if unsupported is not None:
        offered = ", ".join(unsupported) or "no scheme at all"
        detail = (
            f"{target.redacted} demands authentication this probe cannot answer (offered: "
            f"{offered}); enable Digest or Basic authentication for RTSP on the camera."
        )
    elif target.username is None:
        detail = (
            f"{target.redacted} requires credentials and none are configured; set the camera's "
            "RTSP username and password in the registry."
        )
    else:
        detail = (
            f"{target.redacted} rejected the configured credentials; check the username and "
            "password, and that the account is not locked after failed logins."
        )
    return _fail(result, "auth_failed", detail)


def _judge_describe(
    result: ProbeResult, target: _Target, response: _Response, secrets: tuple[str | None, ...]
) -> ProbeResult:
    status = response.status
    result.status_code = status
    reason = _scrub(response.reason, secrets)
    if status == 403:
        return _fail(
            result,
            "auth_failed",
            f"{target.redacted} answered 403 {reason}: the account may not view this stream; "
            "check its permissions on the camera or NVR.",
        )
    if status in (404, 454):
        return _fail(
            result,
            "not_found",
            f"{target.redacted} answered {status} {reason}: no stream at this path; check the "
            "channel/stream path for this camera model.",
        )
    if status >= 500:
        return _fail(
            result,
            "server_error",
            f"{target.redacted} answered {status} {reason}; the camera or NVR is failing "
            "(often out of streaming sessions), retry later or reboot it.",
        )
    if status != 200:
        location = response.get("location")
        hint = f" to {redact_uri(location)}" if location and 300 <= status < 400 else ""
        return _fail(
            result,
            "protocol_error",
            f"{target.redacted} answered DESCRIBE with {status} {reason}{hint}, which this probe "
            "does not follow; register the stream URI the camera expects.",
        )
    content_type = (response.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/sdp" or not response.body:
        return _fail(
            result,
            "protocol_error",
            f"{target.redacted} answered DESCRIBE without an SDP body; the firmware may be "
            "faulty or this is not an RTSP stream path.",
        )
    base = response.get("content-base") or response.get("content-location") or target.request_uri
    sdp = parse_sdp(response.body.decode("utf-8", errors="replace"), base=base)
    if not sdp.media:
        return _fail(
            result,
            "protocol_error",
            f"{target.redacted} answered DESCRIBE with an SDP that describes no media.",
        )
    result.sdp = sdp
    result.ok = True
    result.failure = None
    size = f" {sdp.width}x{sdp.height}" if sdp.width and sdp.height else ""
    result.detail = (
        f"{target.redacted} answers RTSP and describes "
        f"{sdp.video_codec or 'no video'}{size}"
        f"{' with ' + sdp.audio_codec + ' audio' if sdp.audio_codec else ''}."
    )
    log.debug("RTSP probe of %s ok: %s", result.uri, result.detail)
    return result


def _strip_userinfo(uri: str) -> str:
    """Control URLs are kept for SETUP, so userinfo is dropped rather than masked."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return redact_uri(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _resolve_control(base: str, control: str) -> str:
    if control == "*":
        return _strip_userinfo(base)
    if "://" in control:
        return _strip_userinfo(control)
    # RFC 2326 C.1.1: relative to the base, which names a "directory" when it ends with '/'.
    if not base.endswith("/"):
        base += "/"
    return _strip_userinfo(urljoin(base, control))


def _parse_framesize(value: str) -> tuple[int, int] | None:
    # a=framesize:<pt> <width>-<height>
    match = re.fullmatch(r"\s*\d+\s+(\d+)\s*-\s*(\d+)\s*", value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _parse_dimensions(value: str) -> tuple[int, int] | None:
    # a=x-dimensions:<width>,<height>
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _parse_cliprect(value: str) -> tuple[int, int] | None:
    # a=cliprect:<top>,<left>,<bottom>,<right>
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*", value)
    if not match:
        return None
    top, left, bottom, right = (int(g) for g in match.groups())
    return (right - left, bottom - top) if right > left and bottom > top else None


def _parse_float(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if 0 < number < 1000 else None


@dataclass(slots=True)
class _SdpSection:
    kind: str
    payloads: list[int]
    rtpmap: dict[int, tuple[str, int | None]] = field(default_factory=dict)
    control: str | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None


def parse_sdp(text: str, *, base: str = "") -> SdpInfo:
    """Extract codecs, resolution, frame rate and control URLs from an SDP (RFC 4566).

    Tolerant by design: unknown or malformed lines are skipped, since cameras emit many
    vendor attributes; a value that cannot be read is `None`, never a guess. Resolution comes
    from `a=framesize` (most IP cameras), `a=x-dimensions` or `a=cliprect`, the first video
    section that states one winning; session-level `a=framerate` applies when a section has none.
    """

    session_control: str | None = None
    session_fps: float | None = None
    sections: list[_SdpSection] = []
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        current = sections[-1] if sections else None
        if kind == "m":
            fields_ = value.split()
            payloads = [int(p) for p in fields_[3:] if p.isdigit()] if len(fields_) > 3 else []
            sections.append(_SdpSection(fields_[0].lower() if fields_ else "", payloads))
            continue
        if kind != "a":
            continue
        name, _, attr = value.partition(":")
        name = name.lower()
        if name == "control":
            if current is None:
                session_control = attr.strip()
            else:
                current.control = attr.strip()
        elif name in ("framerate", "x-framerate"):
            fps = _parse_float(attr)
            if current is None:
                session_fps = fps
            elif fps is not None:
                current.fps = fps
        elif current is None:
            continue
        elif name == "rtpmap":
            match = re.fullmatch(r"\s*(\d+)\s+([^/\s]+)(?:/(\d+))?.*", attr)
            if match:
                clock = int(match.group(3)) if match.group(3) else None
                current.rtpmap[int(match.group(1))] = (match.group(2).upper(), clock)
        elif current.size is None:
            parser = {
                "framesize": _parse_framesize,
                "x-dimensions": _parse_dimensions,
                "cliprect": _parse_cliprect,
            }.get(name)
            if parser is not None:
                current.size = parser(attr)

    media: list[SdpMedia] = []
    for section in sections:
        payload = section.payloads[0] if section.payloads else None
        codec: str | None = None
        rate: int | None = None
        if payload is not None:
            if payload in section.rtpmap:
                codec, rate = section.rtpmap[payload]
            else:
                codec = _STATIC_PAYLOADS.get(payload)
        control = section.control
        resolved = _resolve_control(base, control) if control and base else control
        media.append(SdpMedia(section.kind, payload, codec, rate, resolved))

    video = [(s, m) for s, m in zip(sections, media, strict=True) if s.kind == "video"]
    audio = [m for m in media if m.kind == "audio"]
    size = next((s.size for s, _ in video if s.size), None)
    fps = next((s.fps for s, _ in video if s.fps), None) or (session_fps if video else None)
    control = session_control
    if control and base:
        control = _resolve_control(base, control)
    return SdpInfo(
        media=tuple(media),
        video_codec=video[0][1].codec if video else None,
        width=size[0] if size else None,
        height=size[1] if size else None,
        fps=fps,
        audio_codec=audio[0].codec if audio else None,
        control=control,
    )
