"""Stream URIs as technicians write them: credentials split off, reserved characters tolerated.

RFC 3986 ends the authority at the first `/`, `?` or `#`, so `rtsp://admin:pa#ss@10.1.1.5/x`
is, to a strict parser, the host `admin` with the port `pa` and a fragment. Ledgers and device
pages are full of such passwords (`#`, `?` and `/` are common in "strong" camera passwords), and
a strict reading would either fail or, worse, keep the password in a URI that every reader of
the registry sees. This parser reads the authority both ways and takes the reading whose host
is a real host: the strict one when it works, else the one ending at the last `@` before a
valid host. A URI neither reading can make sense of is refused with a message saying how to
write it (percent-encode the reserved characters), never guessed.

Every path that stores a stream URI (API, ledger, ONVIF, GB/T 28181) splits it here, so the
stored URI carries no userinfo and the credentials go to the sealed column.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
# host: a DNS name (letters, digits, '-', '_', '.'), an IPv4 literal, or a bracketed IPv6 literal
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+(?:%[\w.~-]+)?\]|[A-Za-z0-9_.-]+)(?::(\d{0,5}))?$")
_END = re.compile(r"[/?#]")


class StreamURIError(ValueError):
    """A stream URI this parser cannot read; the message says how to write it."""


@dataclass(frozen=True, slots=True)
class StreamURI:
    """A stream URI split into the URI to store (no userinfo) and its credentials."""

    uri: str
    username: str | None
    password: str | None

    @property
    def has_credentials(self) -> bool:
        return self.username is not None or self.password is not None


def _host_ok(hostport: str) -> bool:
    m = _HOSTPORT.match(hostport)
    if m is None:
        return False
    host, port = m.group(1), m.group(2)
    if port is not None and (port == "" or not 0 < int(port) < 65536):
        return False
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1].split("%", 1)[0])
        except ValueError:
            return False
        return True
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return not host.startswith(("-", ".")) and ".." not in host


def _dotted(hostport: str) -> bool:
    """An IP literal or a name with a dot: what a camera's host almost always is."""
    return hostport.startswith("[") or "." in hostport.split(":", 1)[0]


def _userinfo(text: str) -> tuple[str | None, str | None]:
    user, sep, password = text.partition(":")
    return unquote(user) or None, (unquote(password) or None) if sep else None


def split_stream_uri(text: str) -> StreamURI:
    """Split `text` into the URI to store and its credentials; StreamURIError if unreadable."""
    m = _SCHEME.match(text)
    if m is None or m.group(1).lower() not in SCHEMES:
        raise StreamURIError("must be an rtsp://, rtsps://, rtmp:// or http(s):// URI")
    scheme, rest = m.group(1), m.group(2)
    end = _END.search(rest)
    authority, tail = (rest[: end.start()], rest[end.start() :]) if end else (rest, "")
    strict: tuple[str, str, str] | None = None  # (userinfo, hostport, tail)
    userinfo, at, hostport = authority.rpartition("@")
    if _host_ok(hostport):
        strict = (userinfo if at else "", hostport, tail)
    # The lenient reading: userinfo runs to the last '@' after which a valid host follows.
    lenient: tuple[str, str, str] | None = None
    if "@" in tail:
        for i in range(len(rest) - 1, -1, -1):
            if rest[i] != "@":
                continue
            after = rest[i + 1 :]
            stop = _END.search(after)
            hp, tl = (after[: stop.start()], after[stop.start() :]) if stop else (after, "")
            if _host_ok(hp):
                lenient = (rest[:i], hp, tl)
            break
    chosen: tuple[str, str, str] | None
    if strict is not None and lenient is not None:
        # `rtsp://host/live@x` is a path with an '@'; `rtsp://admin:12/34@10.0.0.5/x` is a
        # password with a '/': the host that looks like a camera's address decides.
        chosen = lenient if _dotted(lenient[1]) and not _dotted(strict[1]) else strict
    else:
        chosen = strict or lenient
    if chosen is None:
        raise StreamURIError(
            "cannot read the host of this URI; if the user name or password holds "
            "@ # ? / or :, percent-encode them (%40 %23 %3F %2F %3A)"
        )
    info, hostport, tail = chosen
    user, password = _userinfo(info) if info else (None, None)
    return StreamURI(f"{scheme}://{hostport}{tail}", user, password)
