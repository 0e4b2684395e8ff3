"""Stream links for command centres: short-lived signed links, relay hooks, audited reveals.

A link's `sign` is self-contained — base64url(payload) "." base64url(HMAC-SHA256(payload)) —
so a relay that passes on only `?sign=…` (as ZLMediaKit's on_play and MediaMTX's auth hook
do) still gives us everything to check: camera, profile, protocol, issuing token and expiry.
The hook re-checks the token (revocation is immediate) and the camera's region against the
token's scope at every player connection, and every verdict is audited.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from camera_registry.actor import Actor, Role
from camera_registry.config import PROTOCOLS, Protocol, Relay, Settings
from camera_registry.crypto import CredentialBox
from camera_registry.errors import BadRequest, FieldError, NotFound, Unauthorized
from camera_registry.store import audit
from camera_registry.store.db import Coalescer

PROFILES = ("main", "sub")
MAX_BATCH = 64
# The issuer of links the service signs for itself (frame diagnosis reading a media server's
# output): no token stands behind them, the HMAC and the short expiry do.
INTERNAL_READER = "health"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class LinkClaims:
    camera_id: str
    profile: str
    protocol: str
    token_id: str
    expires: int

    def payload(self) -> bytes:
        return "|".join(
            [self.camera_id, self.profile, self.protocol, self.token_id, str(self.expires)]
        ).encode()


class LinkSigner:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.clock = clock  # the wall clock; a seam so tests can step past an expiry

    def __repr__(self) -> str:
        return "LinkSigner(<key>)"

    def sign(self, claims: LinkClaims) -> str:
        payload = claims.payload()
        # hmac.digest: the one-shot C path, no HMAC object per link
        return _b64(payload) + "." + _b64(hmac.digest(self._key, payload, "sha256"))

    def verify(self, sign: str, now: float | None = None) -> LinkClaims:
        """The claims of a genuine, unexpired sign; `Unauthorized` naming why otherwise."""
        try:
            payload_b64, mac_b64 = sign.split(".", 1)
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        except ValueError:
            raise Unauthorized("the link's sign is malformed") from None
        want = hmac.digest(self._key, payload, "sha256")
        if not hmac.compare_digest(mac, want):
            raise Unauthorized("the link's signature does not match (tampered or foreign)")
        try:
            cam, profile, protocol, token_id, expires = payload.decode().split("|")
            claims = LinkClaims(cam, profile, protocol, token_id, int(expires))
        except ValueError:
            raise Unauthorized("the link's sign is malformed") from None
        if (self.clock() if now is None else now) >= claims.expires:
            raise Unauthorized("the link has expired; ask for a new one")
        return claims


def link_key(settings: Settings, credential_key: bytes) -> bytes:
    if settings.link_secret is not None:
        return settings.link_secret.get_secret_value().encode()
    return hashlib.sha256(b"camreg-stream-links" + credential_key).digest()


def stream_key(gb_id: str, profile: str) -> str:
    """The relay's path for a camera stream: the GB ID the whole platform knows it by."""
    return f"{gb_id}_{profile}"


def with_credentials(uri: str, username: str | None, password: str | None) -> str:
    parts = urlsplit(uri)
    if not username and not password:
        return uri
    userinfo = quote(username or "", safe="") + (
        ":" + quote(password or "", safe="") if password else ""
    )
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


@dataclass(frozen=True, slots=True, eq=False)  # one per request: identity is the key
class _LinkRequest:
    camera_id: uuid.UUID
    actor: Actor
    profile: str
    protocol: str
    reveal: bool
    expires: int


# A batch of link requests in one statement and one commit: each camera looked up within its
# requester's scope, the relay that serves it chosen (the first configured relay with the
# protocol and, if it lists regions, one the camera is in; as `relay_for`), and the audit row
# of every link that will be answered inserted. `action` says which (NULL: no link, nothing
# audited: a protocol no relay serves other than rtsp, or no stream URI for the profile).
# The statement commits before any answer, so every answered link's row is durable.
_LINK_BATCH = f"""
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::uuid[], $7::text[], $8::boolean[], $9::bigint[]) WITH ORDINALITY
        AS r(cam, scope, profile, protocol, actor, token_id, remote_addr, reveal, expires, n)
), f AS (
    SELECT r.*, c.id, c.gb_id, c.region_code, c.streams, c.credentials,
           (SELECT rl.i FROM unnest($10::text[], $11::text[]) WITH ORDINALITY
                AS rl(protocols, regions, i)
            WHERE r.protocol = ANY(string_to_array(rl.protocols, ' '))
              AND (rl.regions = '' OR EXISTS (
                  SELECT 1 FROM unnest(string_to_array(rl.regions, ' ')) AS p
                  WHERE starts_with(c.region_code, p)))
            ORDER BY rl.i LIMIT 1) AS relay
    FROM r JOIN cameras c ON c.id = r.cam
    WHERE r.scope IS NULL OR starts_with(c.region_code, r.scope)
), a AS (
    SELECT f.*, CASE
        WHEN relay IS NOT NULL THEN 'stream.link'
        WHEN protocol <> 'rtsp' THEN NULL
        WHEN coalesce(streams->>profile,
                      CASE WHEN profile = 'sub' THEN streams->>'main' END) IS NULL THEN NULL
        WHEN reveal THEN 'stream.direct_credentials'
        ELSE 'stream.direct' END AS action
    FROM f
), audited AS (
    {audit.INSERT_COLUMNS}
    SELECT actor, token_id, action, id, region_code, remote_addr,
           CASE WHEN relay IS NULL THEN jsonb_build_object('profile', profile)
                ELSE jsonb_build_object('profile', profile, 'protocol', protocol,
                                        'relay', ($12::text[])[relay], 'expires', expires) END
    FROM a WHERE action IS NOT NULL
)
SELECT n, id, gb_id, region_code, streams, credentials, relay, action FROM a
"""


@dataclass(frozen=True, slots=True, eq=False)  # one per hook call: identity is the key
class _HookRequest:
    camera_id: uuid.UUID
    token_id: uuid.UUID | None
    internal: bool  # signed by the service for itself (frame diagnosis)
    profile: str
    key: str  # the stream key the player asked for, unquoted
    regions: str  # the relay's region prefixes, space-separated ('' serves all)
    actor: str
    ip: str | None
    hook: str


# A batch of relay verdicts in one statement and one commit: each signed link's camera and
# issuing token looked up, judged (the checks of `StreamLinks._judge`, in its order, with its
# reasons) and the verdict's audit row inserted; committed before any answer. Signs that
# fail before any look-up (missing, forged, expired) are judged and audited without it.
_VERDICT_BATCH = f"""
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::boolean[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[]) WITH ORDINALITY
        AS r(cam, tok, internal, profile, key, regions, actor, ip, hook, n)
), v AS (
    SELECT r.n, r.actor, r.ip, r.hook, r.key, c.id, CASE
        WHEN c.id IS NULL THEN 'the camera no longer exists'
        WHEN r.internal AND r.key = c.gb_id || '_' || r.profile THEN 'ok: frame diagnosis'
        WHEN t.id IS NULL OR t.revoked_at IS NOT NULL OR t.expires_at <= now()
            THEN 'the token that issued the link is revoked or expired'
        WHEN coalesce(t.region_prefix, '') <> '' AND NOT starts_with(c.region_code,
                                                                     t.region_prefix)
            THEN 'the camera is outside the token''s region scope'
        WHEN r.regions <> '' AND NOT EXISTS (
                SELECT FROM unnest(string_to_array(r.regions, ' ')) AS p
                WHERE starts_with(c.region_code, p))
            THEN 'this relay does not serve the camera''s region'
        WHEN r.key <> c.gb_id || '_' || r.profile THEN 'the link was issued for another stream'
        ELSE 'ok' END AS reason
    FROM r LEFT JOIN cameras c ON c.id = r.cam LEFT JOIN api_tokens t ON t.id = r.tok
), audited AS (
    {audit.INSERT_COLUMNS}
    SELECT actor, NULL, CASE WHEN reason IN ('ok', 'ok: frame diagnosis')
                             THEN 'stream.play_allowed' ELSE 'stream.play_denied' END,
           id, NULL, ip,
           jsonb_build_object('hook', hook, 'stream', key, 'reason', reason, 'player', ip)
    FROM v
)
SELECT n, id, reason FROM v
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str
    camera_id: str | None = None


class StreamLinks:
    """Issues links and judges relay hooks; all SQL about streams lives here."""

    def __init__(self, pool: asyncpg.Pool, box: CredentialBox, settings: Settings) -> None:
        self.pool = pool
        self.box = box
        self.settings = settings
        self.signer = LinkSigner(link_key(settings, box.key))
        # Every verdict and source lookup is audited before it is answered; those rows are the
        # requests' only writes, so they are group-committed (links: `self.links` below).
        self.audit = audit.GroupCommit(pool)
        # Verdicts: look-up, judgement and audit row in one statement and one commit for
        # concurrent hook calls (see _VERDICT_BATCH).
        self.verdicts: Coalescer[_HookRequest, asyncpg.Record] = Coalescer(
            self._judge_batch, concurrency=2
        )
        # Links: look-up and audit row in one statement and one commit for concurrent requests
        # (one round trip a link instead of a look-up and then a commit).
        self.links: Coalescer[_LinkRequest, asyncpg.Record] = Coalescer(
            self._issue_batch, concurrency=2
        )
        relays = self.settings.relays
        self._relay_args = (
            [" ".join(r.urls) for r in relays],
            [" ".join(r.regions) for r in relays],
            [r.name for r in relays],
        )

    async def _issue_batch(
        self, requests: list[_LinkRequest]
    ) -> dict[_LinkRequest, asyncpg.Record]:
        rows = await self.pool.fetch(
            _LINK_BATCH,
            [q.camera_id for q in requests],
            [q.actor.scope for q in requests],
            [q.profile for q in requests],
            [q.protocol for q in requests],
            [q.actor.name for q in requests],
            [q.actor.token_id for q in requests],
            [q.actor.remote_addr for q in requests],
            [q.reveal for q in requests],
            [q.expires for q in requests],
            *self._relay_args,
        )
        return {requests[row["n"] - 1]: row for row in rows}  # n: 1-based position

    async def _judge_batch(
        self, requests: list[_HookRequest]
    ) -> dict[_HookRequest, asyncpg.Record]:
        rows = await self.pool.fetch(
            _VERDICT_BATCH,
            [q.camera_id for q in requests],
            [q.token_id for q in requests],
            [q.internal for q in requests],
            [q.profile for q in requests],
            [q.key for q in requests],
            [q.regions for q in requests],
            [q.actor for q in requests],
            [q.ip for q in requests],
            [q.hook for q in requests],
        )
        return {requests[row["n"] - 1]: row for row in rows}  # n: 1-based position

    def relay_for(self, region_code: str, protocol: str) -> Relay | None:
        for relay in self.settings.relays:
            if protocol in relay.urls and (
                not relay.regions or any(region_code.startswith(p) for p in relay.regions)
            ):
                return relay
        return None

    async def issue(
        self, actor: Actor, camera_id: str, *, profile: str, protocol: str
    ) -> dict[str, Any]:
        if profile not in PROFILES:
            raise BadRequest("bad profile", [FieldError("profile", "use main or sub")])
        if protocol not in PROTOCOLS:
            raise BadRequest(
                "bad protocol", [FieldError("protocol", "use rtsp, hls, flv, webrtc or rtmp")]
            )
        try:
            cid = uuid.UUID(camera_id)
        except ValueError:
            raise NotFound(f"no camera {camera_id}: camera ids are UUIDs") from None
        reveal = actor.role.value in self.settings.allow_direct_credentials
        expires = int(self.signer.clock()) + self.settings.link_ttl(actor.role.value)
        # Looked up, scope-checked and audited by one statement (see _LINK_BATCH).
        cam = await self.links.get(_LinkRequest(cid, actor, profile, protocol, reveal, expires))
        if cam is None:
            raise NotFound(f"no camera {camera_id} in your region scope")
        streams = cam["streams"] or {}
        if cam["relay"] is not None:
            relay = self.settings.relays[cam["relay"] - 1]  # 1-based, as SQL counts
            claims = LinkClaims(str(cam["id"]), profile, protocol, actor.token_id or "", expires)
            sign = self.signer.sign(claims)
            url = relay.urls[cast(Protocol, protocol)].format(
                stream_key=stream_key(cam["gb_id"], profile), sign=sign, expires=expires
            )
            return {
                "url": url,
                "protocol": protocol,
                "profile": profile,
                "expires_at": _iso(expires),
                "relay": relay.name,
            }
        if protocol != "rtsp":
            raise BadRequest(
                f"no media relay serves {protocol} for region {cam['region_code']}",
                [FieldError("protocol", "use rtsp, or configure a relay for this region")],
            )
        uri = streams.get(profile) or (streams.get("main") if profile == "sub" else None)
        if uri is None or cam["action"] is None:
            raise NotFound(f"camera {camera_id} has no {profile} stream URI registered")
        if reveal and cam["credentials"] is not None:
            username, password = self.box.open(cam["credentials"])
            uri = with_credentials(uri, username, password)
        return {
            "url": uri,
            "protocol": "rtsp",
            "profile": profile,
            "expires_at": None,
            "relay": None,
            "credentials_included": reveal,
        }

    def relay_by_secret(self, secret: str | None) -> Relay:
        for relay in self.settings.relays:
            if secret and hmac.compare_digest(
                secret.encode(), relay.secret.get_secret_value().encode()
            ):
                return relay
        raise Unauthorized("relay endpoints need the relay's secret")

    async def judge(
        self, relay: Relay, *, sign: str | None, key: str, ip: str | None, hook: str
    ) -> Verdict:
        """May this player connection play `key`? Checked afresh each time, and audited.

        A genuine sign's verdict is reached and audited by one statement shared with
        concurrent hook calls (`_VERDICT_BATCH`); one that fails before any look-up is
        audited on its own (group-committed)."""
        actor = f"relay:{relay.name}"
        early = self._precheck(sign)
        if isinstance(early, Verdict):
            await self.audit.record(
                Actor(name=actor, role=Role.ADMIN, remote_addr=ip),
                "stream.play_denied",
                camera_id=early.camera_id,
                detail={"hook": hook, "stream": key, "reason": early.reason, "player": ip},
            )
            return early
        claims, cid, tid = early
        row = await self.verdicts.get(
            _HookRequest(
                cid,
                tid,
                claims.token_id == INTERNAL_READER and claims.protocol == "rtsp",
                claims.profile,
                unquote(key),
                " ".join(relay.regions),
                actor,
                ip,
                hook,
            )
        )
        assert row is not None  # every request of a batch gets its row back
        reason = row["reason"]
        found = None if row["id"] is None else claims.camera_id
        return Verdict(reason in ("ok", "ok: frame diagnosis"), reason, found)

    def _precheck(
        self, sign: str | None
    ) -> Verdict | tuple[LinkClaims, uuid.UUID, uuid.UUID | None]:
        """The sign's claims and ids, or the verdict of a sign that needs no look-up."""
        if not sign:
            return Verdict(False, "no sign in the player's URL")
        try:
            claims = self.signer.verify(sign)
        except Unauthorized as exc:
            return Verdict(False, exc.detail)
        try:
            cid = uuid.UUID(claims.camera_id)
        except ValueError:
            return Verdict(False, "the camera no longer exists", None)
        try:
            tid: uuid.UUID | None = uuid.UUID(claims.token_id)
        except ValueError:  # issued without a token: no token can vouch for it
            tid = None
        return claims, cid, tid

    async def source(self, relay: Relay, key: str) -> dict[str, Any]:
        """The camera's own URI with credentials, for the relay to pull (audited)."""
        gb_id, _, profile = key.rpartition("_")
        if profile not in PROFILES or not gb_id:
            raise NotFound(f"no stream {key}: stream keys look like <国标编码>_main")
        rec = await self.pool.fetchrow(
            "SELECT id, region_code, streams, credentials FROM cameras WHERE gb_id = $1", gb_id
        )
        if rec is None or (
            relay.regions and not any(rec["region_code"].startswith(p) for p in relay.regions)
        ):
            raise NotFound(f"no stream {key} for relay {relay.name}")
        streams = rec["streams"] or {}
        uri = streams.get(profile) or streams.get("main")
        if uri is None:
            raise NotFound(f"camera {gb_id} has no stream URI registered")
        if rec["credentials"] is not None:
            uri = with_credentials(uri, *self.box.open(rec["credentials"]))
        actor = Actor(name=f"relay:{relay.name}", role=Role.ADMIN)
        await self.audit.record(
            actor,
            "stream.relay_source",
            camera_id=rec["id"],
            region_code=rec["region_code"],
            detail={"stream": key},
        )
        return {"stream_key": key, "source": uri}


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def check_batch(ids: list[str]) -> None:
    if not 1 <= len(ids) <= MAX_BATCH:
        raise BadRequest(
            f"send 1-{MAX_BATCH} camera ids",
            [FieldError("camera_ids", f"at most {MAX_BATCH} (one video wall)")],
        )
