"""`camreg geodata load FILE --kind …` and `camreg geodata list`: planning geodata from files.

Kept out of `cli.py` so the command's options and output live with each other; `cli.py` only
registers it. Like `cli.py`, this reaches into `ingest` lazily, inside the command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from camera_registry.planning.geodata import KINDS

MAX_SHOWN = 50


def add_geodata_parser(sub: Any) -> None:
    g = sub.add_parser("geodata", help="load and list planning geodata (boundaries, villages…)")
    gsub = g.add_subparsers(dest="action", required=True)
    load = gsub.add_parser("load", help="load a GeoJSON (or lon,lat CSV) file; replaces its set")
    load.add_argument("file")
    load.add_argument("--kind", required=True, choices=KINDS)
    load.add_argument("--crs", default="wgs84", help="wgs84|gcj02|bd09 (高德/腾讯 are gcj02)")
    load.add_argument("--source", help="data set name (default: the file name)")
    load.add_argument(
        "--repair-tolerance",
        type=float,
        default=None,
        help="largest area change (fraction) a polygon repair may make (default 0.01)",
    )
    load.add_argument("--all-problems", action="store_true", help="print every problem")
    load.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gsub.add_parser("list", help="the loaded data sets")


def _print_problems(problems: list[Any], label: str, show_all: bool) -> None:
    shown = problems if show_all else problems[:MAX_SHOWN]
    for p in shown:
        print(f"{label}: {p}", file=sys.stderr)
    if len(shown) < len(problems):
        print(f"… {len(problems) - len(shown)} more; use --all-problems", file=sys.stderr)


async def run_geodata(args: argparse.Namespace, settings: Any) -> int:
    from camera_registry.planning.geodata import datasets
    from camera_registry.store.runtime import open_database

    if args.action == "list":
        async with open_database(settings, pool_max=2) as db:
            rows = await datasets(db.pool)
        if not rows:
            print("no geodata loaded; `camreg demo` or `camreg geodata load FILE --kind …`")
        for d in rows:
            print(
                f"{d.kind:<10} {d.source:<30} {d.features:>8,} features  "
                f"{d.loaded_at:%Y-%m-%d %H:%M}  sha256 {d.checksum[:12]}"
            )
        return 0
    return await _load(args, settings)


async def _load(args: argparse.Namespace, settings: Any) -> int:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from camera_registry.store.runtime import open_database
    from ingest.geodata import REPAIR_TOLERANCE, GeodataError, load_geodata

    path = Path(args.file)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    async with open_database(settings, pool_max=2) as db:
        with Progress(*columns, disable=args.quiet or not sys.stderr.isatty()) as bar:
            task = bar.add_task(f"loading {path.name}", total=1.0)

            def progress(stage: str, fraction: float) -> None:
                bar.update(task, description=f"{path.name}: {stage}", completed=fraction)

            try:
                report = await load_geodata(
                    db.pool,
                    path,
                    args.kind,
                    crs=args.crs,
                    source=args.source,
                    repair_tolerance=args.repair_tolerance or REPAIR_TOLERANCE,
                    progress=progress,
                )
            except GeodataError as exc:
                bar.stop()
                print(f"camreg geodata load: {exc.reason}", file=sys.stderr)
                _print_problems(exc.problems, path.name, args.all_problems)
                return 1
            bar.update(task, completed=1.0)
    _print_problems([f"warning: {w}" for w in report.warnings], path.name, args.all_problems)
    print(report.summary())
    return 0
