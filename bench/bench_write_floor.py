"""What the write into `cameras` costs the engine, and what makes it cheaper.

    python bench/bench_write_floor.py [--rows 600000] [--repeat 2]

The same typed cameras (what an import of the bench ledger stored) are COPYed in binary into
the empty `cameras` of freshly migrated schemas that differ in one thing each: as migrated;
the point index as SP-GiST instead of GiST; time-ordered camera ids (the high 8 bytes a
counter, as UUIDv7 puts the time there) instead of random v4 UUIDs; and, to attribute the
cost, without each AFTER INSERT trigger in turn. Reported: PostgreSQL CPU seconds of the
COPY's backend (/proc) and wall-clock, medians; then EXPLAIN ANALYZE of the readers' bbox
and k-nearest queries on GiST and SP-GiST over the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench.bench_import import _FLOOR_COLUMNS, backend_cpu, ensure_cameras
from bench.common import OUT, database_url, fresh_schema, median
from camera_registry.store.db import migrate

SOURCE_SCHEMA = "bench_imp2"
_KEY = base64.b64encode(b"f" * 32).decode()
_ORDER = "ORDER BY floor(lon / 0.1), floor(lat / 0.1)"
_TIME_ORDERED_ID = (
    "encode(int8send(1700000000000000 + row_number() OVER ({order}))"
    " || substring(uuid_send(gen_random_uuid()) FROM 9), 'hex')::uuid"
)
_SPGIST = """DROP INDEX cameras_geom_gist;
             CREATE INDEX cameras_geom_spgist ON cameras USING spgist (geom)"""
_TRIGGER_OFF = "ALTER TABLE cameras DISABLE TRIGGER "
VARIANTS: dict[str, tuple[str, bool]] = {
    # name: (DDL after migrating, time-ordered ids)
    "as migrated (GiST, random v4 ids)": ("", False),
    "SP-GiST point index": (_SPGIST, False),
    "time-ordered ids": ("", True),
    "SP-GiST + time-ordered ids": (_SPGIST, True),
    "without the map-grid trigger": (_TRIGGER_OFF + "cameras_map_grid_insert", False),
    "without the health-schedule trigger": (_TRIGGER_OFF + "cameras_schedule_health", False),
    "without the geo-version trigger": (_TRIGGER_OFF + "cameras_geo_version_insert", False),
    "without any trigger": (_TRIGGER_OFF + "USER", False),
}
_COLS = [*_FLOOR_COLUMNS, "streams"]
_READS = {
    "bbox (a city, ~0.5°×0.5°)": (
        "SELECT id, gb_id, lon, lat FROM cameras "
        "WHERE geom <@ box(point({x} - 0.25, {y} - 0.25), point({x} + 0.25, {y} + 0.25))"
    ),
    "near (k = 10)": "SELECT id, gb_id FROM cameras ORDER BY geom <-> point({x}, {y}) LIMIT 10",
}


async def dump(url: str, rows: int) -> tuple[Path, Path, tuple[float, float]]:
    await ensure_cameras(url, rows, SOURCE_SCHEMA, _KEY)
    conn = await asyncpg.connect(url, server_settings={"search_path": SOURCE_SCHEMA})
    try:
        plain, ordered = OUT / "floor-random.bin", OUT / "floor-ordered.bin"
        cols = ", ".join(_COLS)
        await conn.copy_from_query(
            f"SELECT {cols} FROM cameras {_ORDER}", output=plain, format="binary"
        )
        ident = _TIME_ORDERED_ID.format(order=_ORDER)
        await conn.copy_from_query(
            f"SELECT {ident}, {cols} FROM cameras {_ORDER}", output=ordered, format="binary"
        )
        center = await conn.fetchrow("SELECT avg(lon) AS x, avg(lat) AS y FROM cameras")
        assert center is not None
        return plain, ordered, (float(center["x"]), float(center["y"]))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def migrated(url: str, ddl: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh, migrated schema with `ddl` (a variant) applied, dropped after."""
    async with fresh_schema(url, "floor") as schema:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await migrate(conn)
            if ddl:
                await conn.execute(ddl)
            yield conn
        finally:
            await conn.close()


async def write(url: str, ddl: str, source: Path, with_id: bool) -> tuple[float, float]:
    async with migrated(url, ddl) as conn:
        pid = conn.get_server_pid()
        cpu0 = backend_cpu([pid])
        start = time.perf_counter()
        cols = ["id", *_COLS] if with_id else _COLS
        await conn.copy_to_table("cameras", source=source, columns=cols, format="binary")
        return time.perf_counter() - start, backend_cpu([pid]) - cpu0


async def reads(url: str, source: Path, center: tuple[float, float], repeat: int) -> None:
    """EXPLAIN ANALYZE of the readers' queries on the same rows under both point indexes."""
    x, y = center
    for name, ddl in (("GiST", ""), ("SP-GiST", _SPGIST)):
        async with migrated(url, ddl) as conn:
            await conn.copy_to_table("cameras", source=source, columns=_COLS, format="binary")
            await conn.execute("VACUUM ANALYZE cameras")
            for label, sql in _READS.items():
                times, plan_node, n = [], "", 0
                for _ in range(max(repeat, 5)):
                    plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql.format(x=x, y=y))
                    text = "\n".join(r[0] for r in plan)
                    m = re.search(r"Execution Time: ([\d.]+) ms", text)
                    assert m is not None
                    times.append(float(m.group(1)))
                    node = re.search(r"Index (?:Only )?Scan using (\w+)", text)
                    plan_node = node.group(1) if node else "no index scan"
                    rows = re.search(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+)", text)
                    n = int(rows.group(1)) if rows else 0
                print(
                    f"  {name:8} {label:28} median {median(times):7.2f} ms "
                    f"(min {min(times):.2f}), {n} rows, {plan_node}",
                    flush=True,
                )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep-source", action="store_true", help="keep the bench_imp2 schema")
    args = ap.parse_args()
    with database_url() as url:
        plain, ordered, center = await dump(url, args.rows)
        try:
            print(f"{args.rows:,} typed cameras COPYed into an empty `cameras`:", flush=True)
            for name, (ddl, with_id) in VARIANTS.items():
                walls, cpus = [], []
                for _ in range(args.repeat):
                    wall, cpu = await write(url, ddl, ordered if with_id else plain, with_id)
                    walls.append(wall)
                    cpus.append(cpu)
                print(
                    f"  {name:38} PostgreSQL CPU {median(cpus):6.2f} s "
                    f"= {median(cpus) / args.rows * 1e6:5.1f} µs/row "
                    f"({', '.join(f'{c:.2f}' for c in cpus)}); wall {median(walls):6.1f} s; "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
            print("readers, EXPLAIN ANALYZE (execution time):", flush=True)
            await reads(url, plain, center, args.repeat)
        finally:
            plain.unlink(missing_ok=True)
            ordered.unlink(missing_ok=True)
            if not args.keep_source:
                conn = await asyncpg.connect(url)
                await conn.execute(f"DROP SCHEMA IF EXISTS {SOURCE_SCHEMA} CASCADE")
                await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
