"""Stream health over HTTP: one camera's status and history, probe-now, and KPIs."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping

from aiohttp import web

from api import params
from api.auth import READERS
from api.cameras import ID
from api.responses import json_response
from api.routes import DATE, FLAG, LEVELS, REGION_PREFIX, Param, RouteTable, caller
from api.state import POOL, REGISTRY, WORKER
from camera_registry.actor import Role
from camera_registry.errors import BadRequest, FieldError, NotFound
from camera_registry.store.cameras import effective_prefix, level_filter, region_range
from health import store
from health.kpi import meets_intact_target, meets_target

ROUTES = RouteTable()

PROBERS = (Role.TECHNICIAN, Role.COMMANDER, Role.ADMIN)
# A year and a day: a leap year's report fits, while a decade-long scan of the daily rows of a
# province (2.4 million cameras) cannot be asked for by accident.
MAX_SPAN_DAYS = 366
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DATE_PARAMS = (
    Param(
        "from",
        "query",
        "first local day (Asia/Shanghai), YYYY-MM-DD",
        DATE,
    ),
    Param("to", "query", "last local day, inclusive, YYYY-MM-DD", DATE),
)


def _date_range(q: Mapping[str, str]) -> tuple[dt.date, dt.date] | None:
    """`from`/`to` as dates, both or neither; None when neither is given."""
    raw = {name: q.get(name) or None for name in ("from", "to")}
    if raw["from"] is None and raw["to"] is None:
        return None
    errors = []
    parsed: dict[str, dt.date] = {}
    for name, value in raw.items():
        other = "to" if name == "from" else "from"
        if value is None:
            errors.append(FieldError(name, f"give {name!r} too when {other!r} is given"))
            continue
        try:
            # fromisoformat alone also takes 20261101 and week dates; a report wants days.
            if not _DAY.fullmatch(value):
                raise ValueError(value)
            parsed[name] = dt.date.fromisoformat(value)
        except ValueError:
            errors.append(FieldError(name, "use a date YYYY-MM-DD, e.g. 2026-11-01"))
    if errors:
        raise BadRequest("bad date range", errors)
    first, last = parsed["from"], parsed["to"]
    if last < first:
        raise BadRequest("bad date range", [FieldError("to", "must not be before 'from'")])
    if (last - first).days + 1 > MAX_SPAN_DAYS:
        raise BadRequest(
            "bad date range",
            [FieldError("to", f"a range covers at most {MAX_SPAN_DAYS} days; split it")],
        )
    return first, last


@ROUTES.route(
    "GET",
    "/api/v1/cameras/{id}/health",
    "Status, since, last probe (timings, failure), transition history",
    READERS,
    params=(ID,),
    responses={200: "health"},
    tag="health",
)
async def camera_health(request: web.Request) -> web.Response:
    actor = caller(request)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])  # scope check
    health = await store.camera_health(request.app[POOL], uuid.UUID(cam["id"]))
    if health is None:
        raise NotFound("this camera has not been scheduled for probing yet")
    return json_response({"camera_id": cam["id"], **health})


@ROUTES.route(
    "GET",
    "/api/v1/cameras/{id}/snapshot",
    "The last thumbnail from frame diagnosis (JPEG)",
    READERS,
    params=(ID,),
    responses={200: "image/jpeg", 404: "no snapshot yet"},
    tag="health",
)
async def snapshot(request: web.Request) -> web.Response:
    actor = caller(request)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])
    jpeg = await store.thumbnail(request.app[POOL], uuid.UUID(cam["id"]))
    if jpeg is None:
        raise NotFound("no snapshot yet: one is kept at the camera's next frame diagnosis")
    return web.Response(
        body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"}
    )


@ROUTES.route(
    "POST",
    "/api/v1/cameras/{id}/probe",
    "Probe a camera now and return the result",
    PROBERS,
    params=(ID,),
    responses={200: "the probe and the new status"},
    tag="health",
)
async def probe_now(request: web.Request) -> web.Response:
    actor = caller(request)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])
    result = await request.app[WORKER].probe_now(uuid.UUID(cam["id"]))
    return json_response(result)


@ROUTES.route(
    "POST",
    "/api/v1/cameras/{id}/diagnose",
    "视频质量诊断 now: probe, sample frames, diagnose; report and thumbnail",
    PROBERS,
    params=(
        ID,
        Param(
            "accept_reference",
            "query",
            "1 to keep this picture as the scene reference "
            "(场景变更 / 遮挡 / 偏色 are judged against it)",
        ),
    ),
    responses={200: "the diagnosis report, a thumbnail (data URL) and the new status"},
    tag="health",
)
async def diagnose_now(request: web.Request) -> web.Response:
    """For a technician on the ladder: the answer within the sample window plus a few seconds,
    through the same capture processes and per-host limits as the schedule."""
    actor = caller(request)
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])  # scope check
    raw = request.query.get("accept_reference", "0")
    if raw not in ("0", "1", "true", "false"):
        raise BadRequest(
            "bad accept_reference", [FieldError("accept_reference", "use 1 or 0 (true/false)")]
        )
    result = await request.app[WORKER].diagnose_now(
        uuid.UUID(cam["id"]), accept_reference=raw in ("1", "true")
    )
    return json_response(result)


@ROUTES.route(
    "GET",
    "/api/v1/kpis",
    "在线率 / 完好率 / 联网率 by region prefix (and level)",
    READERS,
    params=(
        Param(
            "region", "query", "region-code prefix, e.g. 14 or 1401 (default: scope)", REGION_PREFIX
        ),
        Param(
            "group",
            "query",
            "digits of the region code to group by (2, 4 or 6)",
            {"type": "integer", "enum": [2, 4, 6]},
        ),
        Param("by_level", "query", "1 to split each region by level", FLAG),
        Param("level", "query", "only these levels, e.g. 1 or 1,2", LEVELS),
        *DATE_PARAMS,
    ),
    responses={200: "KPI rows: now, or over the date range from..to"},
    tag="health",
)
async def kpis(request: web.Request) -> web.Response:
    """Without `from`/`to`: the snapshot now (counts per status). With them: rates over those
    local days from availability seconds (health.kpi.PeriodTotals): 在线率 = (online + degraded)
    camera-seconds / camera-seconds registered in the period, up to now; 完好率 the same with
    online seconds only; `flapping` is counted apart and is not on line in either form."""
    actor = caller(request)
    q = request.query
    region = q.get("region") or None
    if region is not None and (not region.isdigit() or not 2 <= len(region) <= 6):
        raise BadRequest("bad region", [FieldError("region", "use 2-6 digits, e.g. 1401")])
    levels = level_filter(q["level"].split(",")) if q.get("level") else ()
    period = _date_range(q)
    prefix = effective_prefix(actor, region)
    if prefix == "":
        return json_response({"items": []})
    group = params.integer(q, "group", len(prefix) if prefix else 2, 2, 6)
    by_level = q.get("by_level", "0") in ("1", "true", "yes")
    low, high = region_range(prefix) if prefix else ("0", ":")
    if period is not None:
        return await _period_kpis(request, low, high, period, group, by_level, levels)
    rows = await store.kpi_rows(
        request.app[POOL], low, high, prefix_len=group, by_level=by_level, levels=levels
    )
    items = [
        {
            "region": r.region,
            "level": r.level,
            "registered": r.registered,
            "online": r.online,
            "degraded": r.degraded,
            "offline": r.offline,
            "unknown": r.unknown,
            "flapping": r.flapping,
            "networked": r.networked,
            "online_rate": r.online_rate,
            "intact_rate": r.intact_rate,
            "networked_rate": r.networked_rate,
            "meets_target": meets_target(r),
        }
        for r in rows
    ]
    return json_response({"items": items})


async def _period_kpis(
    request: web.Request,
    low: str,
    high: str,
    period: tuple[dt.date, dt.date],
    group: int,
    by_level: bool,
    levels: tuple[int, ...],
) -> web.Response:
    first, last = period
    start, end, totals = await store.period_totals(
        request.app[POOL],
        low,
        high,
        first,
        last,
        prefix_len=group,
        by_level=by_level,
        levels=levels,
    )
    items = []
    for t in totals:
        row = t.kpi()
        items.append(
            {
                "region": t.region,
                "level": t.level,
                "registered": t.registered,
                "camera_seconds": t.camera_seconds,
                "online_seconds": t.online_seconds,
                "degraded_seconds": t.degraded_seconds,
                "flapping_seconds": t.flapping_seconds,
                "offline_seconds": t.offline_seconds,
                "networked": t.networked,
                "online_rate": row.online_rate,
                "intact_rate": row.intact_rate,
                "networked_rate": t.networked_rate,
                "flapping_share": t.flapping_share,
                "meets_target": meets_intact_target(t.level, row.intact_rate),
            }
        )
    return json_response(
        {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "timezone": store.DAY_TZ,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "items": items,
        }
    )


@ROUTES.route(
    "GET",
    "/api/v1/cameras/{id}/availability",
    "Seconds per status and 在线率 share for each local day from..to",
    READERS,
    params=(ID, *(Param(p.name, p.where, p.description, p.schema, True) for p in DATE_PARAMS)),
    responses={200: "daily rows"},
    tag="health",
)
async def availability(request: web.Request) -> web.Response:
    actor = caller(request)
    period = _date_range(request.query)
    if period is None:
        raise BadRequest(
            "bad date range",
            [FieldError("from", "give from and to, e.g. from=2026-11-01&to=2026-11-27")],
        )
    cam = await request.app[REGISTRY].get(actor, request.match_info["id"])  # scope check
    days = await store.daily_availability(request.app[POOL], uuid.UUID(cam["id"]), *period)
    return json_response(
        {
            "camera_id": cam["id"],
            "from": period[0].isoformat(),
            "to": period[1].isoformat(),
            "timezone": store.DAY_TZ,
            "days": days,
        }
    )
