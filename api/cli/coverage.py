"""`camreg coverage --region 1401 …`: a coverage run from the command line.

Kept out of `cli.py` (which only registers it) so the command's options and output live
together. The run is the same stored run the API makes: asking again with unchanged inputs
reuses it, the API can serve what the CLI computed, and a CLI asking while a server computes
the same inputs waits for that run instead of computing it twice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from camera_registry.actor import Actor
from camera_registry.planning.runs import (
    MAX_PROPOSALS,
    CoverageRuns,
    execute_run,
    process_pool,
    summary_csv,
)
from camera_registry.store import heartbeats


def add_coverage_parser(sub: Any) -> None:
    c = sub.add_parser("coverage", help="measure coverage against the layout policy, propose sites")
    c.add_argument("--region", required=True, help="region code or prefix: 14, 1401, 140105")
    c.add_argument("--policy", help="layout policy TOML file (default: the shipped policy)")
    c.add_argument("--out", help="write gaps and proposals to this GeoJSON file")
    c.add_argument("--summary-csv", help="write the per-county summary to this CSV file")
    c.add_argument(
        "--proposals", type=int, default=200, help=f"sites to propose, 0–{MAX_PROPOSALS}"
    )
    c.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


_HEADERS = ("region", "name", "zone", "cells", "covered", "villages", "junctions", "cameras",
            "assumed", "per km²")  # fmt: skip
_NAME_MIN = 6  # a county name wraps down to this many cells; nothing else wraps or is cut


def _cells(r: dict[str, Any]) -> list[str]:
    return [
        r["region_code"],
        r["name"],
        r["zone"],
        f"{r['cells_covered']:,}/{r['cells']:,}",
        _pct(r["covered_share"]),
        f"{r['villages_covered']:,}/{r['villages']:,}",
        f"{r['junctions_covered']:,}/{r['junctions']:,}",
        f"{r['cameras']:,}",
        f"{r['cameras_assumed']:,}",
        "—" if r["cameras_per_km2"] is None else f"{r['cameras_per_km2']:.1f}",
    ]


def _build(title: str, cells: list[list[str]], compact: bool) -> Any:
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table

    table = (
        Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), pad_edge=False)
        if compact
        else Table(title=title)
    )
    for i, h in enumerate(_HEADERS):
        widest = max([cell_len(h), *(cell_len(c[i]) for c in cells)])
        if i == 1:
            table.add_column(h, overflow="fold", min_width=min(widest, _NAME_MIN))
        else:
            left = h in ("region", "zone")
            table.add_column(h, justify="left" if left else "right", no_wrap=True, min_width=widest)
    for c in cells:
        table.add_row(*c)
    return table


def _least_width(table: Any, cells: list[list[str]]) -> int:
    """The narrowest the table gets without cutting: its natural width less what the name
    column can give up by wrapping."""
    import io

    from rich.cells import cell_len
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=10_000, color_system=None).print(table)
    natural = max(cell_len(line) for line in out.getvalue().splitlines())
    names = max([cell_len(_HEADERS[1]), *(cell_len(c[1]) for c in cells)])
    return natural - max(0, names - _NAME_MIN)


def _table(rows: list[dict[str, Any]], run: dict[str, Any], console: Any) -> Any:
    """The summary as a table that fits the terminal without cutting a number: boxed where
    there is room, compact where there is less, one block per region where even that does
    not fit."""
    from rich.console import Group
    from rich.text import Text

    cells = [_cells(r) for r in rows]
    title = f"coverage of {run['region']} (run {run['id']})"
    for compact in (False, True):
        table = _build(title, cells, compact)
        if _least_width(table, cells) <= console.width:
            return table
    lines: list[Any] = [Text(title, style="italic")]
    for c in cells:
        lines.append(Text(f"{c[0]} {c[1]} ({c[2]})", style="bold"))
        lines.extend(Text(f"  {h}: {v}") for h, v in zip(_HEADERS[3:], c[3:], strict=True))
    return Group(*lines)


def _print_summary(
    rows: list[dict[str, Any]], run: dict[str, Any], console: Any | None = None
) -> None:
    from rich.console import Console

    console = console or Console()
    console.print(_table(rows, run, console))
    s = run["summary"] or {}
    console.print(
        f"cells covered {_pct(s.get('covered_share'))}, villages {_pct(s.get('village_share'))}, "
        f"junctions {_pct(s.get('junction_share'))}; {s.get('gaps', 0):,} gaps, "
        f"{s.get('proposals', 0)} proposals"
        + (
            f" (covered share after them {_pct(s['covered_share_after_proposals'])})"
            if s.get("covered_share_after_proposals") is not None
            else ""
        )
    )
    for note in s.get("notes", []):
        console.print(f"note: {note}")


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


async def run_coverage(args: argparse.Namespace, settings: Any) -> int:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from camera_registry.planning.coverage_policy import read_policy_file
    from camera_registry.planning.runs import merge_collections
    from camera_registry.store.runtime import open_database

    policy = await asyncio.to_thread(read_policy_file, Path(args.policy)) if args.policy else None
    actor = Actor.cli("coverage")
    async with open_database(settings, pool_max=4) as db:
        stale = settings.job_stale_after_s
        runs = CoverageRuns(db.pool, stale)
        run, outcome = await runs.request(actor, args.region, policy, args.proposals)
        if outcome == "reused":
            print(f"inputs unchanged since run {run['id']} ({run['finished_at']}): reusing it")
        elif outcome == "joined":
            print(
                f"run {run['id']} for the same inputs is {run['status']}: waiting for it",
                flush=True,
            )
            while run["status"] in ("queued", "running"):
                await asyncio.sleep(min(1.0, stale / 4))
                await heartbeats.reap(db.pool, stale, ("coverage_runs",))  # its owner may die
                run = await runs.get(actor, run["id"])
            if run["status"] != "done":
                print(f"camreg coverage: run failed: {run['error']}", file=sys.stderr)
                return 1
        else:
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
            )
            executor = process_pool(max(1, args.workers))
            try:
                with Progress(*columns, disable=args.quiet or not sys.stderr.isatty()) as bar:
                    task = bar.add_task(f"coverage {run['region']}", total=1.0)

                    def progress(fraction: float, message: str) -> None:
                        bar.update(task, completed=fraction, description=message)

                    try:
                        async with heartbeats.heartbeat(db.pool, "coverage_runs", run["id"], stale):
                            await execute_run(
                                db.pool, run["id"], executor=executor, on_progress=progress
                            )
                    except Exception as exc:
                        bar.stop()
                        failed = await runs.get(actor, run["id"])
                        print(
                            f"camreg coverage: run failed: {failed['error'] or exc}",
                            file=sys.stderr,
                        )
                        return 1
                    bar.update(task, completed=1.0, description="done")
            finally:
                await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        run = await runs.get(actor, run["id"])
        rows = await runs.summary_rows(actor, run["id"])
        if args.out:
            gaps = await runs.gaps_geojson(actor, run["id"], limit=None)
            proposals = await runs.proposals_geojson(actor, run["id"])
            await asyncio.to_thread(_write, args.out, merge_collections(gaps, proposals))
        if args.summary_csv:
            await asyncio.to_thread(_write, args.summary_csv, summary_csv(rows))
    _print_summary(rows, run)
    if args.out:
        print(f"gaps and proposals written to {args.out}")
    return 0
