"""Stories for geo.propose: greedy placement of new cameras where they add most."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geo.errors import GeoError
from geo.propose import greedy_sites, incidence


def test_greedy_takes_the_site_covering_most_villages_first_and_skips_covered_ones() -> None:
    # Villages in two clusters: three near (0, 0), two near (1000, 0), one already covered.
    dx = np.array([0.0, 50.0, -50.0, 1000.0, 1050.0, 2000.0])
    dy = np.zeros(6)
    already = np.array([False, False, False, False, False, True])
    cand_x = np.array([1000.0, 0.0, 2000.0, 25.0])
    cand_y = np.zeros(4)
    picks = greedy_sites(cand_x, cand_y, dx, dy, None, already, radius_m=150.0, k=3)
    assert [p.index for p in picks] == [1, 0]  # site 2 adds nothing; site 3 ties later
    assert picks[0].newly_covered.tolist() == [0, 1, 2]
    assert picks[0].gain_weight == 3.0
    assert picks[1].newly_covered.tolist() == [3, 4]
    assert picks[-1].covered_share_after == pytest.approx(1.0)
    assert picks[0].covered_share_after == pytest.approx(4 / 6)


def test_ties_go_to_the_lowest_candidate_index() -> None:
    picks = greedy_sites([10.0, 0.0], [0.0, 0.0], [5.0], [0.0], None, [False], radius_m=20, k=2)
    assert [p.index for p in picks] == [0]


def test_weights_outrank_counts() -> None:
    dx = np.array([0.0, 10.0, 1000.0])
    w = np.array([1.0, 1.0, 5.0])
    picks = greedy_sites(
        [0.0, 1000.0], [0.0, 0.0], dx, np.zeros(3), w, np.zeros(3, bool), radius_m=50.0, k=1
    )
    assert picks[0].index == 1
    assert picks[0].covered_share_after == pytest.approx(5 / 7)


def test_caller_already_covered_array_is_not_modified() -> None:
    already = np.zeros(2, dtype=bool)
    greedy_sites([0.0], [0.0], [0.0, 1.0], [0.0, 0.0], None, already, radius_m=5.0, k=1)
    assert not already.any()


def test_empty_inputs_give_no_proposals() -> None:
    none = np.zeros(0)
    assert greedy_sites(none, none, [0.0], [0.0], None, [False], radius_m=100.0, k=3) == []
    assert greedy_sites([0.0], [0.0], none, none, None, none.astype(bool), radius_m=100, k=3) == []
    assert greedy_sites([0.0], [0.0], [0.0], [0.0], None, [False], radius_m=100.0, k=0) == []
    assert incidence(none, none, none, none, 10.0).shape == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": -1}, "non-negative"),
        ({"radius_m": 0.0}, "positive"),
        ({"demand_weight": [-1.0]}, "non-negative"),
        ({"demand_x": [np.nan]}, "NaN"),
        ({"already_covered": [False, True]}, "must match"),
    ],
)
def test_bad_input_is_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "candidate_x": [0.0],
        "candidate_y": [0.0],
        "demand_x": [0.0],
        "demand_y": [0.0],
        "demand_weight": None,
        "already_covered": [False],
        "radius_m": 10.0,
        "k": 1,
    }
    args.update(kwargs)
    with pytest.raises(GeoError, match=message):
        greedy_sites(**args)  # type: ignore[arg-type]


coords = st.lists(st.tuples(st.floats(0, 1000), st.floats(0, 1000)), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(
    cands=coords,
    demand=coords,
    weights=st.lists(st.floats(0, 10), min_size=30, max_size=30),
    k=st.integers(0, 12),
    radius=st.floats(20, 400),
)
def test_greedy_gains_never_increase_no_site_repeats_and_shares_add_up(
    cands: list[tuple[float, float]],
    demand: list[tuple[float, float]],
    weights: list[float],
    k: int,
    radius: float,
) -> None:
    c = np.array(cands)
    d = np.array(demand)
    w = np.array(weights[: len(demand)])
    picks = greedy_sites(
        c[:, 0], c[:, 1], d[:, 0], d[:, 1], w, np.zeros(len(d), bool), radius_m=radius, k=k
    )
    assert len(picks) <= k
    idx = [p.index for p in picks]
    assert len(set(idx)) == len(idx)
    gains = [p.gain_weight for p in picks]
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(gains))
    assert all(g > 0 for g in gains)
    newly = np.concatenate([p.newly_covered for p in picks]) if picks else np.zeros(0, int)
    assert len(set(newly.tolist())) == newly.size  # each demand point is credited once
    for p in picks:
        reach = np.hypot(d[p.newly_covered, 0] - p.x, d[p.newly_covered, 1] - p.y)
        assert (reach <= radius + 1e-9).all()
        assert p.gain_weight == pytest.approx(w[p.newly_covered].sum())
    if picks and w.sum() > 0:
        assert picks[-1].covered_share_after == pytest.approx(w[newly].sum() / w.sum())


def test_greedy_matches_brute_force_first_pick() -> None:
    rng = np.random.default_rng(7)
    c = rng.uniform(0, 1000, size=(40, 2))
    d = rng.uniform(0, 1000, size=(300, 2))
    w = rng.uniform(0, 3, size=300)
    reach = np.hypot(c[:, None, 0] - d[None, :, 0], c[:, None, 1] - d[None, :, 1]) <= 150.0
    best = int(np.argmax(reach @ w))
    picks = greedy_sites(
        c[:, 0], c[:, 1], d[:, 0], d[:, 1], w, np.zeros(300, bool), radius_m=150, k=1
    )
    assert picks[0].index == best
    assert picks[0].gain_weight == pytest.approx(float(reach[best] @ w))
