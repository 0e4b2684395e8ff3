"""HTTP digest authentication for SIP (RFC 2617 / RFC 3261 §22), MD5, both ends.

Server side: nonces are stateless — a timestamp and random bytes signed with HMAC — so an
unauthenticated REGISTER storm from thousands of source ports costs no memory at all. Only
requests that carry a correct password touch state: the replay cache, a bounded LRU of the
highest nonce-count seen per nonce (with qop) or of nonces already used (without qop), so a
captured Authorization cannot be sent again.

The response is checked against the `uri` inside the Authorization header, not the request's
Request-URI or our own address: GB devices hash `sip:<server id>@<domain>`, SIPp hashes the
Request-URI it sent, and both are right by RFC 2617 §3.2.2.

Client side (`authorization_for`) answers a challenge; the cascade registers upward with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

NONCE_TTL_S = 300.0
REPLAY_CACHE_SIZE = 200_000


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """`Digest a="b", c=d` → ('digest', {'a': 'b', 'c': 'd'}); quoted commas kept."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,\t":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            i += 1
            value_text = "".join(chars)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            value_text = rest[i:end].strip()
            i = end
        if name:
            params[name] = value_text
    return scheme.lower(), params


def digest_response(
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    if qop:
        return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5_hex(f"{ha1}:{nonce}:{ha2}")


class NonceState(Enum):
    OK = "ok"
    STALE = "stale"
    INVALID = "invalid"


class NonceIssuer:
    """Signed, expiring nonces: no per-challenge state on the server."""

    def __init__(
        self,
        secret: bytes | None = None,
        *,
        ttl_s: float = NONCE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self) -> str:
        stamp = struct.pack(">d", self._clock()) + secrets.token_bytes(8)
        mac = hmac.new(self._secret, stamp, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(stamp + mac).decode("ascii").rstrip("=")

    def check(self, nonce: str) -> NonceState:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return NonceState.INVALID
        if len(raw) != 28:
            return NonceState.INVALID
        stamp, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(
            mac, hmac.new(self._secret, stamp, hashlib.sha256).digest()[:12]
        ):
            return NonceState.INVALID
        (issued,) = struct.unpack(">d", stamp[:8])
        age = self._clock() - issued
        if age < -5 or age > self.ttl_s:
            return NonceState.STALE
        return NonceState.OK


class ReplayCache:
    """Bounded memory of used nonces: the highest nonce-count per nonce (-1: used without qop).

    Evicting an old entry can only make a replay of that (nearly expired) nonce possible for
    the rest of its TTL; the bound is sized so that takes far more authenticated traffic
    than a province sends within one TTL.
    """

    def __init__(self, max_entries: int = REPLAY_CACHE_SIZE) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.max_entries = max_entries

    def accept(self, nonce: str, nc: int | None) -> bool:
        """Record a use of `nonce`; False if it is a replay."""
        last = self._seen.get(nonce)
        if nc is None:
            if last is not None:
                return False
            value = -1
        else:
            if last is not None and (last == -1 or nc <= last):
                return False
            value = nc
        self._seen[nonce] = value
        self._seen.move_to_end(nonce)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)


class AuthResult(Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # no or unusable credentials: answer 401
    STALE = "stale"  # right password, expired or replayed nonce: 401 stale=true
    WRONG_USER = "wrong_user"  # username is not the device ID: 403
    WRONG_PASSWORD = "wrong_password"  # noqa: S105 — a result name, not a password; 403


@dataclass(slots=True)
class DigestVerifier:
    """Checks `Authorization` headers of one realm (our SIP domain)."""

    realm: str
    nonces: NonceIssuer
    replays: ReplayCache

    def challenge(self, *, stale: bool = False) -> str:
        stale_part = ", stale=true" if stale else ""
        return (
            f'Digest realm="{self.realm}", nonce="{self.nonces.issue()}", '
            f'algorithm=MD5, qop="auth"{stale_part}'
        )

    def verify(
        self, header: str | None, *, method: str, username: str, password: str
    ) -> AuthResult:
        if not header:
            return AuthResult.CHALLENGE
        scheme, params = parse_auth_params(header)
        if scheme != "digest":
            return AuthResult.CHALLENGE
        nonce = params.get("nonce", "")
        uri = params.get("uri", "")
        given = params.get("response", "").lower()
        algorithm = params.get("algorithm", "MD5").upper()
        if not nonce or not uri or len(given) != 32 or algorithm != "MD5":
            return AuthResult.CHALLENGE
        if params.get("realm", "") != self.realm:
            return AuthResult.CHALLENGE
        if params.get("username", "") != username:
            return AuthResult.WRONG_USER
        state = self.nonces.check(nonce)
        if state is NonceState.INVALID:
            return AuthResult.CHALLENGE
        qop = params.get("qop") or None
        nc_text = params.get("nc")
        cnonce = params.get("cnonce")
        if qop is not None and (qop.lower() != "auth" or not nc_text or not cnonce):
            return AuthResult.CHALLENGE
        expected = digest_response(
            username=username,
            realm=self.realm,
            password=password,
            method=method,
            uri=uri,
            nonce=nonce,
            qop=qop,
            nc=nc_text,
            cnonce=cnonce,
        )
        if not hmac.compare_digest(expected, given):
            return AuthResult.WRONG_PASSWORD
        if state is NonceState.STALE:
            return AuthResult.STALE
        try:
            nc = int(nc_text, 16) if nc_text else None
        except ValueError:
            return AuthResult.CHALLENGE
        if not self.replays.accept(nonce, nc):
            return AuthResult.STALE
        return AuthResult.OK


def authorization_for(
    challenge: str,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The Authorization value answering a WWW-Authenticate `challenge` (client side)."""
    _, params = parse_auth_params(challenge)
    realm = params.get("realm", "")
    nonce = params.get("nonce", "")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    nc_text = f"{nc:08x}"
    cnonce = cnonce or secrets.token_hex(8)
    response = digest_response(
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
    )
    parts = [
        f'Digest username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        "algorithm=MD5",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    return ", ".join(parts)
