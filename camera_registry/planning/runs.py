"""Coverage runs: measure a region against the layout policy, store the result, reuse it.

A run walks the region county by county: the cameras of the region (plus a margin of the
longest camera range, so cameras across a border see into it) are read once by binary COPY
into one float array (56 bytes a camera), and each county's boundary, villages, junctions and
built-up polygons are read as its turn comes; everything that grows with area (cells, masks,
gaps) exists for at most ``inflight`` counties at a time, so a whole province streams through
in bounded memory. The CPU work happens in worker processes
(:mod:`camera_registry.coverage_compute`), never on the event loop. Gaps and summary rows are
written as counties finish; proposals are chosen once over the whole run.

Runs remember the inputs they saw (``inputs_version``): a fingerprint of the registry's
coverage columns (per-county change counters kept by triggers, migration 0008), the loaded
geodata sets, the policy and K. Asking again with the same fingerprint returns the stored run.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import multiprocessing
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal

import asyncpg
import numpy as np
import shapely

from camera_registry.actor import Actor
from camera_registry.errors import BadRequest, FieldError, Forbidden, NotFound, RegistryError
from camera_registry.planning import coverage_policy, geodata
from camera_registry.planning.compute import (
    CountyInput,
    CountyResult,
    CoverageParams,
    Demand,
    ProposalRow,
    compute_county,
    propose,
)
from camera_registry.store import heartbeats
from camera_registry.store.db import CONNECTION_LOST, row_dict, while_connection_lost

log = logging.getLogger(__name__)

Progress = Callable[[float, str], Awaitable[None] | None]

MAX_PROPOSALS: Final = 5000
SUMMARY_FIELDS: Final = (
    "region_code",
    "name",
    "zone",
    "area_km2",
    "cells",
    "cells_covered",
    "covered_share",
    "villages",
    "villages_covered",
    "junctions",
    "junctions_covered",
    "cameras",
    "cameras_assumed",
    "cameras_per_km2",
    "cameras_by_level",
)
_M_PER_DEG_LAT: Final = 111_320.0
_CAMERA_COLUMNS: Final = 7
# Binary COPY row: int16 field count, then per float8 field an int32 length and 8 bytes.
_CAMERA_ROW = np.dtype(
    [("n", ">i2")]
    + [
        (f, ">i4" if f.startswith("l") else ">f8")
        for i in range(_CAMERA_COLUMNS)
        for f in (f"l{i}", f"v{i}")
    ]
)
_COPY_HEADER: Final = 19


class EmptyRegion(RegistryError):
    """The region has no zone to measure (no boundaries loaded, or none inside it)."""


class RunFailed(RegistryError):
    """The computation itself failed (a worker process died or raised)."""


def normalise_region(code: str | None, field: str = "region") -> str:
    """'140100' means 太原市 (prefix '1401'), '140000' the province ('14')."""
    raw = (code or "").strip()
    if not raw.isdigit() or not 2 <= len(raw) <= 6 or len(raw) % 2:
        raise BadRequest(
            f"bad region {code!r}",
            [FieldError(field, "use a region code or prefix of 2, 4 or 6 digits, e.g. 14, 1401")],
        )
    while len(raw) > 2 and raw.endswith("00"):
        raw = raw[:-2]
    return raw


def _like(prefix: str) -> str:
    return prefix.replace("\\", "").replace("%", "").replace("_", "") + "%"


async def inputs_version(
    conn: asyncpg.Connection, policy: Mapping[str, Any], proposals: int
) -> str:
    """Cheap fingerprint of everything a run's result depends on.

    The camera part is global (every county's counter), because cameras of a neighbouring
    county reach across the border: a change anywhere invalidates, never too little.
    """
    cams = await conn.fetchrow(
        "SELECT coalesce(sum(version), 0) AS s, count(*) AS n FROM camera_geo_versions"
    )
    sets = await conn.fetchval(
        """SELECT coalesce(string_agg(kind || ':' || source || ':' || checksum, ','
                                      ORDER BY kind, source), '') FROM geo_datasets"""
    )
    geo = hashlib.sha256(str(sets).encode()).hexdigest()[:16]
    return (
        f"cameras:{cams['s']}.{cams['n']};geodata:{geo};"
        f"policy:{coverage_policy.policy_hash(policy)};k:{proposals}"
    )


Outcome = Literal["new", "joined", "reused"]


class CoverageRuns:
    """Runs as rows: request (or join, or reuse), follow, and read their stored results.

    ``stale_after_s`` is the heartbeat limit (:mod:`camera_registry.heartbeats`): a live run
    whose process stopped is closed before a request looks for one to join, so a dead
    server's queued run never blocks new requests.
    """

    def __init__(self, pool: asyncpg.Pool, stale_after_s: float = 60.0) -> None:
        self.pool = pool
        self.stale_after_s = stale_after_s

    async def request(
        self, actor: Actor, region: str, policy: Mapping[str, Any] | None, proposals: int
    ) -> tuple[dict[str, Any], Outcome]:
        """The run for these inputs: a finished one (reused), the live one (joined) or new.

        New runs are queued owned by this process (the caller runs them under a heartbeat).
        """
        region = normalise_region(region)
        if not actor.covers(region):
            raise Forbidden(
                f"your token is scoped to region {actor.scope}; region {region} is outside it",
                [FieldError("region", f"use a region inside {actor.scope}")],
            )
        if not 0 <= proposals <= MAX_PROPOSALS:
            raise BadRequest(
                "bad proposals", [FieldError("proposals", f"must be 0–{MAX_PROPOSALS}")]
            )
        canonical = coverage_policy.parse_policy(policy)
        if not await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM geo_regions WHERE rank = 'county' AND adcode LIKE $1)",
            _like(region),
        ):
            raise EmptyRegion(
                f"no county boundaries are loaded under region {region}; load region "
                "boundaries (camreg geodata load FILE --kind regions, or camreg demo) first",
                [FieldError("region", f"no county-level boundary starts with {region}")],
            )
        async with self.pool.acquire() as conn, conn.transaction():
            version = await inputs_version(conn, canonical, proposals)
            # Two identical requests at once (in any processes) queue on this lock; the
            # partial unique index coverage_runs_one_live (migration 0011) is the backstop.
            key = int.from_bytes(
                hashlib.sha256(f"{region}|{version}".encode()).digest()[:8], "big", signed=True
            )
            await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            await heartbeats.reap(conn, self.stale_after_s, ("coverage_runs",))
            old = await conn.fetchrow(
                """SELECT * FROM coverage_runs WHERE region = $1 AND inputs_version = $2
                   AND status IN ('done', 'queued', 'running')
                   ORDER BY status = 'done' DESC, created_at DESC LIMIT 1""",
                region,
                version,
            )
            if old is not None:
                return row_dict(old), "reused" if old["status"] == "done" else "joined"
            rec = await conn.fetchrow(
                """INSERT INTO coverage_runs (region, policy, proposals, inputs_version,
                       created_by, owner, heartbeat_at)
                   VALUES ($1, $2, $3, $4, $5, $6, now())
                   ON CONFLICT (region, inputs_version) WHERE status IN ('queued', 'running')
                   DO NOTHING RETURNING *""",
                region,
                canonical,
                proposals,
                version,
                actor.name,
                heartbeats.OWNER,
            )
            if rec is None:  # only without the lock's help, e.g. another key hashing scheme
                rec = await conn.fetchrow(
                    """SELECT * FROM coverage_runs WHERE region = $1 AND inputs_version = $2
                       AND status IN ('queued', 'running')""",
                    region,
                    version,
                )
                assert rec is not None
                return row_dict(rec), "joined"
        return row_dict(rec), "new"

    async def _own(self, actor: Actor, run_id: str) -> asyncpg.Record:
        try:
            rid = uuid.UUID(run_id)
        except ValueError:
            raise BadRequest(
                "bad run id", [FieldError("id", "use the id POST /coverage/runs returned")]
            ) from None
        rec = await self.pool.fetchrow("SELECT * FROM coverage_runs WHERE id = $1", rid)
        if rec is None or not actor.covers(rec["region"]):
            raise NotFound(f"no coverage run {run_id} in your region")
        return rec

    async def get(self, actor: Actor, run_id: str) -> dict[str, Any]:
        return row_dict(await self._own(actor, run_id))

    async def gaps_geojson(
        self,
        actor: Actor,
        run_id: str,
        *,
        bbox: tuple[float, float, float, float] | None = None,
        min_priority: float | None = None,
        kind: str | None = None,
        limit: int | None = 10_000,
    ) -> str:
        """A GeoJSON FeatureCollection text, highest priority first (geometry stored as text)."""
        rec = await self._own(actor, run_id)
        where = ["run_id = $1"]
        args: list[Any] = [rec["id"]]
        if bbox is not None:
            args.extend(bbox)
            n = len(args)
            where.append(f"bbox && box(point(${n - 3}, ${n - 2}), point(${n - 1}, ${n}))")
        if min_priority is not None:
            args.append(min_priority)
            where.append(f"priority >= ${len(args)}")
        if kind is not None:
            args.append(kind)
            where.append(f"kind = ${len(args)}")
        args.append(limit)
        rows = await self.pool.fetch(
            f"""SELECT seq, kind, priority, area_m2, name, region_code, geometry
                FROM coverage_gaps WHERE {" AND ".join(where)}
                ORDER BY priority DESC, seq LIMIT ${len(args)}""",
            *args,
        )
        return _collection(
            (
                r["geometry"],
                {
                    "kind": r["kind"],
                    "priority": r["priority"],
                    "area_m2": r["area_m2"],
                    "name": r["name"],
                    "region_code": r["region_code"],
                },
            )
            for r in rows
        )

    async def summary_rows(self, actor: Actor, run_id: str) -> list[dict[str, Any]]:
        rec = await self._own(actor, run_id)
        rows = await self.pool.fetch(
            f"SELECT {', '.join(SUMMARY_FIELDS)} FROM coverage_summary WHERE run_id = $1 "
            "ORDER BY region_code",
            rec["id"],
        )
        return [dict(r) for r in rows]

    async def proposals_geojson(self, actor: Actor, run_id: str) -> str:
        rec = await self._own(actor, run_id)
        rows = await self.pool.fetch(
            "SELECT * FROM coverage_proposals WHERE run_id = $1 ORDER BY rank", rec["id"]
        )
        return _collection(
            (
                json.dumps({"type": "Point", "coordinates": [r["lon"], r["lat"]]}),
                {
                    "kind": "proposal",
                    "rank": r["rank"],
                    "site_kind": r["site_kind"],
                    "region_code": r["region_code"],
                    "newly_covered": r["newly_covered"],
                    "newly_cells": r["newly_cells"],
                    "newly_villages": r["newly_villages"],
                    "newly_junctions": r["newly_junctions"],
                    "gain_weight": r["gain_weight"],
                    "covered_share_after": r["covered_share_after"],
                    "covers": r["covers"],
                },
            )
            for r in rows
        )

    async def fail_unfinished(self, run_ids: Sequence[str], message: str) -> None:
        await self.pool.execute(
            """UPDATE coverage_runs SET status = 'failed', error = $2, message = $2,
                   finished_at = now()
               WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'running')""",
            list(run_ids),
            message,
        )


def _collection(features: Any) -> str:
    parts = [
        '{"type":"Feature","geometry":'
        + geometry
        + ',"properties":'
        + json.dumps(props, ensure_ascii=False)
        + "}"
        for geometry, props in features
    ]
    return '{"type":"FeatureCollection","features":[' + ",".join(parts) + "]}"


def merge_collections(*collections: str) -> str:
    """One FeatureCollection from several of ours (as text: a province's gaps are large)."""
    head = '{"type":"FeatureCollection","features":['
    bodies = [c[len(head) : -2] for c in collections if c.startswith(head) and c.endswith("]}")]
    return head + ",".join(b for b in bodies if b) + "]}"


def summary_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(SUMMARY_FIELDS)
    for r in rows:
        w.writerow(
            [
                json.dumps(r[f], sort_keys=True) if f == "cameras_by_level" else r[f]
                for f in SUMMARY_FIELDS
            ]
        )
    return buf.getvalue()


# -- execution -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _County:
    adcode: str
    name: str
    bbox: tuple[float, float, float, float]


def _box(b: tuple[float, float, float, float]) -> asyncpg.Box:
    return asyncpg.Box((b[2], b[3]), (b[0], b[1]))


def _grow(b: tuple[float, float, float, float], metres: float) -> tuple[float, float, float, float]:
    dlat = metres / _M_PER_DEG_LAT
    coslat = max(math.cos(math.radians(max(abs(b[1]), abs(b[3])))), 0.01)
    dlon = dlat / coslat
    return (b[0] - dlon, b[1] - dlat, b[2] + dlon, b[3] + dlat)


class _CameraSink:
    """Parses the binary COPY stream as it arrives, so the raw bytes never pile up."""

    _FLUSH = 8 << 20

    def __init__(self) -> None:
        self.buf = bytearray()
        self.parts: list[np.ndarray] = []
        self.header = False

    async def __call__(self, chunk: bytes) -> None:
        self.buf.extend(chunk)
        if len(self.buf) >= self._FLUSH:
            self._parse(final=False)

    def _parse(self, *, final: bool) -> None:
        start = 0
        if not self.header:
            if len(self.buf) < _COPY_HEADER:
                return
            start, self.header = _COPY_HEADER, True
        usable = len(self.buf) - start - (2 if final else 0)  # the -1 trailer
        n = max(usable, 0) // _CAMERA_ROW.itemsize
        rows = np.frombuffer(self.buf, dtype=_CAMERA_ROW, count=n, offset=start)
        part = np.empty((n, _CAMERA_COLUMNS), dtype=np.float64)
        for i in range(_CAMERA_COLUMNS):  # over columns, not cameras
            part[:, i] = rows[f"v{i}"]
        del rows
        self.parts.append(part)
        del self.buf[: start + n * _CAMERA_ROW.itemsize]

    def result(self) -> np.ndarray:
        self._parse(final=True)
        return np.concatenate(self.parts) if self.parts else np.zeros((0, _CAMERA_COLUMNS))


async def _cameras(conn: asyncpg.Connection, box: tuple[float, float, float, float]) -> np.ndarray:
    """Cameras in a box as an (n, 7) float array, via binary COPY parsed by numpy.

    2.4 million cameras as asyncpg records would be ~20 million Python objects; the binary
    COPY stream of fixed-width float8 rows is a few ``frombuffer`` calls instead.
    """
    sink = _CameraSink()
    await conn.copy_from_query(
        """SELECT lon, lat, level::float8,
                  coalesce(azimuth::float8, 'NaN'), coalesce(hfov::float8, 'NaN'),
                  coalesce(max_view_distance::float8, 'NaN'),
                  coalesce(mount_height::float8, 'NaN')
           FROM cameras WHERE geom <@ box(point($1, $2), point($3, $4))""",
        *box,
        output=sink,
        format="binary",
    )
    return await asyncio.to_thread(sink.result)  # a 134 MB concatenate: off the event loop


class _CamerasByLon:
    """The run's cameras sorted by longitude, sliced per county without another query.

    One COPY of the region (a sequential scan for a province: 1.4 s for 2.4 M cameras,
    measured) beats a GiST read per county (24 s: county boxes overlap and every read is
    random heap access). Memory is 56 bytes per camera (134 MB for Shanxi); everything
    that grows with area (cells, masks, gaps) stays per county.
    """

    def __init__(self, cams: np.ndarray) -> None:
        order = np.argsort(cams[:, 0], kind="stable")
        self.cams = cams[order]

    def within(self, box: tuple[float, float, float, float]) -> np.ndarray:
        lon = self.cams[:, 0]
        lo = int(np.searchsorted(lon, box[0], side="left"))
        hi = int(np.searchsorted(lon, box[2], side="right"))
        part = self.cams[lo:hi]
        keep = (part[:, 1] >= box[1]) & (part[:, 1] <= box[3])
        return part[keep]


async def _read_county(
    conn: asyncpg.Connection,
    county: _County,
    zone: str,
    cameras: _CamerasByLon,
    margin_m: float,
    centre: tuple[float, float],
    params: CoverageParams,
) -> CountyInput:
    boundary = await conn.fetchval(
        "SELECT boundary FROM geo_regions WHERE adcode = $1", county.adcode
    )
    builtup: list[bytes] = []
    if zone == "rural":
        found = await geodata.builtup_in(conn, "", bbox=county.bbox)
        builtup = [bytes(b) for b in shapely.to_wkb(found.outline)] if len(found) else []
    cams = await asyncio.to_thread(cameras.within, _grow(county.bbox, margin_m))
    villages = await geodata.villages_in(conn, "", bbox=county.bbox)
    junctions = await geodata.junctions_in(conn, "", bbox=county.bbox)

    return CountyInput(
        adcode=county.adcode,
        name=county.name,
        zone="urban" if zone == "urban" else "rural",
        boundary_wkb=bytes(boundary),
        builtup_wkb=tuple(bytes(b) for b in builtup),
        centre=centre,
        cameras=cams,
        village_ids=villages.id,
        village_names=tuple(villages.name.tolist()),
        village_lonlat=np.column_stack([villages.lon, villages.lat]).reshape(-1, 2),
        village_population=villages.population,
        junction_ids=junctions.id,
        junction_names=tuple(junctions.name.tolist()),
        junction_lonlat=np.column_stack([junctions.lon, junctions.lat]).reshape(-1, 2),
        junction_weight=junctions.weight,
        junction_trunk=np.asarray(junctions.kind == "trunk", dtype=np.bool_),
        params=params,
    )


def _leave_ctrl_c_to_the_parent() -> None:
    """A terminal's Ctrl-C reaches every process of the foreground group: the workers ignore
    it (no traceback from each of them) and the parent stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_pool(workers: int = 2) -> ProcessPoolExecutor:
    """Spawned, not forked: the parent runs an event loop and a connection pool."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_leave_ctrl_c_to_the_parent,
    )


@contextlib.asynccontextmanager
async def _executor(given: Executor | None) -> AsyncIterator[Executor]:
    if given is not None:
        yield given
        return
    pool = process_pool()
    try:
        yield pool
    finally:
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


class _Reporter:
    """Progress to the run row (at most once a second) and to an optional callback."""

    def __init__(self, pool: asyncpg.Pool, run_id: uuid.UUID, callback: Progress | None) -> None:
        self.pool, self.run_id, self.callback = pool, run_id, callback
        self.last = 0.0

    async def __call__(self, fraction: float, message: str, *, force: bool = False) -> None:
        if self.callback is not None:
            maybe = self.callback(fraction, message)
            if maybe is not None:
                await maybe
        if force or time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            await self.pool.execute(
                "UPDATE coverage_runs SET progress = $2, message = $3 WHERE id = $1",
                self.run_id,
                min(max(fraction, 0.0), 1.0),
                message,
            )


async def execute_run(
    pool: asyncpg.Pool,
    run_id: str,
    *,
    executor: Executor | None = None,
    on_progress: Progress | None = None,
    inflight: int = 2,
) -> dict[str, Any]:
    """Compute a queued run and store its results; the run row ends done or failed.

    ``inflight`` counties are read ahead of the workers, which bounds memory while keeping
    the database reads overlapped with the computation.
    """
    rid = uuid.UUID(run_id)
    try:
        rec = await pool.fetchrow(
            """UPDATE coverage_runs SET status = 'running', started_at = now(), progress = 0,
                   message = 'starting', owner = $2, heartbeat_at = now()
               WHERE id = $1 RETURNING *""",
            rid,
            heartbeats.OWNER,
        )
    except asyncpg.UniqueViolationError:
        # Run again (or revived after its heartbeat was judged stale) while an identical run
        # is live: two live runs of the same inputs would compute the same thing twice.
        raise RunFailed(
            f"an identical coverage run is queued or running; follow it instead of {run_id}"
        ) from None
    if rec is None:
        raise NotFound(f"no coverage run {run_id}")
    report = _Reporter(pool, rid, on_progress)
    try:
        summary = await _execute(pool, rec, report, executor, inflight)
    except asyncio.CancelledError:
        await asyncio.shield(
            pool.execute(
                """UPDATE coverage_runs SET status = 'failed', finished_at = now(),
                       error = 'interrupted: the server stopped during the run; ask again',
                       message = 'interrupted' WHERE id = $1""",
                rid,
            )
        )
        raise
    except Exception as exc:
        if isinstance(exc, RegistryError):
            detail = exc.detail
        elif isinstance(exc, CONNECTION_LOST):
            log.error("coverage run %s: the database connection was lost: %s", run_id, exc)
            detail = (
                "the database connection was lost during the run (a restart or a network "
                f"cut: {type(exc).__name__}); ask again"
            )
        else:
            log.exception("coverage run %s failed", run_id)
            detail = f"{type(exc).__name__}: {exc}"
        # recorded even across a restart (bounded: past it the reaper closes the run)
        await while_connection_lost(
            f"coverage run {run_id}",
            lambda: pool.execute(
                """UPDATE coverage_runs SET status = 'failed', finished_at = now(), error = $2,
                       message = 'failed' WHERE id = $1""",
                rid,
                detail,
            ),
        )
        raise
    await while_connection_lost(
        f"coverage run {run_id}",
        lambda: pool.execute(
            """UPDATE coverage_runs SET status = 'done', progress = 1, message = 'done',
                   summary = $2, finished_at = now() WHERE id = $1""",
            rid,
            summary,
        ),
    )
    return summary


async def _execute(
    pool: asyncpg.Pool,
    run: asyncpg.Record,
    report: _Reporter,
    given: Executor | None,
    inflight: int,
) -> dict[str, Any]:
    started = time.monotonic()
    policy = run["policy"]
    params = coverage_policy.params(policy)
    region: str = run["region"]
    rows = await pool.fetch(
        """SELECT adcode, name,
                  least((bbox[0])[0], (bbox[1])[0]) AS x0, least((bbox[0])[1], (bbox[1])[1]) AS y0,
                  greatest((bbox[0])[0], (bbox[1])[0]) AS x1,
                  greatest((bbox[0])[1], (bbox[1])[1]) AS y1
           FROM geo_regions WHERE rank = 'county' AND adcode LIKE $1 ORDER BY adcode""",
        _like(region),
    )
    if not rows:
        raise EmptyRegion(
            f"no county boundaries are loaded under region {region}; load region boundaries "
            "(camreg geodata load FILE --kind regions, or camreg demo) and ask again",
            [FieldError("region", f"no county-level boundary starts with {region}")],
        )
    counties = [_County(r["adcode"], r["name"], (r["x0"], r["y0"], r["x1"], r["y1"])) for r in rows]
    centre = (
        (min(c.bbox[0] for c in counties) + max(c.bbox[2] for c in counties)) / 2.0,
        (min(c.bbox[1] for c in counties) + max(c.bbox[3] for c in counties)) / 2.0,
    )
    longest = await pool.fetchval("SELECT coalesce(max(max_view_distance), 0) FROM cameras")
    margin = max(float(longest), params.max_default_radius_m, params.village_entrance_m) + 1.0
    await pool.execute("DELETE FROM coverage_gaps WHERE run_id = $1", run["id"])
    await pool.execute("DELETE FROM coverage_summary WHERE run_id = $1", run["id"])
    await pool.execute("DELETE FROM coverage_proposals WHERE run_id = $1", run["id"])

    loop = asyncio.get_running_loop()
    demands: list[tuple[str, Demand]] = []
    totals = {"covered_weight": 0.0, "total_weight": 0.0}
    seq = 0
    summaries: list[dict[str, Any]] = []
    n = len(counties)
    share_counties = 0.85 if run["proposals"] else 0.98

    async def store(res: CountyResult) -> None:
        nonlocal seq
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "coverage_gaps",
                records=(
                    (
                        run["id"],
                        seq + i,
                        g.kind,
                        res.adcode,
                        g.priority,
                        g.area_m2,
                        g.name,
                        g.geometry,
                        _box(g.bbox),
                    )
                    for i, g in enumerate(res.gaps)
                ),
                columns=[
                    "run_id",
                    "seq",
                    "kind",
                    "region_code",
                    "priority",
                    "area_m2",
                    "name",
                    "geometry",
                    "bbox",
                ],
            )
            s = res.summary
            await conn.execute(
                f"""INSERT INTO coverage_summary (run_id, {", ".join(SUMMARY_FIELDS)})
                    VALUES ($1, {", ".join(f"${i + 2}" for i in range(len(SUMMARY_FIELDS)))})""",
                run["id"],
                *(s[f] for f in SUMMARY_FIELDS),
            )
        seq += len(res.gaps)
        summaries.append(s)
        if res.demand.x.size or res.demand.cand_x.size:
            demands.append((res.adcode, res.demand))
        totals["covered_weight"] += res.covered_weight
        totals["total_weight"] += res.total_weight

    everywhere = (
        min(c.bbox[0] for c in counties),
        min(c.bbox[1] for c in counties),
        max(c.bbox[2] for c in counties),
        max(c.bbox[3] for c in counties),
    )
    await report(0.0, "reading cameras", force=True)
    async with pool.acquire() as conn:
        everyone = await _cameras(conn, _grow(everywhere, margin))
    cameras = await asyncio.to_thread(_CamerasByLon, everyone)  # a sort: off the event loop
    del everyone

    async with _executor(given) as executor:
        pending: deque[asyncio.Future[CountyResult]] = deque()
        try:
            async with pool.acquire() as conn:
                for county in counties:
                    zone = coverage_policy.zone_of(policy, county.adcode, county.name)
                    data = await _read_county(conn, county, zone, cameras, margin, centre, params)
                    pending.append(loop.run_in_executor(executor, compute_county, data))
                    while len(pending) > inflight or (pending and pending[0].done()):
                        await store(await pending.popleft())
                        await report(
                            share_counties * len(summaries) / n,
                            f"{len(summaries)}/{n} counties measured (reading {county.name})",
                        )
                    del data
            while pending:
                await store(await pending.popleft())
                await report(
                    share_counties * len(summaries) / n, f"{len(summaries)}/{n} counties measured"
                )
        finally:
            for fut in pending:
                fut.cancel()
        proposals: list[ProposalRow] = []
        if run["proposals"]:
            await report(share_counties, f"choosing {run['proposals']} sites", force=True)
            proposals = await loop.run_in_executor(
                executor,
                propose,
                centre,
                demands,
                totals["covered_weight"],
                totals["total_weight"],
                params.proposal_radius_m,
                int(run["proposals"]),
            )
    demands.clear()
    if proposals:
        # executemany, not COPY: asyncpg has no binary COPY encoder for jsonb.
        await pool.executemany(
            """INSERT INTO coverage_proposals (run_id, rank, lon, lat, site_kind, region_code,
                   newly_covered, newly_cells, newly_villages, newly_junctions, gain_weight,
                   covered_share_after, covers)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
            [
                (
                    run["id"],
                    p.rank,
                    p.lon,
                    p.lat,
                    p.site_kind,
                    p.region_code,
                    p.newly_covered,
                    p.newly_cells,
                    p.newly_villages,
                    p.newly_junctions,
                    p.gain_weight,
                    p.covered_share_after,
                    p.covers,
                )
                for p in proposals
            ],
        )
    log.info("coverage run %s: %d counties in %.1f s", run["id"], n, time.monotonic() - started)
    return _run_summary(summaries, seq, proposals, totals)


def _run_summary(
    rows: list[dict[str, Any]],
    gaps: int,
    proposals: list[ProposalRow],
    totals: Mapping[str, float],
) -> dict[str, Any]:
    def total(key: str) -> int:
        return int(sum(r[key] for r in rows))

    by_level: dict[str, int] = {}
    for r in rows:
        for level, count in r["cameras_by_level"].items():
            by_level[level] = by_level.get(level, 0) + count
    cells, villages, junctions = total("cells"), total("villages"), total("junctions")
    area = float(sum(r["area_km2"] for r in rows))
    assumed = total("cameras_assumed")
    return {
        "counties": len(rows),
        "area_km2": area,
        "cells": cells,
        "cells_covered": total("cells_covered"),
        "covered_share": total("cells_covered") / cells if cells else None,
        "villages": villages,
        "villages_covered": total("villages_covered"),
        "village_share": total("villages_covered") / villages if villages else None,
        "junctions": junctions,
        "junctions_covered": total("junctions_covered"),
        "junction_share": total("junctions_covered") / junctions if junctions else None,
        "cameras": total("cameras"),
        "cameras_assumed": assumed,
        "cameras_by_level": dict(sorted(by_level.items())),
        "cameras_per_km2": total("cameras") / area if area > 0 else None,
        "demand_share": totals["covered_weight"] / totals["total_weight"]
        if totals["total_weight"] > 0
        else None,
        "gaps": gaps,
        "proposals": len(proposals),
        "covered_share_after_proposals": proposals[-1].covered_share_after if proposals else None,
        "notes": (
            [
                f"{assumed} cameras have no orientation: counted as discs of their level's "
                "default radius (assumed)"
            ]
            if assumed
            else []
        ),
    }
