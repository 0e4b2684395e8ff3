"""`camreg`: the one command line for every process (serve, import, tokens, migrate, demo).

This module is the composition root: the only place in `camera_registry` that reaches into
`api` and `ingest`, lazily, inside the commands that need them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from api.cli.coverage import add_coverage_parser, run_coverage
from api.cli.export import add_export_parser, run_export
from api.cli.gb28181 import add_gb28181_parser, run_gb28181
from api.cli.geodata import add_geodata_parser, run_geodata
from camera_registry.actor import Actor, Role
from camera_registry.config import Settings, load_settings
from camera_registry.errors import RegistryError
from camera_registry.store.runtime import open_database

log = logging.getLogger("camreg")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


def _stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM, so long-running commands can shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


# -- serve ---------------------------------------------------------------------------------------
async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from api.app import create_app
    from api.state import BOX, POOL, REGISTRY, SIP, TOKENS
    from camera_registry.demo.bootstrap import (
        DEMO_CAMERAS,
        demo_geodata_loaded,
        ensure_admin_token,
        load_demo,
    )
    from camera_registry.store.embedded import ServeLock

    settings = _settings(args, http_host=args.host, http_port=args.port)
    if args.sip_port is not None:
        if not 0 <= args.sip_port <= 65535:
            print(f"camreg serve: --sip-port {args.sip_port} is not a port", file=sys.stderr)
            return 2
        gb = settings.gb28181.model_copy(update={"sip_port": args.sip_port})
        settings = settings.model_copy(update={"gb28181": gb})
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    from health.settings import HealthConfigError, health_runtime

    try:
        health_runtime(settings.health)  # a bad [health] table stops here, not mid-startup
    except HealthConfigError as exc:
        print(f"camreg serve: {exc}", file=sys.stderr)
        return 2
    lock = ServeLock(settings.data_dir)
    lock.acquire()
    token_box: dict[str, tuple[str, bool]] = {}

    async def bootstrap(app: web.Application) -> Any:
        if args.demo:
            geodata, geo = await demo_geodata_loaded(app[POOL])
            if geo is not None:
                print(
                    f"loaded demo geodata: {geo.regions} regions ({geo.boundary_source}), "
                    f"{geo.villages} villages, {geo.junctions} junctions",
                    flush=True,
                )
        if args.demo and await app[REGISTRY].count() == 0:
            result = await load_demo(app[POOL], app[BOX], DEMO_CAMERAS, geodata=geodata)
            print(f"loaded {result.inserted} demo cameras across Shanxi", flush=True)
        token_box["admin"] = await ensure_admin_token(
            app[TOKENS], settings.data_dir / "admin.token"
        )
        yield

    app = create_app(
        settings,
        extra_startup=(bootstrap,),
        run_health=not (args.no_health or args.demo),
        run_sip=True,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    stop = _stop_on_signals()
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        host = settings.http_host if ":" not in settings.http_host else f"[{settings.http_host}]"
        port = runner.addresses[0][1] if runner.addresses else settings.http_port
        print(f"camera registry serving on http://{host}:{port}/", flush=True)
        sip = app.get(SIP)
        if sip is not None:
            gb = settings.gb28181
            print(
                f"GB/T 28181 SIP server on {sip.config.host}:{sip.port} (UDP and TCP), "
                f"server ID {gb.server_id}, domain {gb.sip_domain}",
                flush=True,
            )
        secret, created = token_box["admin"]
        where = settings.data_dir / "admin.token"
        if created:
            print(f"admin token: {secret}  (saved in {where}, mode 0600)", flush=True)
        else:
            print(
                f"admin token: in {where} (made at an earlier start; not printed again)", flush=True
            )
        if args.demo:
            print(
                "stream probes are off for the demo (its cameras do not exist); "
                "`camreg worker` probes real ones",
                flush=True,
            )
        print("press Ctrl-C to stop (the embedded database stops too)", flush=True)
        await stop.wait()
        print("stopping…", flush=True)
    finally:
        await runner.cleanup()
        lock.release()
    return 0


# -- import --------------------------------------------------------------------------------------
async def _import(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from ingest.errors import IngestError
    from ingest.ledger.source import import_ledger

    settings = _settings(args)
    path = Path(args.file)
    if not await asyncio.to_thread(path.is_file):
        print(f"camreg import: {path} does not exist or is not a file", file=sys.stderr)
        return 2
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    )
    async with open_database(settings) as db:
        with Progress(*columns, disable=args.quiet or not sys.stderr.isatty()) as bar:
            task = bar.add_task(f"importing {path.name}", total=1.0, rows=0)

            def progress(fraction: float, rows: int) -> None:
                bar.update(task, completed=fraction, rows=rows)

            try:
                report = await import_ledger(
                    db.pool,
                    db.box,
                    Actor.cli("import"),
                    path,
                    dry_run=args.dry_run,
                    partial=args.partial,
                    crs=args.crs,
                    chunk_rows=settings.import_chunk_rows,
                    on_progress=progress,
                    statement_timeout_s=settings.import_statement_timeout_s,
                )
            except IngestError as exc:
                print(f"camreg import: {exc}", file=sys.stderr)
                return 2

            bar.update(task, completed=1.0)
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    shown = report.errors if args.all_errors else report.errors[:50]
    for e in shown:
        print(f"{path.name}: row {e.row}: {e.field}: {e.message}", file=sys.stderr)
    if len(shown) < len(report.errors):
        print(
            f"… {len(report.errors) - len(shown)} more; use --all-errors or --report FILE",
            file=sys.stderr,
        )
    if args.report:
        await asyncio.to_thread(_write_report, args.report, report.errors)
    print(report.summary())
    return 1 if report.status == "rejected" else 0


def _write_report(path: str, errors: Sequence[Any]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "field", "message"])
        w.writerows((e.row, e.field, e.message) for e in errors)


# -- tokens, migrate, demo -----------------------------------------------------------------------
async def _token(args: argparse.Namespace) -> int:
    from camera_registry.store.tokens import Tokens

    async with open_database(_settings(args), pool_max=2) as db:
        tokens = Tokens(db.pool)
        actor = Actor.cli("token")
        if args.action == "create":
            expires = (
                dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_days)
                if args.expires_days
                else None
            )
            rec, secret = await tokens.create(
                actor,
                role=Role(args.role),
                name=args.name or f"{args.role} token",
                region=args.region,
                expires_at=expires,
                rate_limit_per_min=args.rate_limit,
            )
            print(f"token id {rec['id']} ({rec['role']}, scope {rec['region_prefix'] or 'all'})")
            print(secret)
            print("store it now: it is not shown again", file=sys.stderr)
        elif args.action == "list":
            for t in await tokens.all(actor):
                state = "revoked" if t["revoked_at"] else "active"
                scope = t["region_prefix"] or "all"
                print(f"{t['id']}  {t['role']:<10} {scope:<6} {state:<8} {t['name']}")
        else:
            await tokens.revoke(actor, args.id)
            print(f"revoked {args.id}")
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    async with open_database(_settings(args), pool_max=1):
        print("database schema is up to date")
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from camera_registry.demo.bootstrap import demo_geodata_loaded, load_demo
    from camera_registry.store.cameras import Registry

    async with open_database(_settings(args)) as db:
        if not args.force and await Registry(db.pool, db.box).count() > 0:
            print("the registry already has cameras; use --force to add the demo anyway")
            return 1
        geodata, geo = await demo_geodata_loaded(db.pool, args.province, args.seed, replace=True)
        assert geo is not None
        print(
            f"demo geodata: {geo.regions} regions ({geo.boundary_source}), "
            f"{geo.villages} villages, {geo.junctions} junctions"
        )
        result = await load_demo(db.pool, db.box, args.count, args.seed, geodata=geodata)
        print(
            f"demo: {result.inserted} new, {result.updated} updated, {result.unchanged} unchanged"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="camreg", description="雪亮工程 camera registry")
    p.add_argument("--config", help="TOML settings file (or CAMREG_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the API and web map")
    s.add_argument("--host", help="listen address (CAMREG_HTTP_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, help="listen port (CAMREG_HTTP_PORT, default 8080)")
    s.add_argument("--demo", action="store_true", help="load demo cameras into an empty registry")
    s.add_argument(
        "--sip-port",
        type=int,
        help="GB/T 28181 SIP port, UDP and TCP ([gb28181] sip_port, default 5060; 0 picks one)",
    )
    s.add_argument(
        "--no-health",
        action="store_true",
        help="do not run the probe scheduler (also off with --demo: demo cameras do not exist)",
    )

    w = sub.add_parser("worker", help="run a stream-health probe worker (run many, anywhere)")
    w.add_argument("--concurrency", type=int, default=200, help="probes in flight")
    w.add_argument(
        "--per-host", type=int, default=None, help="sessions per device host (config: 4)"
    )
    w.add_argument("--batch", type=int, default=200, help="cameras leased at a time")
    w.add_argument("--lease-seconds", type=float, default=60.0, help="lease length")
    w.add_argument("--frames", action="store_true", help="also run frame diagnosis")
    w.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics (probes by result, latency) on this port; 0 picks one",
    )
    w.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port")
    w.add_argument(
        "--frame-processes",
        type=int,
        default=2,
        help="concurrent frame captures, one process each (~60 MB PSS; a 2-core machine given to "
        "diagnosis runs ~32: see bench/RESULTS.md)",
    )

    i = sub.add_parser("import", help="import a camera ledger (CSV, XLSX, GeoJSON)")
    i.add_argument("file")
    i.add_argument("--dry-run", action="store_true", help="validate and count; change nothing")
    i.add_argument("--partial", action="store_true", help="import good rows even if some are bad")
    i.add_argument("--crs", default="wgs84", help="wgs84|gcj02|bd09 for rows without 坐标系")
    i.add_argument("--report", help="write every bad row to this CSV file")
    i.add_argument("--all-errors", action="store_true", help="print every bad row")
    i.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("token", help="manage API tokens")
    tsub = t.add_subparsers(dest="action", required=True)
    tc = tsub.add_parser("create")
    tc.add_argument("--role", required=True, choices=[r.value for r in Role])
    tc.add_argument("--region", help="region-code prefix scope, e.g. 1401")
    tc.add_argument("--name")
    tc.add_argument("--expires-days", type=float)
    tc.add_argument("--rate-limit", type=int, help="requests per minute (default unlimited)")
    tsub.add_parser("list")
    tr = tsub.add_parser("revoke")
    tr.add_argument("id")

    dc = sub.add_parser(
        "discover",
        help="find ONVIF cameras and put them in the inbox",
        description=DISCOVER_HELP,
        epilog=DISCOVER_EXAMPLES,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,  # so --password is an error, not --password-env
    )
    dc.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="local interface to send WS-Discovery multicast from, by name (eth0) or address; "
        "repeatable (default: every up IPv4 interface but loopback)",
    )
    dc.add_argument(
        "--no-multicast", action="store_true", help="no multicast: unicast sweeps of --cidr only"
    )
    dc.add_argument(
        "--cidr",
        action="append",
        default=[],
        metavar="RANGE",
        help="IPv4 range to sweep by unicast, at most a /16; repeatable (cameras behind "
        "routers, where multicast does not reach)",
    )
    dc.add_argument("--ports", help="also sweep /onvif/device_service on these ports: 80,8000")
    dc.add_argument("--user", help="ONVIF user for interrogation")
    dc.add_argument(
        "--password-env",
        help="environment variable holding the ONVIF password (else asked for when --user "
        "is given on a terminal; never pass it on the command line)",
    )
    dc.add_argument("--json", action="store_true", help="one JSON line per device on stdout")
    dc.add_argument(
        "--rate", type=float, default=500.0, help="probe packets per second (default: %(default)s)"
    )
    dc.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="devices interrogated at once (default: %(default)s)",
    )
    dc.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        help="seconds to listen after probing (default: %(default)s)",
    )
    dc.add_argument("--discovery-port", type=int, default=3702, help=argparse.SUPPRESS)

    sub.add_parser("migrate", help="apply database migrations")
    add_geodata_parser(sub)
    add_coverage_parser(sub)
    add_export_parser(sub)
    add_gb28181_parser(sub)
    d = sub.add_parser("demo", help="load seeded demo cameras")
    d.add_argument("--count", "--cameras", dest="count", type=int, default=400)
    d.add_argument("--province", default="14", help="province code (demo data: 14 山西 only)")
    d.add_argument("--seed", type=int, default=2024)
    d.add_argument("--force", action="store_true")
    return p


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and examples keep their lines (each option states its own default)."""


DISCOVER_HELP = """\
Find ONVIF cameras, NVRs and encoders on the technician's networks and put them in the
discovery inbox (GET /api/v1/discovery/devices; register them from the web map).

WS-Discovery probes go out by multicast on every up IPv4 interface (or the --interface ones)
and by rate-limited unicast to every address of the --cidr ranges. Found devices are
interrogated over ONVIF (vendor, model, serial, MAC, RTSP and snapshot URIs) with --user and
the password from --password-env (or asked for on a terminal; never an argument). Ctrl-C
stops the sweep and keeps what was found."""

DISCOVER_EXAMPLES = """\
examples:
  ONVIF_PW=… camreg discover --user admin --password-env ONVIF_PW
  ONVIF_PW=… camreg discover --interface eth1 --cidr 10.2.0.0/22 --user admin \\
      --password-env ONVIF_PW --ports 80,8000
  camreg discover --no-multicast --cidr 192.168.1.0/24 --json > found.jsonl"""


def _worker_metrics(host: str, port: int | None) -> tuple[Any, Any]:
    """(probe hook, HTTP server) for a worker's own /metrics, or (None, None) without a port.

    A `camreg worker` on another machine probes cameras the API process never sees, so its
    probe counts and latencies must be scraped from the worker itself. The exporter is
    prometheus_client's own server, in a daemon thread: it never touches the event loop.
    """
    if port is None:
        return None, None
    from prometheus_client import start_http_server

    from api.metrics import Metrics

    metrics = Metrics()
    server, _ = start_http_server(port, host, registry=metrics.registry)
    print(f"metrics on http://{host}:{server.server_port}/metrics", flush=True)

    def on_probe(result: Any, seconds: float) -> None:
        metrics.probes.labels(result.failure or "ok").inc()
        metrics.probe_seconds.observe(seconds)

    return on_probe, server


async def _worker(args: argparse.Namespace) -> int:
    import dataclasses

    from health.settings import HealthConfigError, health_runtime
    from health.worker import Worker

    if args.frame_processes < 1:
        print("camreg worker: --frame-processes must be at least 1", file=sys.stderr)
        return 2
    settings = _settings(args)
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    try:
        health = health_runtime(settings.health)
    except HealthConfigError as exc:
        print(f"camreg worker: {exc}", file=sys.stderr)
        return 2
    cfg = dataclasses.replace(
        health.worker,
        concurrency=args.concurrency,
        batch=args.batch,
        lease_s=args.lease_seconds,
        per_host=health.worker.per_host if args.per_host is None else args.per_host,
    )
    stop = _stop_on_signals()
    async with open_database(settings) as db:
        from health.frames import FrameSampler

        sampler = (
            FrameSampler(processes=args.frame_processes, thresholds=health.thresholds)
            if args.frames
            else None
        )
        on_probe, metrics_server = _worker_metrics(args.metrics_host, args.metrics_port)
        worker = Worker(
            db.pool, db.box, cfg, policy=health.policy, sampler=sampler, on_probe=on_probe
        )
        from api.ptz import onvif_ptz_mover

        # 云台失控 checks move PTZ cameras over ONVIF (only with health.diagnosis.ptz_check)
        worker.ptz_mover = onvif_ptz_mover(db.pool, db.box)
        print(f"health worker {worker.owner} leasing probes; Ctrl-C stops", flush=True)
        try:
            await worker.run(stop)
        finally:
            if sampler is not None:
                sampler.close()
            if metrics_server is not None:
                metrics_server.shutdown()
        print(f"stopped after {worker.probed} probes", flush=True)
    return 0


def _discover_password(args: argparse.Namespace) -> tuple[bool, str | None]:
    """(ok, ONVIF password) from --password-env or a prompt; not ok (after saying why) if the
    named variable is unset. Never from argv, where `ps` and shell history would show it."""
    import getpass
    import os

    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            print(
                f"camreg discover: --password-env {args.password_env}: that environment "
                "variable is not set; export it first",
                file=sys.stderr,
            )
            return False, None
        return True, value
    if args.user and sys.stdin.isatty():
        return True, getpass.getpass(f"ONVIF password for {args.user}: ")
    return True, None


async def _discover(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.progress import Progress as Bar

    from camera_registry.store.inbox import Inbox
    from ingest.errors import IngestError
    from ingest.onvif.discover import Progress, count_hosts, device_order, discover
    from ingest.onvif.wsdiscovery import Found, interface_address, ipv4_interfaces

    # Everything the arguments can get wrong is refused before anything is printed or sent.
    try:
        count_hosts(args.cidr)
    except IngestError as exc:
        print(f"camreg discover: {exc}", file=sys.stderr)
        return 2
    try:
        ports = [int(p) for p in args.ports.split(",")] if args.ports else []
    except ValueError:
        print(
            f"camreg discover: --ports {args.ports}: use port numbers like 80,8000", file=sys.stderr
        )
        return 2
    if args.no_multicast:
        named: list[tuple[str, str]] = []
    elif args.interface:
        try:
            named = [interface_address(i) for i in args.interface]
        except ValueError as exc:
            print(f"camreg discover: --interface: {exc}", file=sys.stderr)
            return 2
    else:
        named = ipv4_interfaces()
    interfaces = [ip for _, ip in named]
    settings = _settings(args)
    ok, password = _discover_password(args)
    if not ok:
        return 2
    console = Console(stderr=True, quiet=args.json)
    count = 0

    def found(f: Found) -> None:
        nonlocal count
        count += 1
        console.print(f"found {count}: {f.address} {f.hardware or ''} {f.name or ''}".rstrip())

    if not interfaces and not args.cidr:
        print(
            "camreg discover: nothing to probe; give --cidr RANGE (or --interface IP "
            "without --no-multicast)",
            file=sys.stderr,
        )
        return 2
    where = []
    if named:
        shown = ", ".join(ip if name == ip else f"{name} ({ip})" for name, ip in named)
        where.append(f"multicast on {shown}")
    if args.cidr:
        where.append(f"unicast to {', '.join(args.cidr)} ({count_hosts(args.cidr):,} addresses)")
    console.print(f"probing by {' and '.join(where)} …")
    done: list[dict[str, Any]] = []
    interrupted = False
    malformed = 0
    state = Progress()
    bar = Bar(console=console, transient=True, disable=args.json)
    task = bar.add_task("probing", total=None)

    async def refresh() -> None:
        """The progress bar: addresses probed, devices found and interrogated, live."""
        while True:
            bar.update(
                task,
                completed=state.probed,
                total=state.addresses or None,
                description=f"found {state.found}, interrogated {state.interrogated}",
            )
            await asyncio.sleep(0.2)

    refresher = asyncio.create_task(refresh())
    # Ctrl-C (and SIGTERM) stop the sweep and keep what was found, however the process was
    # started: a shell that runs a command in the background starts it with SIGINT ignored,
    # and asyncio.run only handles SIGINT where Python's default handler is installed.
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(
        discover(
            interfaces=interfaces,
            cidrs=args.cidr,
            ports=ports,
            username=args.user,
            password=password or None,
            discovery_port=args.discovery_port,
            timeout=args.timeout,
            rate=args.rate,
            concurrency=args.concurrency,
            on_found=found,
            on_device=done.append,
            progress=state,
        )
    )
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for sig in stop_signals:
        loop.add_signal_handler(sig, work.cancel)
    try:
        bar.start()
        report = await work
        malformed = report.malformed
    except IngestError as exc:
        print(f"camreg discover: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:  # Ctrl-C: keep what was found
        interrupted = True
    finally:
        for sig in stop_signals:
            loop.remove_signal_handler(sig)
        refresher.cancel()
        bar.stop()
    devices = sorted(done, key=device_order)
    async with open_database(settings, pool_max=2) as db:
        await Inbox(db.pool, db.box).upsert(Actor.cli("discover"), devices)
    for d in devices:
        streams = [p["rtsp_uri"] for p in d["profiles"] if p.get("rtsp_uri")]
        keys = (
            "address",
            "port",
            "endpoint",
            "vendor",
            "model",
            "serial",
            "mac",
            "failure",
            "geo_lon",
            "geo_lat",
            "geo_elevation",
            "geo_flag",
        )
        row = {k: d[k] for k in keys} | {"streams": streams}
        if args.json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        else:
            outcome = d["failure"] or "ok"
            print(
                f"{d['address']}:{d['port']}  {outcome:<14} {d['vendor'] or '?'} "
                f"{d['model'] or ''}  {streams[0] if streams else ''}"
            )
    console.print(
        f"{len(devices)} devices in the discovery inbox "
        f"({malformed} malformed answers ignored)"
        + (" — interrupted; what was found is kept" if interrupted else "")
    )
    return 130 if interrupted else 0


async def _geodata(args: argparse.Namespace) -> int:
    return await run_geodata(args, _settings(args))


async def _coverage(args: argparse.Namespace) -> int:
    return await run_coverage(args, _settings(args))


async def _export(args: argparse.Namespace) -> int:
    return await run_export(args, _settings(args))


async def _gb28181(args: argparse.Namespace) -> int:
    return await run_gb28181(args, _settings(args))


COMMANDS = {
    "coverage": _coverage,
    "gb28181": _gb28181,
    "export": _export,
    "geodata": _geodata,
    "discover": _discover,
    "worker": _worker,
    "serve": _serve,
    "import": _import,
    "token": _token,
    "migrate": _migrate,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return asyncio.run(COMMANDS[args.cmd](args))
    except RegistryError as exc:
        print(f"camreg {args.cmd}: {exc.detail}", file=sys.stderr)
        for e in exc.errors:
            print(f"  {e.field}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
