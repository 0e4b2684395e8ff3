"""Is a camera where its region code says? A warning, not an error, and only where boundaries are
loaded.

A point can be valid on its own (inside China, not swapped) and still be far from the county its
行政区划 names: a technician copied the coordinates of another site, or typed a neighbour
county's code. Neither can be refused (boundaries may be missing, simplified or synthetic, and
cameras do stand on county lines), but a point kilometres outside its county is worth a word in
the import report and the API answer. Without loaded county boundaries nothing is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np
import shapely

from camera_registry.errors import FieldError
from geo.crs import haversine_m

# Beyond this a point is not "on the county line": simplified or synthetic boundaries and
# cameras across a border street stay well within it.
FAR_M = 5_000.0


@dataclass(frozen=True, slots=True)
class _County:
    name: str
    shape: shapely.Geometry


class CountyCheck:
    """Checks points against their county boundary; boundaries are read once per check object
    (one per import), so a ledger of many chunks asks the database once per county."""

    def __init__(self, conn: asyncpg.Pool | asyncpg.Connection, far_m: float = FAR_M) -> None:
        self.conn = conn
        self.far_m = far_m
        self._counties: dict[str, _County | None] = {}

    async def _load(self, codes: set[str]) -> None:
        missing = sorted(c for c in codes if c not in self._counties)
        if not missing:
            return
        rows = await self.conn.fetch(
            """SELECT adcode, name, boundary FROM geo_regions
               WHERE rank = 'county' AND adcode = ANY($1::text[])""",
            missing,
        )
        for code in missing:
            self._counties[code] = None
        for r in rows:
            shape = shapely.from_wkb(r["boundary"])
            shapely.prepare(shape)
            self._counties[r["adcode"]] = _County(r["name"], shape)

    async def outside(
        self,
        region_codes: Sequence[str | None],
        lons: Sequence[float | None],
        lats: Sequence[float | None],
        rows: Sequence[int] | None = None,
    ) -> list[FieldError]:
        """A warning for each point farther than `far_m` outside its county's boundary."""
        by_code: dict[str, list[int]] = {}
        for i, (code, lon, lat) in enumerate(zip(region_codes, lons, lats, strict=True)):
            if code is not None and lon is not None and lat is not None:
                by_code.setdefault(code, []).append(i)
        if not by_code:
            return []
        await self._load(set(by_code))
        found: list[tuple[int, FieldError]] = []
        for code, idx in by_code.items():
            county = self._counties.get(code)
            if county is None:
                continue
            xs = np.array([lons[i] for i in idx], dtype=np.float64)
            ys = np.array([lats[i] for i in idx], dtype=np.float64)
            out = ~shapely.contains_xy(county.shape, xs, ys)
            if not out.any():
                continue
            points = shapely.points(xs[out], ys[out])
            near = shapely.get_coordinates(shapely.shortest_line(county.shape, points))[::2]
            dist = haversine_m(xs[out], ys[out], near[:, 0], near[:, 1])
            for j, d in zip(np.flatnonzero(out).tolist(), dist.tolist(), strict=True):
                if d <= self.far_m:
                    continue
                i = idx[j]
                row = rows[i] if rows is not None else None
                found.append(
                    (
                        i,
                        FieldError(
                            "lon",
                            f"({lons[i]:.5f}, {lats[i]:.5f}) lies {d / 1000:.1f} km outside "
                            f"{county.name} ({code}), the county its 行政区划/region_code names; "
                            "check 经度/纬度 and 坐标系, or the region code",
                            row,
                        ),
                    )
                )
        return [e for _, e in sorted(found, key=lambda t: t[0])]
