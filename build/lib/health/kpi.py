"""KPI arithmetic per region prefix and level (DESIGN.md §2 "Health and KPIs").

What counts where — the one decision every number below depends on:

- **在线率 (online rate)** = (online + degraded) / registered. A degraded camera answers and
  delivers frames; its fault is about the picture, not about being on line. Counting it
  offline would make 在线率 and 完好率 measure the same thing.
- **完好率 (intact rate)** = online / registered: on line *without* a quality fault, which is
  exactly DESIGN's "online without a quality fault".
- **联网率 (networked rate)** = networked / registered, where `networked` (has a working stream)
  is supplied by the caller per camera; it is not derived from the status here.
- **flapping** and **unknown** cameras count in neither numerator. A flapping camera cannot
  be relied on for the picture a command centre asks for; an unknown one has not been shown
  to work. Both stay in the denominator: a registered camera nobody checked is not a success.

Every rate is None when nothing is registered in the group: 0/0 is "no data", not 0 % or
100 %, and a dashboard must be able to tell the two apart.

Grouping is vectorised (np.unique with return_inverse + np.bincount) because a province has
hundreds of thousands of cameras and the KPI endpoint recomputes on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from health.errors import InvalidKpiInput
from health.status import STATUSES

__all__ = [
    "INTACT_TARGETS",
    "INTACT_TARGET_KEY_INDUSTRY",
    "INTACT_TARGET_KEY_PUBLIC",
    "KpiRow",
    "PeriodKpiRow",
    "PeriodTotals",
    "kpis",
    "meets_intact_target",
    "meets_target",
    "period_kpis",
    "period_rates",
]

# National 完好率 targets: key public-security points (GB/T 28181 PointType 1 一类) and key
# industries and sites (PointType 2 二类). Other levels have no national target.
INTACT_TARGET_KEY_PUBLIC: Final = 0.98
INTACT_TARGET_KEY_INDUSTRY: Final = 0.95
INTACT_TARGETS: Final[dict[int, float]] = {
    1: INTACT_TARGET_KEY_PUBLIC,
    2: INTACT_TARGET_KEY_INDUSTRY,
}

# Relative slack allowed when online seconds exceed the period: availability sums are floats.
_SECONDS_SLACK: Final = 1e-9


def _rate(numerator: float, registered: int) -> float | None:
    return numerator / registered if registered else None


@dataclass(slots=True)
class KpiRow:
    """Counts of one group (region prefix, optionally one level) at one moment."""

    region: str
    level: int | None
    registered: int
    online: int
    degraded: int
    offline: int
    unknown: int
    flapping: int
    networked: int

    @property
    def online_rate(self) -> float | None:
        """在线率: degraded cameras are on line (see module docstring)."""
        return _rate(self.online + self.degraded, self.registered)

    @property
    def intact_rate(self) -> float | None:
        """完好率: on line and no quality fault."""
        return _rate(self.online, self.registered)

    @property
    def networked_rate(self) -> float | None:
        """联网率: has a working stream, as judged by the caller."""
        return _rate(self.networked, self.registered)


@dataclass(frozen=True, slots=True)
class PeriodKpiRow:
    """Rates of one group over a period, from seconds rather than a snapshot."""

    region: str
    level: int | None
    registered: int
    online_rate: float | None
    intact_rate: float | None


@dataclass(frozen=True, slots=True)
class PeriodTotals:
    """Camera-seconds of one group over a date range, summed by PostgreSQL (health/store.py).

    `camera_seconds` is the denominator: for every camera, the seconds of the period during
    which it was registered (a camera registered on the 20th is not counted offline for the
    1st to the 19th), up to now when the period reaches into the future. The status seconds
    are the closed daily availability rows plus each camera's open interval (its current status
    since its last transition), so a camera that never changed is counted for every second.
    `networked` counts cameras that had a working stream at some moment of the period (some
    seconds online, degraded or flapping: a flapping camera's probes do succeed part of the
    time).
    """

    region: str
    level: int | None
    registered: int
    camera_seconds: float
    online_seconds: float
    degraded_seconds: float
    flapping_seconds: float
    offline_seconds: float
    networked: int

    def kpi(self) -> PeriodKpiRow:
        """在线率 = (online + degraded) s / camera s; 完好率 = online s / camera s, as the snapshot
        rates are defined (module docstring): flapping seconds count in neither numerator."""
        return PeriodKpiRow(
            region=self.region,
            level=self.level,
            registered=self.registered,
            online_rate=_share(self.online_seconds + self.degraded_seconds, self.camera_seconds),
            intact_rate=_share(self.online_seconds, self.camera_seconds),
        )

    @property
    def networked_rate(self) -> float | None:
        """联网率 over the period: cameras with a working stream at some moment / registered."""
        return _rate(self.networked, self.registered)

    @property
    def flapping_share(self) -> float | None:
        """Share of camera-seconds spent flapping: shown apart, since it is neither up nor down."""
        return _share(self.flapping_seconds, self.camera_seconds)


def _share(seconds: float, total: float) -> float | None:
    # Capped at 1: float sums of day rows may overshoot the exact total by a few ulps.
    return min(1.0, seconds / total) if total > 0 else None


def meets_intact_target(level: int | None, intact_rate: float | None) -> bool | None:
    """Whether a 完好率 reaches the national target of `level`; None when there is none."""
    if level is None or level not in INTACT_TARGETS or intact_rate is None:
        return None
    return intact_rate >= INTACT_TARGETS[level]


def meets_target(row: KpiRow) -> bool | None:
    """Whether a per-level row reaches its national 完好率 target.

    None when the question has no answer: rows not split by level, levels without a national
    target (3, 9), or groups with nothing registered.
    """
    return meets_intact_target(row.level, row.intact_rate)


def _groups(
    region_codes: ArrayLike, levels: ArrayLike, prefix_len: int, by_level: bool
) -> tuple[NDArray[np.str_], NDArray[np.int64] | None, NDArray[np.intp], int]:
    """Group keys (sorted by region, then level) and each camera's group index."""
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, int) or prefix_len < 0:
        raise InvalidKpiInput(f"prefix_len must be an integer ≥ 0, got {prefix_len!r}")
    codes = np.asarray(region_codes, dtype=np.str_).reshape(-1)
    lv = np.asarray(levels).reshape(-1)
    if codes.shape != lv.shape:
        raise InvalidKpiInput(f"{codes.size} region codes but {lv.size} levels")
    if lv.size and not np.issubdtype(lv.dtype, np.integer):
        raise InvalidKpiInput(f"levels must be integers, got dtype {lv.dtype}")
    lv = lv.astype(np.int64)
    if codes.size and prefix_len:
        short = np.char.str_len(codes) < prefix_len
        if short.any():
            bad = codes[short][0]
            raise InvalidKpiInput(f"region code {bad!r} is shorter than prefix_len={prefix_len}")
    # Casting to a narrower unicode dtype truncates every string at once.
    prefixes = codes.astype(f"<U{prefix_len}") if prefix_len else np.full(codes.shape, "")
    regions, region_inv = np.unique(prefixes, return_inverse=True)
    region_inv = region_inv.reshape(-1)
    if not by_level:
        return regions, None, region_inv, regions.size
    level_values, level_inv = np.unique(lv, return_inverse=True)
    composite = region_inv.astype(np.int64) * max(level_values.size, 1) + level_inv.reshape(-1)
    keys, group_inv = np.unique(composite, return_inverse=True)
    n_levels = max(level_values.size, 1)
    return (
        regions[keys // n_levels],
        level_values[keys % n_levels],
        group_inv.reshape(-1),
        keys.size,
    )


def kpis(
    region_codes: ArrayLike,
    levels: ArrayLike,
    statuses: ArrayLike,
    networked: ArrayLike,
    *,
    prefix_len: int,
    by_level: bool,
) -> list[KpiRow]:
    """One `KpiRow` per region prefix (and level when `by_level`), sorted by region then level.

    Inputs are one entry per registered camera. `prefix_len` cuts the 6-digit region code:
    2 province, 4 city, 6 district; 0 gives a single national row with region "".
    """
    st = np.asarray(statuses, dtype=np.str_).reshape(-1)
    net = np.asarray(networked).reshape(-1)
    regions, lvls, inv, n_groups = _groups(region_codes, levels, prefix_len, by_level)
    if st.shape != inv.shape or net.shape != inv.shape:
        raise InvalidKpiInput(
            f"{inv.size} cameras but {st.size} statuses and {net.size} networked flags"
        )
    if net.size and net.dtype != np.bool_:
        raise InvalidKpiInput(f"networked must be booleans, got dtype {net.dtype}")
    vocabulary = np.array(STATUSES, dtype=np.str_)
    order = np.argsort(vocabulary)
    pos = np.searchsorted(vocabulary[order], st)
    pos = np.minimum(pos, vocabulary.size - 1)
    status_idx = order[pos]
    invalid = vocabulary[status_idx] != st
    if invalid.any():
        raise InvalidKpiInput(f"unknown camera status {st[invalid][0]!r}; expected {STATUSES}")
    n_status = vocabulary.size
    counts = np.bincount(inv * n_status + status_idx, minlength=n_groups * n_status).reshape(
        n_groups, n_status
    )
    registered = np.bincount(inv, minlength=n_groups)
    net_counts = np.bincount(inv[net.astype(bool)], minlength=n_groups)
    col = {name: i for i, name in enumerate(STATUSES)}
    rows: list[KpiRow] = []
    for g in range(n_groups):
        rows.append(
            KpiRow(
                region=str(regions[g]),
                level=None if lvls is None else int(lvls[g]),
                registered=int(registered[g]),
                online=int(counts[g, col["online"]]),
                degraded=int(counts[g, col["degraded"]]),
                offline=int(counts[g, col["offline"]]),
                unknown=int(counts[g, col["unknown"]]),
                flapping=int(counts[g, col["flapping"]]),
                networked=int(net_counts[g]),
            )
        )
    return rows


def _check_seconds(seconds: NDArray[Any], period_seconds: float, what: str) -> None:
    if not np.isfinite(seconds).all() or (seconds < 0).any():
        raise InvalidKpiInput(f"{what} must be finite and ≥ 0")
    if (seconds > period_seconds * (1 + _SECONDS_SLACK)).any():
        raise InvalidKpiInput(f"{what} exceed the period of {period_seconds} s")


def _check_period(period_seconds: float) -> None:
    if not np.isfinite(period_seconds) or period_seconds <= 0:
        raise InvalidKpiInput(f"period_seconds must be finite and > 0, got {period_seconds!r}")


def period_rates(online_seconds: ArrayLike, period_seconds: float) -> float | None:
    """在线率 over a period: Σ online seconds / (registered × period).

    One entry per registered camera, zero for a camera never on line, so that the denominator
    is the registry and not only the cameras that showed up. None when nothing is registered.
    Feed it online + degraded seconds for 在线率, online seconds alone for 完好率 (the split of
    `availability_seconds`).
    """
    _check_period(period_seconds)
    seconds = np.asarray(online_seconds, dtype=np.float64).reshape(-1)
    _check_seconds(seconds, period_seconds, "online seconds")
    if seconds.size == 0:
        return None
    return float(seconds.sum() / (seconds.size * period_seconds))


def period_kpis(
    region_codes: ArrayLike,
    levels: ArrayLike,
    online_seconds: ArrayLike,
    intact_seconds: ArrayLike,
    period_seconds: float,
    *,
    prefix_len: int,
    by_level: bool,
) -> list[PeriodKpiRow]:
    """`period_rates` per group: 在线率 from `online_seconds` (online + degraded) and 完好率 from
    `intact_seconds` (online only), one entry per registered camera, sorted like `kpis`."""
    _check_period(period_seconds)
    on = np.asarray(online_seconds, dtype=np.float64).reshape(-1)
    intact = np.asarray(intact_seconds, dtype=np.float64).reshape(-1)
    regions, lvls, inv, n_groups = _groups(region_codes, levels, prefix_len, by_level)
    if on.shape != inv.shape or intact.shape != inv.shape:
        raise InvalidKpiInput(
            f"{inv.size} cameras but {on.size} online and {intact.size} intact second counts"
        )
    _check_seconds(on, period_seconds, "online seconds")
    _check_seconds(intact, period_seconds, "intact seconds")
    if (intact > on * (1 + _SECONDS_SLACK)).any():
        raise InvalidKpiInput("intact seconds exceed online seconds (intact implies on line)")
    registered = np.bincount(inv, minlength=n_groups)
    on_sum = np.bincount(inv, weights=on, minlength=n_groups)
    intact_sum = np.bincount(inv, weights=intact, minlength=n_groups)
    return [
        PeriodKpiRow(
            region=str(regions[g]),
            level=None if lvls is None else int(lvls[g]),
            registered=int(registered[g]),
            online_rate=_rate(float(on_sum[g]) / period_seconds, int(registered[g])),
            intact_rate=_rate(float(intact_sum[g]) / period_seconds, int(registered[g])),
        )
        for g in range(n_groups)
    ]
