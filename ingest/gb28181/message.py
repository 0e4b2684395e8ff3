"""SIP messages (RFC 3261 §7, §20, §25): parse, build and serialise; TCP stream framing.

Devices on a province's private network run decades of firmware: compact header forms, folded
lines, bare LF line ends and missing Content-Length over UDP all occur, so the parser accepts
them. What it never accepts is unbounded input: header section, header count and body are
capped before anything is decoded, and a TCP stream that lies about Content-Length is cut.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ingest.gb28181.errors import MessageTooLarge, SipParseError

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 96
MAX_BODY_BYTES = 64 * 1024
"""A MANSCDP catalog MESSAGE is 1–8 KiB; 64 KiB is also the UDP datagram ceiling."""

BRANCH_MAGIC = "z9hG4bK"

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Content-Type",
        "Content-Length",
        "Expires",
        "Min-Expires",
        "Date",
        "User-Agent",
        "Server",
        "Allow",
        "Subject",
        "Event",
        "Subscription-State",
        "Authorization",
        "WWW-Authenticate",
        "Supported",
        "Route",
        "Record-Route",
        "Content-Encoding",
        "Allow-Events",
        "Retry-After",
        "Warning",
    )
}
_MULTI_VALUE = frozenset({"via", "contact", "route", "record-route"})
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9]{2})(?: (.*))?")
_REQUEST_LINE = re.compile(r"([A-Za-z]{1,32}) (\S{1,1024}) SIP/2\.0")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")

REASONS = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    423: "Interval Too Brief",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    489: "Bad Event",
    500: "Server Internal Error",
    503: "Service Unavailable",
}


def canonical(name: str) -> str:
    """The long, canonically capitalised form of a header name (compact forms expanded)."""
    known = _CANONICAL_OF.get(name)
    if known is not None:
        return known
    low = name.strip().lower()
    out = COMPACT[low] if low in COMPACT else _CANONICAL.get(low, name.strip())
    if len(_CANONICAL_OF) < _NAMES_REMEMBERED:  # bounded: names on the wire are the peer's
        _CANONICAL_OF[name] = out
    return out


def _key(name: str) -> str:
    """The lookup key of a header name: its canonical form, lower-cased (compact expanded)."""
    key = _KEY_OF.get(name)
    if key is None:
        key = canonical(name).lower()
        if len(_KEY_OF) < _NAMES_REMEMBERED:
            _KEY_OF[name] = key
    return key


# Every message looks up the same few header names a dozen times: remembered, not recomputed
# (the largest single cost of the SIP engine in a profile of keepalives).
_NAMES_REMEMBERED = 4_096
_CANONICAL_OF: dict[str, str] = {}
_KEY_OF: dict[str, str] = {}


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets (RFC 3261 §7.3.1)."""
    if "," not in value:  # the common case: one value
        value = value.strip()
        return [value] if value else []
    parts: list[str] = []
    depth_angle = 0
    quoted = False
    start = 0
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth_angle += 1
        elif ch == ">":
            depth_angle = max(0, depth_angle - 1)
        elif ch == "," and depth_angle == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse_params(text: str) -> dict[str, str]:
    """`;a=b;c` → {'a': 'b', 'c': ''}; names lower-cased, quotes removed."""
    out: dict[str, str] = {}
    for piece in text.split(";"):
        piece = piece.strip()
        if not piece:
            continue
        name, _, value = piece.partition("=")
        out[name.strip().lower()] = value.strip().strip('"')
    return out


def format_params(params: dict[str, str]) -> str:
    return "".join(f";{k}={v}" if v != "" else f";{k}" for k, v in params.items())


@dataclass(slots=True)
class SipUri:
    """`sip:user@host:port;params` — enough of RFC 3261 §19.1 for devices and platforms."""

    host: str
    user: str | None = None
    port: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    scheme: str = "sip"

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, sep, rest = text.partition(":")
        if not sep or scheme.lower() not in ("sip", "sips"):
            raise SipParseError("URI is not sip:")
        rest, _, header_part = rest.partition("?")
        del header_part
        rest, _, param_text = rest.partition(";")
        user: str | None = None
        if "@" in rest:
            user, _, rest = rest.rpartition("@")
            user = user.partition(":")[0] or None
        host, port = _split_host_port(rest)
        if not host:
            raise SipParseError("URI has no host")
        return cls(host, user, port, parse_params(param_text), scheme.lower())

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        userinfo = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}:{userinfo}{host}{port}{format_params(self.params)}"


def _split_host_port(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SipParseError("bad port")
        port = int(port_text)
    return host, port


@dataclass(slots=True)
class NameAddr:
    """From/To/Contact value: optional display name, URI in angle brackets, header params."""

    uri: SipUri
    display: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if "<" in text:
            display, _, rest = text.partition("<")
            uri_text, sep, param_text = rest.partition(">")
            if not sep:
                raise SipParseError("unclosed < in address")
            return cls(SipUri.parse(uri_text), display.strip().strip('"'), parse_params(param_text))
        # addr-spec without brackets: the params after the URI belong to the header (§20.10)
        uri_text, _, param_text = text.partition(";")
        return cls(SipUri.parse(uri_text), "", parse_params(param_text))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        proto, _, rest = text.strip().partition(" ")
        bits = proto.split("/")
        if len(bits) != 3 or bits[0].upper() != "SIP":
            raise SipParseError("bad Via protocol")
        sent_by, _, param_text = rest.strip().partition(";")
        host, port = _split_host_port(sent_by)
        if not host:
            raise SipParseError("Via without host")
        return cls(bits[2].upper(), host, port, parse_params(param_text))

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


class Headers:
    """Ordered, case-insensitive multi-map of header fields under their canonical names."""

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical(k), v) for k, v in items]
        self._keys: list[str] = [_key(k) for k, _ in self._items]  # lower-case, in step

    @classmethod
    def canonical_items(cls, items: list[tuple[str, str]]) -> Headers:
        """Headers from (name, value) pairs whose names are already canonical (ours)."""
        headers = cls.__new__(cls)
        headers._items = items
        headers._keys = [_key(k) for k, _ in items]
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        try:
            return self._items[self._keys.index(_key(name))][1]
        except ValueError:
            return default

    def __contains__(self, name: str) -> bool:
        return _key(name) in self._keys

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        if key not in self._keys:
            return []
        out: list[str] = []
        multi = key in _MULTI_VALUE
        for k, (_, v) in zip(self._keys, self._items, strict=True):
            if k == key:
                out.extend(split_commas(v) if multi else [v])
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every occurrence of `name` by one, kept at the first one's place."""
        canon = canonical(name)
        key = _key(name)
        if key not in self._keys:
            self._items.append((canon, value))
            self._keys.append(key)
            return
        first = self._keys.index(key)
        self._items[first] = (canon, value)
        keep = [j for j, k in enumerate(self._keys) if j <= first or k != key]
        self._items = [self._items[j] for j in keep]
        self._keys = [self._keys[j] for j in keep]

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        item = (canonical(name), value)
        if first:
            self._items.insert(0, item)
            self._keys.insert(0, _key(name))
        else:
            self._items.append(item)
            self._keys.append(_key(name))

    def remove(self, name: str) -> None:
        key = _key(name)
        if key not in self._keys:
            return
        keep = [j for j, k in enumerate(self._keys) if k != key]
        self._items = [self._items[j] for j in keep]
        self._keys = [self._keys[j] for j in keep]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        return Headers(self._items)


@dataclass(slots=True)
class SipMessage:
    headers: Headers
    body: bytes

    # --- typed views of the headers every transaction needs -------------------------------
    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        value = self.headers.get("Via")
        values = split_commas(value) if value is not None else []
        if not values:
            raise SipParseError("no Via")
        return Via.parse(values[0])

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    @property
    def contact(self) -> NameAddr | None:
        values = self.headers.get_all("Contact")
        if not values or values[0].strip() == "*":
            return None
        return NameAddr.parse(values[0])

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        value = self.headers.get("Content-Type") or ""
        return parse_params(value.partition(";")[2]).get("charset") or None

    def start_line(self) -> str:
        raise NotImplementedError

    def serialise(self) -> bytes:
        lines = [self.start_line()]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(slots=True)
class SipRequest(SipMessage):
    method: str = "OPTIONS"
    uri: str = ""

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass(slots=True)
class SipResponse(SipMessage):
    status: int = 200
    reason: str = "OK"
    # Why we refused (a counter name), never sent: every 4xx we send is counted by it.
    why: str = ""

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


def parse_cseq(value: str) -> tuple[int, str]:
    number, _, method = value.strip().partition(" ")
    if not number.isdigit() or len(number) > 10 or not _TOKEN.fullmatch(method.strip()):
        raise SipParseError("bad CSeq")
    return int(number), method.strip().upper()


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Header section and the rest; accepts CRLF or bare LF line ends."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            return data[:idx], data[idx + len(sep) :]
    if len(data) > MAX_HEADER_BYTES:
        raise MessageTooLarge("header section too large")
    raise SipParseError("no end of headers")


def parse_message(
    data: bytes, *, max_body: int = MAX_BODY_BYTES, stream: bool = False
) -> SipRequest | SipResponse:
    """Parse one complete message (a UDP datagram, or a frame cut by `StreamFramer`).

    Over UDP a missing Content-Length means "the rest of the datagram" (§18.3); a declared
    length beyond the datagram is an error, a shorter one truncates. With `stream=True` the
    caller has already framed the body by Content-Length.
    """
    head, rest = _split_head(data)
    if len(head) > MAX_HEADER_BYTES:
        raise MessageTooLarge("header section too large")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("gb18030", errors="replace")
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise SipParseError("empty message")
    start, header_lines = lines[0].strip(), lines[1:]
    items: list[tuple[str, str]] = []
    for line in header_lines:
        if line[:1] in (" ", "\t"):
            if not items:
                raise SipParseError("continuation line before first header")
            name, value = items[-1]
            items[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name.strip()):
            raise SipParseError("malformed header line")
        items.append((name, value.strip()))
        if len(items) > MAX_HEADERS:
            raise MessageTooLarge("too many headers")
    headers = Headers(items)
    length_text = headers.get("Content-Length")
    if length_text is not None:
        if not length_text.isdigit() or len(length_text) > 9:
            raise SipParseError("bad Content-Length")
        length = int(length_text)
        if length > max_body:
            raise MessageTooLarge(f"body of {length} bytes > {max_body}")
        if length > len(rest):
            raise SipParseError("body shorter than Content-Length")
        body = rest[:length]
    else:
        if stream:
            raise SipParseError("no Content-Length on a stream transport")
        body = rest
        if len(body) > max_body:
            raise MessageTooLarge(f"body of {len(body)} bytes > {max_body}")
    message: SipRequest | SipResponse
    status = _STATUS_LINE.fullmatch(start)
    if status:
        message = SipResponse(headers, body, int(status.group(1)), status.group(2) or "")
    else:
        request = _REQUEST_LINE.fullmatch(start)
        if not request:
            raise SipParseError("bad start line")
        message = SipRequest(headers, body, request.group(1).upper(), request.group(2))
    present = set(headers._keys)
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if required.lower() not in present:
            raise SipParseError(f"missing {required}")
    parse_cseq(headers.get("CSeq") or "")
    return message


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    source: tuple[str, int] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    why: str = "",
) -> SipResponse:
    """A response carrying the request's Via/From/To/Call-ID/CSeq (§8.2.6).

    With `source`, the top Via gets `received` and a filled `rport` (RFC 3581) so a device
    behind NAT gets the answer where it actually sent from.
    """
    items: list[tuple[str, str]] = []
    old = request.headers
    for i, via_text in enumerate(old.get_all("Via")):
        if i == 0 and source is not None:
            via = Via.parse(via_text)
            if via.host != source[0]:
                via.params["received"] = source[0]
            if "rport" in via.params:
                via.params["rport"] = str(source[1])
            via_text = str(via)
        items.append(("Via", via_text))
    to_value = old.get("To") or ""
    if to_tag and status > 100 and "tag=" not in to_value.lower():
        to_value = f"{to_value};tag={to_tag}"
    items += (
        ("From", old.get("From") or ""),
        ("To", to_value),
        ("Call-ID", old.get("Call-ID") or ""),
        ("CSeq", old.get("CSeq") or ""),
    )
    if content_type:
        items.append(("Content-Type", content_type))
    headers = Headers.canonical_items(items)
    return SipResponse(headers, body, status, reason or REASONS.get(status, ""), why)


class StreamFramer:
    """Cuts a TCP byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    The buffer never exceeds one header section plus one body cap: a peer sending endless
    headers, or a Content-Length beyond the cap, gets `MessageTooLarge` and the caller closes
    the connection (the stream cannot be resynchronised after a framing error).
    """

    def __init__(self, *, max_body: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._max_body = max_body
        self._need: int | None = None  # total length of the frame being read, once known

    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by `data`, each ready for `parse_message(..., stream=True)`."""
        self._buf += data
        frames: list[bytes] = []
        while True:
            if self._need is None:
                # RFC 5626 keepalives (CRLF) between messages are skipped.
                while self._buf[:2] == b"\r\n" or self._buf[:1] == b"\n":
                    del self._buf[: 2 if self._buf[:2] == b"\r\n" else 1]
                end = self._buf.find(b"\r\n\r\n")
                sep = 4
                if end < 0:
                    end = self._buf.find(b"\n\n")
                    sep = 2
                if end < 0:
                    if len(self._buf) > MAX_HEADER_BYTES:
                        raise MessageTooLarge("header section too large")
                    return frames
                if end > MAX_HEADER_BYTES:
                    raise MessageTooLarge("header section too large")
                length = _content_length(bytes(self._buf[:end]))
                if length is None:
                    raise SipParseError("no Content-Length on a stream transport")
                if length > self._max_body:
                    raise MessageTooLarge(f"body of {length} bytes > {self._max_body}")
                self._need = end + sep + length
            if len(self._buf) < self._need:
                return frames
            frames.append(bytes(self._buf[: self._need]))
            del self._buf[: self._need]
            self._need = None

    @property
    def buffered(self) -> int:
        return len(self._buf)


_CL_LINE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,9})[ \t]*\r?$", re.I | re.M)


def _content_length(head: bytes) -> int | None:
    match = _CL_LINE.search(head)
    return int(match.group(1)) if match else None
