"""Query-string parsing with field-named 400s."""

from __future__ import annotations

from collections.abc import Mapping

from camera_registry.errors import BadRequest, FieldError
from camera_registry.store.cameras import STATUSES, CameraFilter, level_filter


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(f"bad query parameter {field}: {message}", [FieldError(field, message)])


def floats(query: Mapping[str, str], name: str, count: int) -> tuple[float, ...] | None:
    raw = query.get(name)
    if raw is None:
        return None
    parts = raw.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != count or any(v != v for v in values):
        raise _bad(name, f"expected {count} comma-separated numbers")
    return values


def integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, f"expected a whole number {low}–{high}") from None
    if not low <= value <= high:
        raise _bad(name, f"must be {low}–{high}")
    return value


def camera_filter(query: Mapping[str, str]) -> CameraFilter:
    region = query.get("region") or None
    if region is not None and (not region.isdigit() or not 2 <= len(region) <= 6):
        raise _bad("region", "use 2-6 leading digits of a region code, e.g. 14 or 140105")
    levels = level_filter(query["level"].split(",")) if query.get("level") else ()
    statuses: tuple[str, ...] = ()
    if query.get("status"):
        statuses = tuple(query["status"].split(","))
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise _bad("status", f"unknown {unknown}; use {', '.join(STATUSES)}")
    bbox = floats(query, "bbox", 4)
    if bbox is not None:
        x0, y0, x1, y1 = bbox
        if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
            raise _bad("bbox", "use minlon,minlat,maxlon,maxlat with min < max (WGS-84 degrees)")
    q = query.get("q") or None
    if q is not None and len(q) > 100:
        raise _bad("q", "search text is at most 100 characters")
    return CameraFilter(region, levels, statuses, bbox, q)  # type: ignore[arg-type]
