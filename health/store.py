"""The health tables: leasing due cameras to workers and recording what they found.

Leases are rows, not messages: `FOR UPDATE SKIP LOCKED` hands each due camera to one worker,
and a lease that outlives its worker simply expires and is taken again. No coordinator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from camera_registry.crypto import CredentialBox
from camera_registry.store import cameras
from camera_registry.store.db import json_text
from health.kpi import KpiRow, PeriodTotals
from health.status import (
    CameraState,
    Outcome,
    StatusPolicy,
    Transition,
    Verdict,
    initial_state,
    judge,
    step,
)

STATUS_CHANNEL = "camreg_status"
# Availability days are local days in China, where every KPI report is read (UTC+8, no DST).
DAY_TZ = "Asia/Shanghai"

# Credit the seconds since each camera's previous transition (or its registration) to the
# status it is leaving, split over the local days the interval spans: one row per camera and
# day. $1 cameras (each at most once), $2 the statuses they leave, $3 epoch seconds of the
# transitions, $4 the time zone of the days. For many cameras at once: a catalog batch brings
# thousands of channels online, and one execution per camera cost PostgreSQL more than the
# rest of the batch's writes.
_CREDIT = """
WITH span AS (
    SELECT u.camera_id, u.old,
           coalesce((SELECT max(at) FROM status_transitions s WHERE s.camera_id = u.camera_id),
                    (SELECT created_at FROM cameras c WHERE c.id = u.camera_id)) AS t0,
           to_timestamp(u.at) AS t1
    FROM unnest($1::uuid[], $2::text[], $3::float8[]) AS u(camera_id, old, at)
), parts AS (
    SELECT s.camera_id, s.old, d::date AS day,
           extract(epoch FROM least(s.t1, (d + interval '1 day') AT TIME ZONE $4)
                            - greatest(s.t0, d AT TIME ZONE $4))::float8 AS secs
    FROM span s,
         generate_series((s.t0 AT TIME ZONE $4)::date::timestamp,
                         (s.t1 AT TIME ZONE $4)::date::timestamp, interval '1 day') AS d
    WHERE s.t1 > s.t0
)
INSERT INTO camera_availability AS a (camera_id, day, online_s, degraded_s, flapping_s,
                                      offline_s, unknown_s)
SELECT camera_id, day,
       CASE WHEN old = 'online' THEN secs ELSE 0 END,
       CASE WHEN old = 'degraded' THEN secs ELSE 0 END,
       CASE WHEN old = 'flapping' THEN secs ELSE 0 END,
       CASE WHEN old = 'offline' THEN secs ELSE 0 END,
       CASE WHEN old = 'unknown' THEN secs ELSE 0 END
FROM parts WHERE secs > 0
ORDER BY camera_id, day
ON CONFLICT (camera_id, day) DO UPDATE SET
    online_s = a.online_s + EXCLUDED.online_s,
    degraded_s = a.degraded_s + EXCLUDED.degraded_s,
    flapping_s = a.flapping_s + EXCLUDED.flapping_s,
    offline_s = a.offline_s + EXCLUDED.offline_s,
    unknown_s = a.unknown_s + EXCLUDED.unknown_s
"""


def status_channel(schema: str) -> str:
    """The NOTIFY channel for one deployment's schema.

    NOTIFY is database-wide, so two deployments (or test modules) sharing a database in
    different schemas must not hear each other's status changes. Channel names are limited to
    63 bytes: a long schema name is replaced by its digest.
    """
    if schema == "public":
        return STATUS_CHANNEL
    name = f"{STATUS_CHANNEL}.{schema}"
    if len(name.encode()) > 63:
        name = f"{STATUS_CHANNEL}.{hashlib.sha256(schema.encode()).hexdigest()[:24]}"
    return name


@dataclass(frozen=True, slots=True)
class Lease:
    camera_id: uuid.UUID
    region_code: str
    level: int
    uri: str | None  # sub stream preferred: the cheapest to open
    username: str | None
    password: str | None
    state: CameraState
    failures: int
    diagnosed_at: float | None = None  # epoch seconds of the last frame diagnosis
    reference: bytes | None = None  # the scene reference, PNG (160×90 BGR)

    @property
    def host(self) -> str:
        """The device a session lands on (an NVR serves many channels from one host:port)."""
        if not self.uri:
            return ""
        rest = self.uri.split("://", 1)[-1]
        return rest.split("/", 1)[0].rsplit("@", 1)[-1].lower()

    def __repr__(self) -> str:  # never show credentials
        return f"Lease({self.camera_id}, {self.host or 'no stream'})"


def _state(raw: Any, now: float) -> CameraState:
    if not raw:
        return initial_state(now)
    return CameraState.load(dict(raw))


# The device host a stream lands on (userinfo is never stored in stream URIs).
_HOST = (
    "lower(split_part(split_part(coalesce(c.streams->>'sub', c.streams->>'main', ''), "
    "'://', 2), '/', 1))"
)
# The advisory-lock class of per-host lease decisions (the second key is the host's hash).
_HOST_LOCK = 0x63616D72
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # before every schedule: the queue's head


class LeaseCursor:
    """Where a worker's last batch ended on the due queue (`camera_health_due`).

    Every probe moves its camera's `next_probe_at`, leaving a dead entry at the head of the
    due index; PostgreSQL skips such entries cheaply only once no snapshot can see them, so
    while any session of the server holds an old snapshot, a scan from the head walks every
    probe stored since (905 ms for 251 due cameras after 300,000 results, bench/RESULTS.md).
    A worker starts its next scan where the last one stopped instead: before the first
    camera it left due (capped host, full batch), else at the last one it leased. A leased
    camera's `next_probe_at` moves to its lease's expiry, so an expired lease is due again
    ahead of every cursor. Cameras made due behind a cursor by someone else (a schedule
    edited by hand, a past date) are found by a scan from the head, taken whenever a
    cursor's scan comes up short of a batch and at least every `sweep_s` seconds.
    """

    __slots__ = ("floor", "sweep_s", "swept_at")

    def __init__(self, sweep_s: float = 10.0) -> None:
        self.floor = _EPOCH
        self.sweep_s = sweep_s
        self.swept_at = -float("inf")


async def lease(
    pool: asyncpg.Pool,
    box: CredentialBox,
    owner: str,
    *,
    batch: int,
    lease_s: float,
    per_host: int = 4,
    only: uuid.UUID | None = None,
    cursor: LeaseCursor | None = None,
) -> list[Lease]:
    """Take up to `batch` due cameras for `lease_s` seconds (expired leases are due again).

    A device host never has more than `per_host` live leases across all workers (an NVR's
    channels share one host). Workers lease concurrently: `SKIP LOCKED` gives each its own
    candidates, and the cap of each candidate's host is decided under that host's advisory
    lock, taken without waiting (a host another worker is deciding on right now is left due
    for the next batch), by counting the host's live leases through `camera_health_lease_host`.
    One lock for all workers made leasing, ~80 ms a batch at province scale, the limit of the
    probe rate (bench/RESULTS.md). A worker passes its `cursor` so that the scan of the due
    queue starts where its last one ended (see `LeaseCursor`); without one, every scan starts
    at the head.
    """
    clock = time.monotonic()
    floor = _EPOCH
    if cursor is not None and only is None and clock - cursor.swept_at < cursor.sweep_s:
        floor = cursor.floor
    async with pool.acquire() as conn, conn.transaction():
        # A lease lost with the server's last few commits is only a camera probed again: the
        # lease need not wait for its WAL flush (results and transitions do, in record_many).
        await conn.execute("SET LOCAL synchronous_commit = off")
        busy: dict[str, int] = {}  # live leases of each host whose lock this lease holds
        # Candidates in pages of 1.25 batches: each costs a row lock and a look-up of its
        # camera's host, so fetching 4 batches to fill one (the old margin for capped hosts)
        # made leasing the limit of a province's probe rate. A page that is mostly capped
        # hosts is followed by the next one.
        picked: list[tuple[uuid.UUID, str]] = []
        seen: list[uuid.UUID] = []
        left: list[dt.datetime] = []  # due times of candidates left due
        last = floor
        for _ in range(5):
            page = batch + batch // 4 + 1
            candidates = await conn.fetch(
                f"""SELECT h.camera_id, h.next_probe_at, {_HOST} AS host
                    FROM camera_health h JOIN cameras c ON c.id = h.camera_id
                    WHERE h.next_probe_at >= $4 AND h.next_probe_at <= now()
                      AND (h.lease_until IS NULL OR h.lease_until < now())
                      AND ($2::uuid IS NULL OR h.camera_id = $2)
                      AND h.camera_id <> ALL($3::uuid[])
                    ORDER BY h.next_probe_at LIMIT $1
                    FOR UPDATE OF h SKIP LOCKED""",
                page,
                only,
                seen,
                floor,
            )
            if floor == _EPOCH and cursor is not None:
                cursor.swept_at = clock
            new_hosts = sorted({c["host"] for c in candidates if c["host"]} - busy.keys())
            if new_hosts:
                # Row locks are held here, so a batch never waits: a busy host's cameras stay
                # due. One camera asked for out of turn (`only`) waits for its host: whoever
                # holds that lock waits for nothing we hold. The count is a statement of its
                # own, so that its snapshot is taken after the locks: it sees every lease of
                # these hosts committed by their last holder.
                mine = await conn.fetchval(
                    """SELECT coalesce(array_agg(h), '{}') FROM unnest($1::text[]) AS h
                       WHERE CASE WHEN $3 THEN pg_try_advisory_xact_lock($2, hashtext(h))
                                  ELSE (SELECT true FROM pg_advisory_xact_lock($2, hashtext(h)))
                             END""",
                    new_hosts,
                    _HOST_LOCK,
                    only is None,
                )
                busy.update(dict.fromkeys(mine, 0))
                for r in await conn.fetch(
                    """SELECT lease_host, count(*) AS n FROM camera_health
                       WHERE lease_host = ANY($1::text[]) AND lease_until IS NOT NULL
                         AND lease_until > now()
                       GROUP BY lease_host""",
                    mine,
                ):
                    busy[r["lease_host"]] = r["n"]
            for cand in candidates:
                seen.append(cand["camera_id"])
                host = cand["host"]
                if len(picked) == batch or (host and (host not in busy or busy[host] >= per_host)):
                    left.append(cand["next_probe_at"])
                    continue
                if host:
                    busy[host] += 1
                picked.append((cand["camera_id"], host))
                last = max(last, cand["next_probe_at"])
            if len(picked) == batch:
                break
            if len(candidates) < page:
                if floor == _EPOCH:
                    break
                floor = _EPOCH  # short of a batch past the cursor: look behind it too
        rows = await conn.fetch(
            """UPDATE camera_health h
               SET lease_owner = $1, lease_until = now() + make_interval(secs => $4),
                   next_probe_at = now() + make_interval(secs => $4), lease_host = p.host
               FROM unnest($2::uuid[], $3::text[]) AS p(camera_id, host), cameras c
               WHERE h.camera_id = p.camera_id AND c.id = h.camera_id
               RETURNING h.camera_id, h.state, h.failures, c.region_code, c.level, c.streams,
                         c.credentials, extract(epoch FROM h.last_diagnosis_at) AS diagnosed_at,
                         h.reference""",
            owner,
            [cid for cid, _ in picked],
            [host or None for _, host in picked],
            lease_s,
        )
    if cursor is not None and only is None and (picked or left):
        cursor.floor = min(left) if left else last
    now = dt.datetime.now(dt.UTC).timestamp()
    out = []
    for r in rows:
        streams = r["streams"] or {}
        user = password = None
        if r["credentials"] is not None:
            user, password = box.open(r["credentials"])
        out.append(
            Lease(
                r["camera_id"],
                r["region_code"],
                r["level"],
                streams.get("sub") or streams.get("main"),
                user,
                password,
                _state(r["state"], now),
                r["failures"],
                float(r["diagnosed_at"]) if r["diagnosed_at"] is not None else None,
                r["reference"],
            )
        )
    return out


async def lease_one(
    pool: asyncpg.Pool, box: CredentialBox, owner: str, camera_id: uuid.UUID, lease_s: float
) -> Lease | None:
    """Lease one camera now, whether due or not, unless another worker holds it."""
    await pool.execute(
        """UPDATE camera_health SET next_probe_at = now()
           WHERE camera_id = $1 AND (lease_until IS NULL OR lease_until < now())""",
        camera_id,
    )
    rows = await lease(
        pool, box, owner, batch=1, lease_s=lease_s, per_host=1_000_000, only=camera_id
    )
    return rows[0] if rows else None


async def lease_media(
    pool: asyncpg.Pool,
    owner: str,
    *,
    batch: int,
    lease_s: float,
    diagnose_every_s: float,
    faulty_every_s: float,
) -> list[Lease]:
    """Lease channels without a stream URI of their own (GB/T 28181, off the RTSP schedule:
    `next_probe_at = infinity`) whose frame diagnosis is due: never diagnosed, older than
    `diagnose_every_s`, a suspect picture's re-check, or a degraded picture older than
    `faulty_every_s` (so a repaired channel clears within that). Offline channels are left
    alone: their device would not answer the INVITE. Least recently diagnosed first."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """WITH due AS (
                   SELECT h.camera_id FROM camera_health h
                   WHERE h.next_probe_at = 'infinity'
                     AND (h.lease_until IS NULL OR h.lease_until < now())
                     AND coalesce(h.state->>'settled', 'unknown') <> 'offline'
                     AND (h.last_diagnosis_at IS NULL
                          OR h.last_diagnosis_at < now() - make_interval(secs => $3)
                          OR (h.state->>'recheck_at')::float8 <= extract(epoch FROM now())
                          OR (h.state->>'picture' = 'faulty'
                              AND h.last_diagnosis_at < now() - make_interval(secs => $4)))
                   ORDER BY h.last_diagnosis_at NULLS FIRST LIMIT $2
                   FOR UPDATE OF h SKIP LOCKED)
               UPDATE camera_health h
               SET lease_owner = $1, lease_until = now() + make_interval(secs => $5)
               FROM due, cameras c
               WHERE h.camera_id = due.camera_id AND c.id = h.camera_id
               RETURNING h.camera_id, h.state, h.failures, c.region_code, c.level,
                         extract(epoch FROM h.last_diagnosis_at) AS diagnosed_at, h.reference""",
            owner,
            batch,
            diagnose_every_s,
            faulty_every_s,
            lease_s,
        )
    now = dt.datetime.now(dt.UTC).timestamp()
    return [
        Lease(
            r["camera_id"],
            r["region_code"],
            r["level"],
            None,
            None,
            None,
            _state(r["state"], now),
            r["failures"],
            float(r["diagnosed_at"]) if r["diagnosed_at"] is not None else None,
            r["reference"],
        )
        for r in rows
    ]


async def release(pool: asyncpg.Pool, owner: str, camera_ids: Sequence[uuid.UUID]) -> None:
    """Give leases back untouched (the camera stays due)."""
    if camera_ids:
        await pool.execute(
            """UPDATE camera_health SET lease_owner = NULL, lease_until = NULL, lease_host = NULL
               WHERE camera_id = ANY($2::uuid[]) AND lease_owner = $1""",
            owner,
            list(camera_ids),
        )


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One probe's result, to be stored with `record_many`."""

    lease: Lease
    state: CameraState
    transition: Transition | None
    probe: dict[str, Any]
    failures: int
    next_in_s: float
    diagnosis: dict[str, Any] | None = None
    thumbnail: bytes | None = None
    # A new scene reference (PNG) and where it came from: "first_clean" is kept only if the
    # camera has none yet; "accepted" (a technician's) replaces any.
    reference: bytes | None = None
    reference_source: str | None = None


async def record(
    pool: asyncpg.Pool,
    owner: str,
    lease_: Lease,
    *,
    state: CameraState,
    transition: Transition | None,
    probe: dict[str, Any],
    failures: int,
    next_in_s: float,
    diagnosis: dict[str, Any] | None = None,
    thumbnail: bytes | None = None,
) -> bool:
    """Store one probe's result; False if the lease was lost (another worker took it)."""
    rec = ProbeRecord(lease_, state, transition, probe, failures, next_in_s, diagnosis, thumbnail)
    return (await record_many(pool, owner, [rec]))[0]


async def record_many(pool: asyncpg.Pool, owner: str, records: list[ProbeRecord]) -> list[bool]:
    """Store a batch of results in one transaction; per record, False if its lease was lost.

    One commit per batch instead of one per probe, and one set-based UPDATE of the batch's
    `camera_health` rows instead of one statement each: a province probes ~3,500 cameras a
    second, and a round trip per row made the store, not PostgreSQL, the limit. Diagnoses and
    status transitions (a small share of probes) keep their own statements. A lost lease
    skips only its own record.
    """
    if not records:
        return []
    ids = [r.lease.camera_id for r in records]
    if len(set(ids)) != len(ids):  # one camera twice: store them in order, one by one
        async with pool.acquire() as conn, conn.transaction():
            out = []
            for r in records:
                kept = await _update_many(conn, owner, [r])
                if kept:
                    await _record_extras(conn, r)
                out.append(bool(kept))
            return out
    async with pool.acquire() as conn, conn.transaction():
        kept = await _update_many(conn, owner, records)
        for r in records:
            if r.lease.camera_id in kept and (r.diagnosis is not None or r.transition is not None):
                await _record_extras(conn, r)
    return [r.lease.camera_id in kept for r in records]


@dataclass(frozen=True, slots=True)
class MediaDiagnosis:
    """One frame diagnosis of a channel off the RTSP schedule, to be stored with
    `record_media_many`: the verdict is judged against the state at storing time, because
    the device's observations moved it while the diagnosis ran."""

    lease: Lease
    verdict: tuple[Verdict, tuple[str, ...]] | None
    report: dict[str, Any]
    thumbnail: bytes | None = None
    picture: bytes | None = None  # this sample's picture, a reference candidate (PNG)


async def record_media_many(
    pool: asyncpg.Pool,
    owner: str,
    diagnoses: Sequence[MediaDiagnosis],
    policy: StatusPolicy | None = None,
) -> list[bool]:
    """Store diagnoses of channels off the RTSP schedule: the picture verdict stepped on the
    camera's current state, the report, a first clean reference and any transition; the
    schedule (`next_probe_at`), the last observation and the failure count stay as the
    device's observations left them. Per diagnosis, False if its lease was lost."""
    out: list[bool] = []
    now = dt.datetime.now(dt.UTC).timestamp()
    async with pool.acquire() as conn, conn.transaction():
        for d in diagnoses:
            row = await conn.fetchrow(
                """SELECT state, reference IS NULL AS no_reference FROM camera_health
                   WHERE camera_id = $1 AND lease_owner = $2 FOR UPDATE""",
                d.lease.camera_id,
                owner,
            )
            if row is None:
                out.append(False)
                continue
            state, transition = _state(row["state"], now), None
            if d.verdict is not None:
                state, transition = judge(
                    state, d.verdict[0], max(now, state.since), policy, d.verdict[1]
                )
            await conn.execute(
                """UPDATE camera_health SET state = $2::text::jsonb, lease_owner = NULL,
                       lease_until = NULL, lease_host = NULL
                   WHERE camera_id = $1""",
                d.lease.camera_id,
                json_text(state.dump()),
            )
            first_clean = row["no_reference"] and d.verdict == ("clean", ())
            record = ProbeRecord(
                d.lease, state, transition, {}, 0, 0.0, d.report, d.thumbnail,
                d.picture if first_clean else None, "first_clean",
            )  # fmt: skip
            await _record_extras(conn, record)
            out.append(True)
    return out


_UPDATE_MANY = """
UPDATE camera_health h
SET state = u.state::jsonb, last_probe = u.probe::jsonb, last_probe_at = now(),
    failures = u.failures, next_probe_at = now() + make_interval(secs => u.next_s),
    lease_owner = NULL, lease_until = NULL, lease_host = NULL
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::integer[], $6::float8[])
     AS u(camera_id, state, probe, failures, next_s)
WHERE h.camera_id = u.camera_id AND h.lease_owner = $1
RETURNING h.camera_id
"""


async def _update_many(
    conn: asyncpg.Connection, owner: str, records: list[ProbeRecord]
) -> set[uuid.UUID]:
    """The probe results of `records` whose lease `owner` still holds; their camera ids."""
    rows = await conn.fetch(
        _UPDATE_MANY,
        owner,
        [r.lease.camera_id for r in records],
        [json_text(r.state.dump()) for r in records],
        [json_text(r.probe) for r in records],
        [r.failures for r in records],
        [float(r.next_in_s) for r in records],
    )
    return {row["camera_id"] for row in rows}


async def _record_extras(conn: asyncpg.Connection, r: ProbeRecord) -> None:
    """What a probe stores beyond its `camera_health` row: a diagnosis, a status transition."""
    if r.diagnosis is not None:
        await conn.execute(
            """UPDATE camera_health SET last_diagnosis = $2, last_diagnosis_at = now(),
                   thumbnail = coalesce($3, thumbnail)
               WHERE camera_id = $1""",
            r.lease.camera_id,
            r.diagnosis,
            r.thumbnail,
        )
    if r.reference is not None:
        await conn.execute(
            """UPDATE camera_health
               SET reference = $2, reference_at = now(), reference_source = $3
               WHERE camera_id = $1 AND ($3 = 'accepted' OR reference IS NULL)""",
            r.lease.camera_id,
            r.reference,
            r.reference_source or "first_clean",
        )
    if r.transition is not None:
        await _transition(conn, r.lease.camera_id, r.lease.region_code, r.transition)


async def _transition(
    conn: asyncpg.Connection, camera_id: uuid.UUID, region_code: str, transition: Transition
) -> None:
    """Store a status change: close the old interval, log it, set the camera, notify listeners
    (on commit, to every API process listening: SSE fans out from there)."""
    await _transitions_many(conn, [(camera_id, region_code, transition)])


async def observe_many(
    pool: asyncpg.Pool,
    observations: Sequence[tuple[uuid.UUID, Outcome, str]],
    *,
    policy: StatusPolicy | None = None,
    source: str = "gb28181",
) -> list[Transition]:
    """Feed status observations that are not our probes through the same hysteresis.

    GB/T 28181 channels have no RTSP URL to probe: their device's keepalives, registration,
    catalog Status and NOTIFY ON/OFF/VLOST/DEFECT are the observations. Each is one step of
    the status machine, exactly like a probe outcome, so flap damping and 在线率 treat them
    alike. These cameras are taken off the RTSP schedule (`next_probe_at = infinity`).
    One transaction per call; rows are locked and written in camera-id order, and a deadlock
    with another writer of the same cameras (a catalog update) is retried.
    """
    if not observations:
        return []
    # stable sort: each camera's observations keep their order
    observations = sorted(observations, key=lambda o: o[0])
    for attempt in range(3):
        try:
            return await _observe(pool, observations, policy, source)
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
    return []


async def keepalive_channels(
    pool: asyncpg.Pool,
    device_ids: Sequence[str],
    *,
    failing: Sequence[str],
    detail: str,
    source: str = "gb28181",
    fresh_s: float = 180.0,
) -> list[tuple[uuid.UUID, str]]:
    """(camera id, catalog Status word) of these devices' live camera channels whose keepalive
    observation could change something: each ``ok`` that would only repeat what a settled
    online camera's row already says is left out, in PostgreSQL.

    Why in one statement: every keepalive of a device is an ``ok`` for each of its channels;
    at 100,000 devices that is 1,667 keepalives and ~7,000 channels a second. Reading them all
    into Python, then asking which were no-ops, was 1.7 million rows decoded in a 50,000-device
    wave (15 % of the process); now only the channels that need an observation come back,
    none in the steady state.

    A channel's observation is ``ok`` unless its Status word is one of `failing`; its detail
    is `detail` followed by the word ('?' when empty). Such an ``ok`` is a no-op of the status
    machine when the reachability is settled online with no failure streak, every observation
    in the flap window is ``ok`` with no change among them, the camera is off the probe
    schedule, and the last observation recorded is this same one; only the uncapped
    `ok_streak` would grow, and the window by one more ``ok``. The window need not be full:
    a window of unchanged ``ok``s counts no change however long it is and ends in the same
    entry, so every later step decides the status exactly as it would after the skipped ones
    (requiring a full window made each channel's first ten keepalives full writes: ten
    minutes of a registration wave's every channel). A camera listed by several of these
    devices is left out only when all its rows would be that same no-op.

    So that a row never claims a live channel was last seen longer ago than `fresh_s` (the
    keepalive timeout), a settled row older than that has its `last_probe_at` moved to now in
    this same statement: a plain touch, not a pass through the status machine (at 400,000
    channels a full observation of each every 180 s was 2,200 state-machine steps a second).
    Rows are locked in camera-id order, like `observe_many`'s, and a row another writer holds
    is left to it (it writes `last_probe_at` itself).
    """
    if not device_ids:
        return []
    rows = await pool.fetch(
        """WITH ch AS (
               SELECT g.camera_id, coalesce(g.status, '') AS word FROM gb_catalog_items g
               WHERE g.device_id = ANY($1::text[]) AND g.camera_id IS NOT NULL
                 AND NOT g.removed
           ), one AS (
               SELECT camera_id, min(word) AS word FROM ch GROUP BY camera_id
               HAVING count(DISTINCT word) = 1 AND NOT min(word) = ANY($2::text[])
           ), s AS (
               SELECT one.camera_id,
                      h.last_probe_at <= now() - make_interval(secs => $4) AS stale
               FROM one JOIN camera_health h ON h.camera_id = one.camera_id
               WHERE h.state->>'settled' = 'online' AND (h.state->>'fail_streak')::int = 0
                 AND h.state->>'status' = CASE WHEN h.state->>'picture' = 'faulty'
                                               THEN 'degraded' ELSE 'online' END
                 AND h.state->'recent' <@ '["ok"]'::jsonb
                 AND jsonb_array_length(h.state->'recent') > 0
                 AND NOT h.state->'changes' @> '[true]'::jsonb
                 AND h.failures = 0 AND h.next_probe_at = 'infinity' AND h.lease_owner IS NULL
                 AND h.last_probe = jsonb_build_object(
                         'source', $3::text, 'outcome', 'ok',
                         'detail', $5::text || CASE WHEN one.word = '' THEN '?' ELSE one.word END)
           ), locked AS (
               SELECT h.camera_id FROM camera_health h
               WHERE h.camera_id IN (SELECT camera_id FROM s WHERE stale)
               ORDER BY h.camera_id FOR UPDATE SKIP LOCKED
           ), touched AS (
               UPDATE camera_health h SET last_probe_at = now()
               FROM locked WHERE h.camera_id = locked.camera_id
           )
           SELECT ch.camera_id, ch.word FROM ch
           WHERE NOT EXISTS (SELECT FROM s WHERE s.camera_id = ch.camera_id)""",
        list(device_ids),
        list(failing),
        source,
        float(fresh_s),
        detail,
    )
    return [(r["camera_id"], r["word"]) for r in rows]


async def _observe(
    pool: asyncpg.Pool,
    observations: Sequence[tuple[uuid.UUID, Outcome, str]],
    policy: StatusPolicy | None,
    source: str,
) -> list[Transition]:
    now = dt.datetime.now(dt.UTC).timestamp()
    ids = sorted({cid for cid, _, _ in observations})
    out: list[Transition] = []
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT h.camera_id, h.state, h.failures, c.region_code
               FROM camera_health h JOIN cameras c ON c.id = h.camera_id
               WHERE h.camera_id = ANY($1::uuid[]) ORDER BY h.camera_id FOR UPDATE OF h""",
            ids,
        )
        found = {r["camera_id"]: r for r in rows}
        states = {cid: _state(r["state"], now) for cid, r in found.items()}
        last: dict[uuid.UUID, tuple[Outcome, str]] = {}
        changes: list[tuple[uuid.UUID, str, Transition]] = []
        for cid, outcome, detail in observations:
            if cid not in states:
                continue
            state = states[cid]
            state, transition = step(state, outcome, max(now, state.since), policy)
            states[cid] = state
            last[cid] = (outcome, detail)
            if transition is not None:
                changes.append((cid, found[cid]["region_code"], transition))
                out.append(transition)
        await _transitions_many(conn, changes)
        ids = list(states)
        await conn.execute(
            """UPDATE camera_health h SET state = u.state::jsonb, last_probe = u.probe::jsonb,
                   last_probe_at = now(),
                   failures = CASE WHEN u.failed THEN h.failures + 1 ELSE 0 END,
                   next_probe_at = 'infinity',
                   -- an RTSP probe's lease is void (its result would undo this); a lease
                   -- taken off that schedule is a frame diagnosis's and stays
                   lease_owner = CASE WHEN h.next_probe_at = 'infinity'
                                      THEN h.lease_owner END,
                   lease_until = CASE WHEN h.next_probe_at = 'infinity'
                                      THEN h.lease_until END,
                   lease_host = CASE WHEN h.next_probe_at = 'infinity'
                                     THEN h.lease_host END
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[])
                    AS u(camera_id, state, probe, failed)
               WHERE h.camera_id = u.camera_id""",
            ids,
            [json_text(states[cid].dump()) for cid in ids],
            [
                json_text({"source": source, "outcome": last[cid][0], "detail": last[cid][1]})
                for cid in ids
            ],
            [last[cid][0] == "fail" for cid in ids],
        )
    return out


async def _transitions_many(
    conn: asyncpg.Connection, changes: Sequence[tuple[uuid.UUID, str, Transition]]
) -> None:
    """`_transition` for many cameras in a few pipelined round trips instead of five each
    (a catalog batch brings thousands of channels online at once).

    In rounds where each camera appears once, so that a camera's second transition credits
    the interval that its first one opened.
    """
    rounds: list[list[tuple[uuid.UUID, str, Transition]]] = []
    seen: dict[uuid.UUID, int] = {}
    for change in changes:
        n = seen.get(change[0], 0)
        seen[change[0]] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(change)
    if not rounds:
        return
    channel = status_channel(await conn.fetchval("SELECT current_schema()"))
    for batch in rounds:  # four statements a round, whatever its size
        ids = [c for c, _, _ in batch]
        await conn.execute(
            _CREDIT, ids, [t.old for _, _, t in batch], [t.at for _, _, t in batch], DAY_TZ
        )
        await conn.execute(
            """INSERT INTO status_transitions (camera_id, at, old, new, reason)
               SELECT camera_id, to_timestamp(at), old, new, reason
               FROM unnest($1::uuid[], $2::float8[], $3::text[], $4::text[], $5::text[])
                    AS u(camera_id, at, old, new, reason)""",
            ids,
            [t.at for _, _, t in batch],
            [t.old for _, _, t in batch],
            [t.new for _, _, t in batch],
            [t.reason for _, _, t in batch],
        )
        await cameras.set_status_many(conn, [(c, t.new) for c, _, t in batch])
        await conn.execute(
            "SELECT pg_notify($1, e) FROM unnest($2::text[]) WITH ORDINALITY AS u(e, n) ORDER BY n",
            channel,
            [
                json_text(
                    {
                        "camera_id": str(c),
                        "region_code": region,
                        "old": t.old,
                        "new": t.new,
                        "at": dt.datetime.fromtimestamp(t.at, dt.UTC).isoformat(),
                        "reason": t.reason,
                    }
                )
                for c, region, t in batch
            ],
        )


def _jsonable(state: CameraState) -> dict[str, Any]:
    return json.loads(json.dumps(state.dump()))


async def camera_health(pool: asyncpg.Pool, camera_id: uuid.UUID) -> dict[str, Any] | None:
    rec = await pool.fetchrow(
        """SELECT c.status, h.state, h.last_probe_at, h.last_probe, h.next_probe_at, h.failures,
                  h.last_diagnosis_at, h.last_diagnosis, h.thumbnail IS NOT NULL AS has_snapshot,
                  h.reference_at, h.reference_source
           FROM cameras c JOIN camera_health h ON h.camera_id = c.id WHERE c.id = $1""",
        camera_id,
    )
    if rec is None:
        return None
    rows = await pool.fetch(
        """SELECT at, old, new, reason FROM status_transitions WHERE camera_id = $1
           ORDER BY at DESC, id DESC LIMIT 100""",
        camera_id,
    )
    state = rec["state"] or {}
    since = state.get("since")
    changes = state.get("changes") or []
    return {
        "status": rec["status"],
        "since": dt.datetime.fromtimestamp(since, dt.UTC).isoformat() if since else None,
        "last_probe_at": rec["last_probe_at"].isoformat() if rec["last_probe_at"] else None,
        "last_probe": rec["last_probe"],
        "next_probe_at": rec["next_probe_at"].isoformat(),
        "consecutive_failures": rec["failures"],
        "last_diagnosis_at": (
            rec["last_diagnosis_at"].isoformat() if rec["last_diagnosis_at"] else None
        ),
        "last_diagnosis": rec["last_diagnosis"],
        "has_snapshot": rec["has_snapshot"],
        # The scene reference that 场景变更 / 遮挡 / 偏色 are judged against.
        "reference": {
            "at": rec["reference_at"].isoformat() if rec["reference_at"] else None,
            "source": rec["reference_source"],
        },
        # The picture dimension of the status (health.status): suspect pictures are re-checked.
        "picture": {
            "state": state.get("picture", "unknown"),
            "faults": state.get("faults", []),
            "recheck_at": (
                dt.datetime.fromtimestamp(state["recheck_at"], dt.UTC).isoformat()
                if state.get("recheck_at")
                else None
            ),
        },
        # Why a camera is (or is close to being) `flapping`: raw state changes over the last
        # probes, and the hysteresis status underneath that it returns to when they calm down.
        "flapping": {
            "active": rec["status"] == "flapping",
            "changes_in_window": sum(bool(c) for c in changes),
            "probes_in_window": len(changes),
            "settled_status": state.get("settled", rec["status"]),
        },
        "transitions": [
            {"at": r["at"].isoformat(), "old": r["old"], "new": r["new"], "reason": r["reason"]}
            for r in rows
        ],
    }


async def thumbnail(pool: asyncpg.Pool, camera_id: uuid.UUID) -> bytes | None:
    value = await pool.fetchval(
        "SELECT thumbnail FROM camera_health WHERE camera_id = $1", camera_id
    )
    return bytes(value) if value is not None else None


async def kpi_rows(
    pool: asyncpg.Pool,
    low: str,
    high: str,
    *,
    prefix_len: int,
    by_level: bool,
    levels: tuple[int, ...] = (),
) -> list[KpiRow]:
    """Current KPI counts per region prefix (and level), counted by PostgreSQL; `levels`
    restricts to those levels (empty: all)."""
    level = "c.level" if by_level else "NULL::smallint"
    rows = await pool.fetch(
        f"""SELECT left(c.region_code, $3) AS region, {level} AS level, c.status,
                   count(*) AS n,
                   count(*) FILTER (WHERE (h.last_probe->>'ok')::boolean) AS networked
            FROM cameras c LEFT JOIN camera_health h ON h.camera_id = c.id
            WHERE c.region_code >= $1 AND c.region_code < $2
              AND (cardinality($4::int[]) = 0 OR c.level = ANY($4::int[]))
            GROUP BY 1, 2, 3 ORDER BY 1, 2""",
        low,
        high,
        prefix_len,
        list(levels),
    )
    groups: dict[tuple[str, int | None], dict[str, int]] = {}
    for r in rows:
        g = groups.setdefault(
            (r["region"], r["level"]),
            dict.fromkeys(("online", "degraded", "offline", "unknown", "flapping", "networked"), 0),
        )
        g[r["status"]] += r["n"]
        g["networked"] += r["networked"]
    return [
        KpiRow(region, lvl, registered=sum(v for k, v in g.items() if k != "networked"), **g)
        for (region, lvl), g in groups.items()
    ]


# The open interval of a camera: its current status since its last transition (the state's
# `since` is that transition's own timestamp), or since registration when it never changed.
_OPEN_SINCE = "coalesce(to_timestamp((h.state->>'since')::float8), c.created_at)"


async def period_totals(
    pool: asyncpg.Pool,
    low: str,
    high: str,
    first: dt.date,
    last: dt.date,
    *,
    prefix_len: int,
    by_level: bool,
    levels: tuple[int, ...] = (),
) -> tuple[dt.datetime, dt.datetime, list[PeriodTotals]]:
    """Camera-seconds per status over the local days `first`..`last` (inclusive), per group.

    Returns the period actually measured, [start, end) with end capped at now, and one
    `PeriodTotals` per region prefix (and level). Closed intervals come from the daily
    `camera_availability` rows; each camera's open interval is added here, clipped to the
    period, so nothing needs to roll the rows over at midnight.
    """
    level = "c.level" if by_level else "NULL::smallint"
    async with pool.acquire() as conn:
        start, end = await conn.fetchrow(
            """SELECT $1::date::timestamp AT TIME ZONE $3,
                      least(($2::date + 1)::timestamp AT TIME ZONE $3, now())""",
            first,
            last,
            DAY_TZ,
        )
        rows = await conn.fetch(
            f"""
            WITH cams AS (
                SELECT c.id, left(c.region_code, $3) AS region, {level} AS level, c.status,
                       greatest(extract(epoch FROM $7 - greatest($6, c.created_at)), 0)
                           AS exposure,
                       greatest(extract(epoch FROM $7 - greatest($6, {_OPEN_SINCE})), 0)
                           AS open_s
                FROM cameras c LEFT JOIN camera_health h ON h.camera_id = c.id
                WHERE c.region_code >= $1 AND c.region_code < $2
                  AND (cardinality($4::int[]) = 0 OR c.level = ANY($4::int[]))
                  AND c.created_at < $7
            ), closed AS (
                -- Aggregated by day range alone and hash-joined below: joining `cams` in here
                -- made PostgreSQL walk the (camera_id, day) key in camera order, ~10× slower.
                SELECT a.camera_id, sum(a.online_s) AS on_s, sum(a.degraded_s) AS deg_s,
                       sum(a.flapping_s) AS flap_s, sum(a.offline_s) AS off_s
                FROM camera_availability a
                WHERE a.day BETWEEN $5::date AND $8::date
                GROUP BY a.camera_id
            ), per AS (
                SELECT cams.region, cams.level, cams.exposure,
                       coalesce(on_s, 0) + CASE WHEN status = 'online' THEN open_s ELSE 0 END
                           AS on_s,
                       coalesce(deg_s, 0) + CASE WHEN status = 'degraded' THEN open_s ELSE 0 END
                           AS deg_s,
                       coalesce(flap_s, 0) + CASE WHEN status = 'flapping' THEN open_s ELSE 0 END
                           AS flap_s,
                       coalesce(off_s, 0) + CASE WHEN status = 'offline' THEN open_s ELSE 0 END
                           AS off_s
                FROM cams LEFT JOIN closed ON closed.camera_id = cams.id
            )
            SELECT region, level, count(*) AS registered,
                   sum(exposure)::float8 AS camera_s, sum(on_s)::float8 AS on_s,
                   sum(deg_s)::float8 AS deg_s, sum(flap_s)::float8 AS flap_s,
                   sum(off_s)::float8 AS off_s,
                   count(*) FILTER (WHERE on_s + deg_s + flap_s > 0) AS networked
            FROM per GROUP BY 1, 2 ORDER BY 1, 2""",
            low,
            high,
            prefix_len,
            list(levels),
            first,
            start,
            end,
            last,
        )
    return (
        start,
        end,
        [
            PeriodTotals(
                region=r["region"],
                level=r["level"],
                registered=r["registered"],
                camera_seconds=r["camera_s"],
                online_seconds=r["on_s"],
                degraded_seconds=r["deg_s"],
                flapping_seconds=r["flap_s"],
                offline_seconds=r["off_s"],
                networked=r["networked"],
            )
            for r in rows
        ],
    )


async def daily_availability(
    pool: asyncpg.Pool, camera_id: uuid.UUID, first: dt.date, last: dt.date
) -> list[dict[str, Any]]:
    """One camera's seconds per status for each local day `first`..`last` it was registered,
    up to now (later days are left out); the open interval is added like in `period_totals`.

    `share` is (online + degraded) / observed seconds: the day's 在线率 for this camera.
    """
    rows = await pool.fetch(
        f"""
        WITH cam AS (
            SELECT c.id, c.status, c.created_at, {_OPEN_SINCE} AS since
            FROM cameras c LEFT JOIN camera_health h ON h.camera_id = c.id WHERE c.id = $1
        ), days AS (
            SELECT d::date AS day, greatest(d AT TIME ZONE $4, cam.created_at) AS d0,
                   least((d + interval '1 day') AT TIME ZONE $4, now()) AS d1
            FROM cam, generate_series($2::date::timestamp, $3::date::timestamp,
                                      interval '1 day') AS d
        ), per AS (
            SELECT days.day, extract(epoch FROM days.d1 - days.d0)::float8 AS observed,
                   cam.status,
                   greatest(extract(epoch FROM days.d1 - greatest(days.d0, cam.since)), 0)::float8
                       AS open_s,
                   coalesce(a.online_s, 0) AS on_s, coalesce(a.degraded_s, 0) AS deg_s,
                   coalesce(a.flapping_s, 0) AS flap_s, coalesce(a.offline_s, 0) AS off_s
            FROM days CROSS JOIN cam
            LEFT JOIN camera_availability a ON a.camera_id = cam.id AND a.day = days.day
            WHERE days.d1 > days.d0
        )
        SELECT day, observed,
               on_s + CASE WHEN status = 'online' THEN open_s ELSE 0 END AS on_s,
               deg_s + CASE WHEN status = 'degraded' THEN open_s ELSE 0 END AS deg_s,
               flap_s + CASE WHEN status = 'flapping' THEN open_s ELSE 0 END AS flap_s,
               off_s + CASE WHEN status = 'offline' THEN open_s ELSE 0 END AS off_s
        FROM per ORDER BY day""",
        camera_id,
        first,
        last,
        DAY_TZ,
    )
    return [
        {
            "date": r["day"].isoformat(),
            "observed_seconds": round(r["observed"], 3),
            "online_seconds": round(r["on_s"], 3),
            "degraded_seconds": round(r["deg_s"], 3),
            "flapping_seconds": round(r["flap_s"], 3),
            "offline_seconds": round(r["off_s"], 3),
            "share": min(1.0, (r["on_s"] + r["deg_s"]) / r["observed"]),
        }
        for r in rows
    ]


async def gauges(pool: asyncpg.Pool) -> tuple[int, dict[str, int]]:
    """Leases outstanding (live, across all workers) and cameras per status, for /metrics.

    Both are cheap at province scale: live leases come from a partial index holding only
    leased rows, and the status count from the (region, level, status) index.
    """
    async with pool.acquire() as conn:
        leases = await conn.fetchval(
            """SELECT count(*) FROM camera_health
               WHERE lease_until IS NOT NULL AND lease_until > now()""",
            timeout=5,
        )
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM cameras GROUP BY status", timeout=5
        )
    return int(leases), {r["status"]: int(r["n"]) for r in rows}
