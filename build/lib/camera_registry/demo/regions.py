"""Shanxi's county-level divisions (GB/T 2260), for demo data and for naming region codes.

The table ships as package data (`data/shanxi_regions.csv`): code, name, prefecture city,
urban/rural kind, approximate WGS-84 seat/centroid and area. Coordinates are good to a few km,
which is all the demo generator and map defaults need.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from camera_registry.gbid import PROVINCES

RegionKind = Literal["urban", "rural"]

_CSV = "data/shanxi_regions.csv"


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # 6-digit GB/T 2260 county-level code, e.g. "140105"
    name: str  # e.g. "小店区"
    city: str  # prefecture city, e.g. "太原市"
    kind: RegionKind  # "urban" for 市辖区 (names ending in 区), else "rural"
    lon: float  # WGS-84
    lat: float
    area_km2: float


def _kind(value: str) -> RegionKind:
    if value == "urban":
        return "urban"
    if value == "rural":
        return "rural"
    raise ValueError(f"region kind must be urban or rural, not {value!r}")


@cache
def _regions() -> tuple[Region, ...]:
    text = resources.files("camera_registry").joinpath(_CSV).read_text(encoding="utf-8")
    return tuple(
        Region(
            code=row["code"],
            name=row["name"],
            city=row["city"],
            kind=_kind(row["kind"]),
            lon=float(row["lon"]),
            lat=float(row["lat"]),
            area_km2=float(row["area_km2"]),
        )
        for row in csv.DictReader(io.StringIO(text))
    )


def shanxi_regions() -> list[Region]:
    """Every county-level division of 山西省, in code order (a fresh list; the rows are cached)."""
    return list(_regions())


@cache
def _names() -> dict[str, str]:
    names: dict[str, str] = {}
    for r in _regions():
        names[r.code] = r.name
        names.setdefault(r.code[:4], r.city)
    return names


def region_name(code: str) -> str | None:
    """The name a region code or prefix stands for, or None when unknown.

    Accepts 6-digit county codes ("140105" → 小店区), city prefixes ("1401" or "140100" →
    太原市) and province prefixes ("14" or "140000" → 山西省).
    """
    code = code.strip()
    if len(code) == 6 and code.isdigit():
        if code.endswith("0000"):
            code = code[:2]
        elif code.endswith("00"):
            code = code[:4]
    if len(code) == 2:
        return PROVINCES.get(code)
    return _names().get(code)
