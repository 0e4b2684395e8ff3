"""KPI arithmetic on a hand-counted dataset, national targets, period rates, and a comparison
with a plain per-camera loop on random datasets."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from health.errors import HealthError, InvalidKpiInput
from health.kpi import (
    INTACT_TARGET_KEY_INDUSTRY,
    INTACT_TARGET_KEY_PUBLIC,
    KpiRow,
    PeriodKpiRow,
    kpis,
    meets_target,
    period_kpis,
    period_rates,
)
from health.status import STATUSES

# 10 cameras in two districts of 太原 (140105 小店区, 140106 迎泽区), levels 1 and 2.
CAMERAS = [
    # region, level, status, networked
    ("140105", 1, "online", True),
    ("140105", 1, "online", True),
    ("140105", 1, "degraded", True),
    ("140105", 1, "offline", False),
    ("140105", 2, "online", True),
    ("140105", 2, "flapping", False),
    ("140106", 1, "online", True),
    ("140106", 1, "unknown", False),
    ("140106", 2, "degraded", True),
    ("140106", 2, "online", True),
]


def arrays(
    rows: list[tuple[str, int, str, bool]], seed: int | None = None
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    order = np.arange(len(rows))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(rows))
    picked = [rows[i] for i in order]
    return (
        np.array([r[0] for r in picked], dtype=np.str_),
        np.array([r[1] for r in picked], dtype=np.int64),
        np.array([r[2] for r in picked], dtype=np.str_),
        np.array([r[3] for r in picked], dtype=np.bool_),
    )


def test_rows_per_district_match_hand_counts() -> None:
    rows = kpis(*arrays(CAMERAS, seed=7), prefix_len=6, by_level=False)
    assert rows == [
        KpiRow(
            "140105", None, 6, online=3, degraded=1, offline=1, unknown=0, flapping=1, networked=4
        ),
        KpiRow(
            "140106", None, 4, online=2, degraded=1, offline=0, unknown=1, flapping=0, networked=3
        ),
    ]
    a, b = rows
    assert a.online_rate == pytest.approx(4 / 6)  # online + degraded
    assert a.intact_rate == pytest.approx(3 / 6)  # online only
    assert a.networked_rate == pytest.approx(4 / 6)
    assert b.online_rate == 0.75 and b.intact_rate == 0.5 and b.networked_rate == 0.75


def test_city_prefix_sums_the_districts() -> None:
    (row,) = kpis(*arrays(CAMERAS), prefix_len=4, by_level=False)
    assert (row.region, row.registered, row.online, row.degraded) == ("1401", 10, 5, 2)
    assert row.online_rate == 0.7 and row.intact_rate == 0.5 and row.networked_rate == 0.7
    (nation,) = kpis(*arrays(CAMERAS), prefix_len=0, by_level=False)
    assert nation.region == "" and nation.registered == 10


def test_rows_per_district_and_level_sorted() -> None:
    rows = kpis(*arrays(CAMERAS, seed=3), prefix_len=6, by_level=True)
    got = [(r.region, r.level, r.registered, r.online_rate, r.intact_rate) for r in rows]
    assert got == [
        ("140105", 1, 4, 0.75, 0.5),
        ("140105", 2, 2, 0.5, 0.5),  # flapping counts in neither numerator
        ("140106", 1, 2, 0.5, 0.5),  # unknown counts in neither numerator
        ("140106", 2, 2, 1.0, 0.5),
    ]
    assert [meets_target(r) for r in rows] == [False, False, False, False]


def test_input_order_does_not_matter() -> None:
    base = kpis(*arrays(CAMERAS), prefix_len=6, by_level=True)
    for seed in range(5):
        assert kpis(*arrays(CAMERAS, seed=seed), prefix_len=6, by_level=True) == base


def test_national_targets() -> None:
    assert INTACT_TARGET_KEY_PUBLIC == 0.98 and INTACT_TARGET_KEY_INDUSTRY == 0.95

    def row(level: int | None, registered: int, online: int) -> KpiRow:
        return KpiRow("140105", level, registered, online, 0, registered - online, 0, 0, online)

    assert meets_target(row(1, 50, 49)) is True  # exactly 98 %
    assert meets_target(row(1, 50, 48)) is False
    assert meets_target(row(2, 20, 19)) is True  # exactly 95 %
    assert meets_target(row(2, 20, 18)) is False
    assert meets_target(row(3, 20, 0)) is None
    assert meets_target(row(9, 20, 20)) is None
    assert meets_target(row(None, 20, 20)) is None
    empty = row(1, 0, 0)
    assert meets_target(empty) is None
    assert empty.online_rate is None and empty.intact_rate is None and empty.networked_rate is None


def test_degraded_cameras_miss_the_intact_target() -> None:
    n = 100
    regions = np.full(n, "140105")
    levels = np.ones(n, dtype=np.int64)
    statuses = np.array(["online"] * 97 + ["degraded"] * 3)
    (r,) = kpis(regions, levels, statuses, np.ones(n, bool), prefix_len=6, by_level=True)
    assert r.online_rate == 1.0 and r.intact_rate == 0.97
    assert meets_target(r) is False


def test_empty_input_gives_no_rows() -> None:
    empty = np.array([], dtype=np.str_)
    for by_level in (False, True):
        assert (
            kpis(
                empty,
                np.array([], np.int64),
                empty,
                np.array([], bool),
                prefix_len=6,
                by_level=by_level,
            )
            == []
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"statuses": np.array(["online"])}, "statuses"),
        ({"levels": np.array([1])}, "levels"),
        ({"statuses": np.array(["online", "asleep"])}, "asleep"),
        ({"networked": np.array([1, 0])}, "booleans"),
        ({"levels": np.array([1.0, 2.0])}, "integers"),
        ({"region_codes": np.array(["1401", "140105"])}, "shorter"),
        ({"prefix_len": -1}, "prefix_len"),
    ],
)
def test_bad_inputs_are_rejected(change: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "region_codes": np.array(["140105", "140106"]),
        "levels": np.array([1, 2]),
        "statuses": np.array(["online", "offline"]),
        "networked": np.array([True, False]),
        "prefix_len": 6,
        "by_level": True,
    }
    args.update(change)
    with pytest.raises(InvalidKpiInput, match=message) as info:
        kpis(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, HealthError)


# --- period rates ------------------------------------------------------------------------------

DAY = 86400.0


def test_period_rate_is_seconds_over_registered_times_period() -> None:
    assert period_rates([DAY, DAY / 2, 0.0, DAY], DAY) == 0.625
    assert period_rates([], DAY) is None
    with pytest.raises(InvalidKpiInput):
        period_rates([-1.0], DAY)
    with pytest.raises(InvalidKpiInput, match="exceed"):
        period_rates([DAY + 1.0], DAY)
    with pytest.raises(InvalidKpiInput, match="period_seconds"):
        period_rates([0.0], 0.0)


def test_period_kpis_per_district() -> None:
    regions = np.array(["140105", "140105", "140106", "140105"])
    levels = np.array([1, 1, 2, 2])
    online = np.array([DAY, DAY / 2, DAY / 4, 0.0])
    intact = np.array([DAY, DAY / 4, 0.0, 0.0])
    rows = period_kpis(regions, levels, online, intact, DAY, prefix_len=6, by_level=False)
    assert rows == [
        PeriodKpiRow("140105", None, 3, online_rate=0.5, intact_rate=1.25 / 3),
        PeriodKpiRow("140106", None, 1, online_rate=0.25, intact_rate=0.0),
    ]
    rows = period_kpis(regions, levels, online, intact, DAY, prefix_len=6, by_level=True)
    assert [(r.region, r.level, r.online_rate) for r in rows] == [
        ("140105", 1, 0.75),
        ("140105", 2, 0.0),
        ("140106", 2, 0.25),
    ]
    with pytest.raises(InvalidKpiInput, match="intact seconds exceed online"):
        period_kpis(regions, levels, intact, online, DAY, prefix_len=6, by_level=False)


# --- property: vectorised grouping equals a per-camera loop ------------------------------------

cameras = st.lists(
    st.tuples(
        st.sampled_from(["140105", "140106", "140202", "110101", "440305"]),
        st.sampled_from([1, 2, 3, 9]),
        st.sampled_from(STATUSES),
        st.booleans(),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(data=cameras, prefix_len=st.sampled_from([0, 2, 4, 6]), by_level=st.booleans())
def test_grouping_equals_a_plain_loop(
    data: list[tuple[str, int, str, bool]], prefix_len: int, by_level: bool
) -> None:
    rows = kpis(*arrays(data), prefix_len=prefix_len, by_level=by_level)
    expected: dict[tuple[str, int | None], Counter[str]] = {}
    for region, level, status, networked in data:
        key = (region[:prefix_len], level if by_level else None)
        counter = expected.setdefault(key, Counter())
        counter[status] += 1
        counter["registered"] += 1
        counter["networked"] += networked
    assert [(r.region, r.level) for r in rows] == sorted(expected, key=lambda k: (k[0], k[1] or 0))
    for r in rows:
        c = expected[(r.region, r.level)]
        assert (r.registered, r.networked) == (c["registered"], c["networked"])
        assert [getattr(r, s) for s in STATUSES] == [c[s] for s in STATUSES]
        assert sum(getattr(r, s) for s in STATUSES) == r.registered
    assert sum(r.registered for r in rows) == len(data)
