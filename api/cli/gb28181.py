"""`camreg gb28181 status`: where the GB/T 28181 SIP server listens, who it is, how many
devices are registered and online, and its protocol counters — what
`GET /api/v1/gb28181/server` shows, from where technicians work.

The counters live in the running `camreg serve` (they are the SIP server's own), so the
command asks it over HTTP; when no server answers it says so and still shows the
configuration and the devices the database holds. Every failure is one line naming what to
do: a bad config names the key, an unreachable database or server names the setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  camreg gb28181 status
  camreg gb28181 status --url http://10.1.2.3:8080 --token-env CAMREG_TOKEN
  camreg gb28181 status --json"""


def add_gb28181_parser(sub: Any) -> None:
    g = sub.add_parser("gb28181", help="GB/T 28181 device access (SIP server)")
    gsub = g.add_subparsers(dest="action", required=True)
    s = gsub.add_parser(
        "status",
        help="where SIP listens, our ID and domain, devices registered/online, counters",
        description="Show the GB/T 28181 SIP server of `camreg serve`: UDP/TCP host:port, "
        "server ID, domain, devices registered and online, and its counters (the same as "
        "GET /api/v1/gb28181/server).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--url", help="the running server (default: http://<http_host>:<http_port> of the config)"
    )
    s.add_argument(
        "--token-env",
        help="environment variable holding an API token (default: the admin token file "
        "<data_dir>/admin.token that `camreg serve` writes)",
    )
    s.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _token(args: argparse.Namespace, data_dir: Path) -> tuple[str | None, str | None]:
    """(token, problem): a named variable must be set; the token file may be absent."""
    if args.token_env:
        value = os.environ.get(args.token_env)
        if not value:
            return None, f"--token-env {args.token_env}: that environment variable is not set"
        return value.strip(), None
    path = data_dir / "admin.token"
    try:
        return path.read_text(encoding="utf-8").strip() or None, None
    except OSError:
        return None, None


async def _from_server(url: str, token: str | None, wait_s: float) -> tuple[Any, str | None]:
    """(the server's answer, None) or (None, why it could not be asked)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait_s)) as http,
            http.get(f"{url}/api/v1/gb28181/server", headers=headers) as resp,
        ):
            if resp.status == 401:
                return None, (
                    f"{url} refused the token (401): give a valid one with --token-env, "
                    "or run this where `camreg serve` wrote its admin.token"
                )
            if resp.status != 200:
                return None, f"{url} answered HTTP {resp.status}"
            return await resp.json(), None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return None, (
            f"no `camreg serve` answers at {url} ({type(exc).__name__}); start it, or give "
            "--url; live counters are kept by the running server"
        )


async def _from_database(settings: Any) -> dict[str, int]:
    from camera_registry.store.gb28181 import GbDevices
    from camera_registry.store.runtime import open_database

    async with open_database(settings, pool_max=1) as db:
        return await GbDevices.counts(db.pool)


def _print(out: dict[str, Any]) -> None:
    where = out.get("listening")
    print(f"GB/T 28181 SIP server: {'enabled' if out['enabled'] else 'disabled'}")
    print(f"  server ID   {out['server_id']}   domain {out['domain']}")
    print(f"  regions     {', '.join(out['accepted_regions'])}")
    if where:
        print(f"  listening   UDP {where}, TCP {where}")
    else:
        print(f"  configured  UDP {out['configured']}, TCP {out['configured']} (not running)")
    devices = out.get("devices") or {}
    if devices:
        print(
            f"  devices     {devices.get('registered', 0)} registered, "
            f"{devices.get('online', 0)} online ({devices.get('source')})"
        )
    stats = out.get("stats")
    if not stats:
        return
    print("  counters (since the server started):")
    for key, value in stats.items():
        if key.startswith("devices_"):
            continue
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
            print(f"    {key:<20} {shown}")
        else:
            print(f"    {key:<20} {value}")


async def run_gb28181(args: argparse.Namespace, settings: Any) -> int:
    import asyncpg

    gb = settings.gb28181
    host = gb.sip_host or settings.http_host
    out: dict[str, Any] = {
        "enabled": gb.enabled,
        "server_id": gb.server_id,
        "domain": gb.sip_domain,
        "accepted_regions": list(gb.accepted_regions),
        "configured": f"{host}:{gb.sip_port}",
    }
    token, problem = _token(args, settings.data_dir)
    if problem is not None:
        print(f"camreg gb28181 status: {problem}", file=sys.stderr)
        return 2
    http_host = settings.http_host if ":" not in settings.http_host else f"[{settings.http_host}]"
    url = (args.url or f"http://{http_host}:{settings.http_port}").rstrip("/")
    live, why = await _from_server(url, token, args.timeout)
    if live is not None and live.get("port") is not None:
        out["listening"] = f"{live['host']}:{live['port']}"
        stats = live.get("stats") or {}
        out["devices"] = {
            "registered": stats.get("devices_registered", 0),
            "online": stats.get("devices_online", 0),
            "source": f"live, from {url}",
        }
        out["stats"] = stats
    else:
        if live is not None:
            why = f"{url} runs without its SIP server ([gb28181] enabled = false?)"
        print(f"camreg gb28181 status: {why}", file=sys.stderr)
        try:
            counts = await _from_database(settings)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            print(
                f"camreg gb28181 status: cannot read the database ({type(exc).__name__}: "
                f"{str(exc)[:200]}); check database_url / CAMREG_DATABASE_URL, or that "
                "PostgreSQL is running",
                file=sys.stderr,
            )
            return 2
        out["devices"] = {**counts, "source": "database: registrations not yet expired"}
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        _print(out)
    return 0
