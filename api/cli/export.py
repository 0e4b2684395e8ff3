"""`camreg export [FILE] --format csv|xlsx|geojson --region … --level … --status … --bbox … --q …`:
the HTTP ledger export from the command line, where technicians work. Same columns, filters
and formats as `GET /api/v1/cameras/export`, so an export re-imports unchanged."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

FORMATS = ("csv", "xlsx", "geojson")


def add_export_parser(sub: Any) -> None:
    e = sub.add_parser(
        "export",
        help="write cameras to a ledger file (csv, xlsx, geojson) that re-imports unchanged",
        description="Write the registry's cameras as a ledger: the columns `camreg import` "
        "reads (credentials are never exported). Filters are those of "
        "GET /api/v1/cameras/export.",
        epilog="examples:\n  camreg export cameras.xlsx --region 1401 --level 1,2\n"
        "  camreg export --region 140105 --status offline > offline.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("file", nargs="?", default="-", help="output file; - or none: stdout")
    e.add_argument(
        "--format", choices=FORMATS, help="default: from the file name's extension, else csv"
    )
    e.add_argument("--region", help="region-code prefix (2-6 digits), e.g. 1401")
    e.add_argument("--level", help="comma-separated levels: 1,2,3,9")
    e.add_argument("--status", help="comma-separated: unknown,online,offline,degraded,flapping")
    e.add_argument("--bbox", help="minlon,minlat,maxlon,maxlat (WGS-84)")
    e.add_argument("--q", help="search in name, address, GB ID prefix")


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = Path(args.file).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else "csv"


async def _write_stream(out: IO[bytes], cameras: AsyncIterator[dict[str, Any]], fmt: str) -> int:
    import ingest.ledger.write as ledger_write
    from api.export import EXPORT_FIELDS, batches

    n = 0
    if fmt == "csv":
        out.write(ledger_write.csv_header(EXPORT_FIELDS))
        async for batch in batches(cameras):
            await asyncio.to_thread(out.write, ledger_write.csv_rows(batch, EXPORT_FIELDS))
            n += len(batch)
    else:
        out.write(ledger_write.geojson_prefix())
        first = True
        async for batch in batches(cameras):
            chunk = ledger_write.geojson_features(batch, EXPORT_FIELDS, first=first)
            await asyncio.to_thread(out.write, chunk)
            first = False
            n += len(batch)
        out.write(ledger_write.geojson_suffix())
    return n


async def run_export(args: argparse.Namespace, settings: Any) -> int:
    import ingest.ledger.write as ledger_write
    from api.export import EXPORT_FIELDS, XLSX_MAX_ROWS, batches
    from api.params import camera_filter
    from camera_registry.actor import Actor
    from camera_registry.store.cameras import Registry
    from camera_registry.store.runtime import open_database

    fmt = _format(args)
    to_stdout = args.file == "-"
    if fmt == "xlsx" and to_stdout:
        print(
            "camreg export: xlsx needs a FILE (a workbook is not written to stdout)",
            file=sys.stderr,
        )
        return 2
    query = {k: v for k in ("region", "level", "status", "bbox", "q") if (v := getattr(args, k))}
    f = camera_filter(query)  # the HTTP export's own checks; a bad filter is a RegistryError
    async with open_database(settings, pool_max=2) as db:
        cameras = Registry(db.pool, db.box).iterate(Actor.cli("export"), f)
        if fmt == "xlsx":
            rows: list[dict[str, Any]] = []
            async for batch in batches(cameras):
                rows.extend(batch)
                if len(rows) > XLSX_MAX_ROWS:
                    print(
                        "camreg export: too many cameras for one Excel sheet; use --format csv "
                        "or narrow the filters",
                        file=sys.stderr,
                    )
                    return 1
            await asyncio.to_thread(ledger_write.write_xlsx, Path(args.file), rows, EXPORT_FIELDS)
            n = len(rows)
        elif to_stdout:
            n = await _write_stream(sys.stdout.buffer, cameras, fmt)
            sys.stdout.flush()
        else:
            with open(args.file, "wb") as fh:  # noqa: ASYNC230 - writes go through to_thread
                n = await _write_stream(fh, cameras, fmt)
    where = "stdout" if to_stdout else args.file
    print(f"exported {n:,} cameras to {where} ({fmt})", file=sys.stderr)
    return 0
