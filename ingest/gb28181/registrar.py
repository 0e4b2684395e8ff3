"""REGISTER handling (RFC 3261 §10.3, GB/T 28181 §9.1): who may register, for how long, where.

The registrar keeps only registrations that passed digest authentication, so its memory is
bounded by the devices the registry knows, never by what arrives on the wire. The device's
real source (transport, address, port) is kept beside its Contact: requests to the device go
where `transport.target_for` says, which is the source when the Contact is a NATed private
address.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from camera_registry.gbid import PROVINCES
from ingest.gb28181.digest import AuthResult, DigestVerifier
from ingest.gb28181.errors import SipParseError
from ingest.gb28181.message import NameAddr, SipRequest, SipResponse, build_response, new_tag
from ingest.gb28181.transport import Peer, target_for

MIN_EXPIRES = 60
MAX_EXPIRES = 86_400
DEFAULT_EXPIRES = 3_600


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    """What the registry says about a device ID that wants to register."""

    device_id: str
    password: str
    in_scope: bool = True


class DeviceDirectory(Protocol):
    """The registry side: who may register and with which password (no SQL in this package)."""

    async def lookup(self, device_id: str) -> DeviceAccess | None: ...


@dataclass(slots=True)
class Registration:
    device_id: str
    contact: str
    source: Peer
    target: Peer
    expires_s: int
    expires_at: float  # time.monotonic()
    registered_at: float  # time.time()
    user_agent: str = ""

    @property
    def natted(self) -> bool:
        return self.target == self.source and self.contact_host != self.source.host

    @property
    def contact_host(self) -> str:
        try:
            return NameAddr.parse(self.contact).uri.host
        except SipParseError:
            return ""


def device_id_problem(device_id: str) -> str | None:
    """Why a From user cannot be a GB/T 28181 device ID (any type), or None."""
    if len(device_id) != 20 or not device_id.isdigit():
        return "not a 20-digit GB/T 28181 ID"
    if device_id[:2] not in PROVINCES:
        return "unknown province code"
    return None


def gb_date(now: dt.datetime | None = None) -> str:
    """GB/T 28181 §9.10 Date header: local time, ISO 8601 without zone, milliseconds."""
    now = now or dt.datetime.now().astimezone()
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


@dataclass(slots=True)
class RegisterOutcome:
    response: SipResponse
    registration: Registration | None = None
    is_new: bool = False
    unregistered: Registration | None = None
    refusal: str | None = None  # counter name when refused


class Registrar:
    def __init__(
        self,
        directory: DeviceDirectory,
        verifier: DigestVerifier,
        *,
        min_expires: int = MIN_EXPIRES,
        max_expires: int = MAX_EXPIRES,
        server_header: str = "camera-registry",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.verifier = verifier
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.server_header = server_header
        self._clock = clock
        self.registrations: dict[str, Registration] = {}
        # No registration expires before this: the once-a-second pass reads them all only
        # when one may have (with the liveness pass, reading all 50,000 each second was
        # ~35 ms of the loop in one piece).
        self._next_expiry = math.inf

    def live(self, device_id: str) -> Registration | None:
        reg = self.registrations.get(device_id)
        if reg is None:
            return None
        if reg.expires_at < self._clock():
            return None
        return reg

    def expire(self) -> list[Registration]:
        """Drop registrations past their expiry; return them so the caller can tell the registry."""
        now = self._clock()
        if now <= self._next_expiry:
            return []
        gone = [r for r in self.registrations.values() if r.expires_at < now]
        for reg in gone:
            del self.registrations[reg.device_id]
        left = (r.expires_at for r in self.registrations.values())
        self._next_expiry = min(left, default=math.inf)
        return gone

    async def handle(self, request: SipRequest, source: Peer) -> RegisterOutcome:
        tag = new_tag()

        def refuse(status: int, counter: str, reason: str | None = None) -> RegisterOutcome:
            resp = build_response(
                request, status, reason, to_tag=tag, source=source.addr, why=counter
            )
            return RegisterOutcome(resp, refusal=counter)

        try:
            from_uri = request.from_.uri
            contact = request.contact
        except SipParseError:
            return refuse(400, "malformed_register")
        device_id = from_uri.user or ""
        if device_id_problem(device_id) is not None:
            return refuse(403, "unknown_device", "Forbidden: not a GB/T 28181 device ID")
        access = await self.directory.lookup(device_id)
        if access is None:
            return refuse(403, "unknown_device", "Forbidden: unknown device")
        if not access.in_scope:
            return refuse(403, "out_of_scope", "Forbidden: device out of scope")

        result = self.verifier.verify(
            request.headers.get("Authorization"),
            method="REGISTER",
            username=device_id,
            password=access.password,
        )
        if result in (AuthResult.CHALLENGE, AuthResult.STALE):
            why = "challenged" if result is AuthResult.CHALLENGE else "stale_nonce"
            resp = build_response(request, 401, to_tag=tag, source=source.addr, why=why)
            resp.headers.add(
                "WWW-Authenticate", self.verifier.challenge(stale=result is AuthResult.STALE)
            )
            return RegisterOutcome(resp, refusal=why)
        if result is AuthResult.WRONG_USER:
            return refuse(403, "wrong_user", "Forbidden: username is not the device ID")
        if result is AuthResult.WRONG_PASSWORD:
            return refuse(403, "wrong_password", "Forbidden: wrong password")

        expires = self._expires(request, contact.params if contact else {})
        if expires is None:
            return refuse(400, "malformed_register", "Bad Request: Expires")
        if expires == 0 or contact is None:
            old = self.registrations.pop(device_id, None) if expires == 0 else None
            resp = build_response(request, 200, to_tag=tag, source=source.addr)
            resp.headers.add("Date", gb_date())
            if contact is None and expires != 0:
                # A query for bindings (§10.2.3): answer with the current one, if any.
                current = self.live(device_id)
                if current is not None:
                    resp.headers.add("Contact", current.contact)
            return RegisterOutcome(resp, unregistered=old)
        if expires < self.min_expires:
            resp = build_response(
                request, 423, to_tag=tag, source=source.addr, why="interval_too_brief"
            )
            resp.headers.add("Min-Expires", str(self.min_expires))
            return RegisterOutcome(resp, refusal="interval_too_brief")
        expires = min(expires, self.max_expires)
        existing = self.live(device_id)
        contact_text = f"<{contact.uri}>"
        reg = Registration(
            device_id=device_id,
            contact=contact_text,
            source=source,
            target=target_for(contact.uri.host, contact.uri.port, source),
            expires_s=expires,
            expires_at=self._clock() + expires,
            registered_at=time.time(),
            user_agent=(request.headers.get("User-Agent") or "")[:200],
        )
        # A "refresh" is the same device re-registering from the same place before expiry;
        # anything else (first time, after expiry, new address) is treated as a new
        # registration, which re-queries the catalog.
        is_new = existing is None or existing.source != source or existing.contact != contact_text
        self.registrations[device_id] = reg
        self._next_expiry = min(self._next_expiry, reg.expires_at)
        resp = build_response(request, 200, to_tag=tag, source=source.addr)
        resp.headers.add("Contact", f"{contact_text};expires={expires}")
        resp.headers.add("Expires", str(expires))
        resp.headers.add("Date", gb_date())
        return RegisterOutcome(resp, registration=reg, is_new=is_new)

    def _expires(self, request: SipRequest, contact_params: dict[str, str]) -> int | None:
        text = contact_params.get("expires") or request.headers.get("Expires")
        if text is None or text == "":
            return DEFAULT_EXPIRES
        text = text.strip()
        if not text.isdigit() or len(text) > 10:
            return None
        return int(text)
