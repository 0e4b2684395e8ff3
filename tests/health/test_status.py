"""Status machine on scripted probe and diagnosis sequences (reachability and picture as two
dimensions), availability on hand-built histories, and properties over random sequences."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from health.errors import HealthError, InvalidHistory, InvalidPolicy
from health.status import (
    OUTCOMES,
    STATUSES,
    VERDICTS,
    CameraState,
    Outcome,
    Status,
    StatusPolicy,
    Transition,
    Verdict,
    availability_seconds,
    diagnosis_due,
    initial_state,
    judge,
    step,
)

POLICY = StatusPolicy()


def run(
    outcomes: Iterable[Outcome],
    policy: StatusPolicy = POLICY,
    state: CameraState | None = None,
    t0: float = 0.0,
    dt: float = 60.0,
) -> tuple[CameraState, list[Transition], list[Status]]:
    """Feed outcomes one per `dt` seconds; return final state, transitions, status after each."""
    state = state or initial_state(t0)
    transitions: list[Transition] = []
    seen: list[Status] = []
    now = max(t0, state.since)
    for outcome in outcomes:
        now += dt
        state, tr = step(state, outcome, now, policy)
        if tr is not None:
            transitions.append(tr)
        seen.append(state.status)
    return state, transitions, seen


# --- policy validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"offline_after": 0},
        {"online_after": -1},
        {"flap_window": 0},
        {"offline_after": 2.5},
        {"online_after": True},
        {"flap_threshold": 0.0},
        {"flap_threshold": -0.1},
        {"flap_threshold": 1.5},
        {"flap_threshold": float("nan")},
        {"confirm_after": 0},
        {"recheck_s": 0},
        {"recheck_s": "soon"},
    ],
)
def test_policy_rejects_unusable_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicy) as info:
        StatusPolicy(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, HealthError)
    assert isinstance(info.value, ValueError)
    assert next(iter(kwargs)) in str(info.value)


def test_policy_defaults_and_full_share_allowed() -> None:
    assert StatusPolicy(3, 2, 10, 0.4) == POLICY
    assert StatusPolicy(flap_threshold=1).flap_threshold == 1


# --- hysteresis --------------------------------------------------------------------------------


def test_unknown_needs_a_streak_before_claiming_anything() -> None:
    _, trs, seen = run(["ok"])
    assert seen == ["unknown"] and trs == []
    _, trs, seen = run(["ok", "ok"])
    assert seen == ["unknown", "online"]
    assert [(t.old, t.new, t.at) for t in trs] == [("unknown", "online", 120.0)]
    assert "2 consecutive ok" in trs[0].reason
    _, trs, seen = run(["fail", "fail", "fail"])
    assert seen == ["unknown", "unknown", "offline"]
    assert [(t.old, t.new) for t in trs] == [("unknown", "offline")]


def test_two_fails_stay_online_third_goes_offline() -> None:
    online, _, _ = run(["ok", "ok"])
    state, trs, seen = run(["fail", "fail", "fail"], state=online)
    assert seen == ["online", "online", "offline"]
    assert len(trs) == 1
    assert (trs[0].old, trs[0].new) == ("online", "offline")
    assert "3 consecutive failed" in trs[0].reason
    assert state.since == trs[0].at


def test_interrupted_fail_streak_does_not_go_offline() -> None:
    online, _, _ = run(["ok", "ok"])
    _, trs, seen = run(["fail", "fail", "ok", "fail", "fail"], state=online)
    assert set(seen) == {"online"} and trs == []


def test_one_ok_after_offline_stays_offline_second_goes_online() -> None:
    offline, _, _ = run(["fail"] * 3)
    state, trs, seen = run(["ok", "ok"], state=offline)
    assert seen == ["offline", "online"]
    assert [(t.old, t.new) for t in trs] == [("offline", "online")]
    assert state.ok_streak == 2 and state.fail_streak == 0


def online_camera(t0: float = 0.0) -> CameraState:
    state, _, _ = run(["ok", "ok"], t0=t0)
    assert state.status == "online"
    return state


def test_a_first_faulty_diagnosis_asks_for_a_recheck_and_changes_nothing_yet() -> None:
    state, tr = judge(online_camera(), "fault", 200.0, POLICY, ("frozen",))
    assert tr is None and state.status == "online"
    assert state.picture == "suspect" and state.recheck_at == 200.0 + POLICY.recheck_s
    assert not diagnosis_due(state, 200.0 + POLICY.recheck_s - 1)
    assert diagnosis_due(state, 200.0 + POLICY.recheck_s)


def test_a_second_faulty_diagnosis_confirms_and_makes_the_camera_degraded() -> None:
    state, _ = judge(online_camera(), "fault", 200.0, POLICY, ("frozen",))
    state, tr = judge(state, "fault", 700.0, POLICY, ("frozen", "blur"))
    assert tr is not None and (tr.old, tr.new, tr.at) == ("online", "degraded", 700.0)
    assert "confirmed by 2 faulty diagnoses" in tr.reason and "frozen, blur" in tr.reason
    assert state.picture == "faulty" and state.recheck_at is None
    assert state.faults == ("frozen", "blur")


def test_a_protocol_probe_never_clears_a_picture_fault() -> None:
    state, _ = judge(online_camera(), "fault", 200.0)
    state, _ = judge(state, "fault", 300.0)
    state, trs, seen = run(["ok"] * 20, state=state, t0=300.0)
    assert trs == [] and set(seen) == {"degraded"}


def test_a_clean_diagnosis_clears_a_confirmed_fault() -> None:
    state, _ = judge(online_camera(), "fault", 200.0)
    state, _ = judge(state, "fault", 300.0)
    state, tr = judge(state, "clean", 400.0)
    assert tr is not None and (tr.old, tr.new) == ("degraded", "online")
    assert "clean diagnosis cleared" in tr.reason
    assert state.picture == "clean" and state.fault_streak == 0 and state.faults == ()


def test_a_clean_diagnosis_between_two_faults_restarts_the_confirmation() -> None:
    state, _ = judge(online_camera(), "fault", 200.0)
    state, _ = judge(state, "clean", 300.0)
    state, tr = judge(state, "fault", 400.0)
    assert tr is None and state.picture == "suspect" and state.status == "online"


def test_degraded_camera_that_stops_answering_goes_offline_and_comes_back_degraded() -> None:
    state, _ = judge(online_camera(), "fault", 200.0)
    state, _ = judge(state, "fault", 300.0)
    state, trs, seen = run(["fail"] * 3, state=state, t0=300.0)
    assert seen == ["degraded", "degraded", "offline"]
    assert state.picture == "faulty"  # nothing was learnt about the picture meanwhile
    state, trs, seen = run(["ok"] * 2, state=state, t0=state.since)
    assert seen == ["offline", "degraded"]
    assert "picture fault" in trs[0].reason


def test_a_picture_fault_on_an_offline_camera_shows_offline() -> None:
    offline, _, _ = run(["fail"] * 3)
    state, _ = judge(offline, "fault", 500.0)
    state, tr = judge(state, "fault", 600.0)
    assert tr is None and state.status == "offline" and state.picture == "faulty"


def test_confirmation_count_and_recheck_delay_are_configuration() -> None:
    policy = StatusPolicy(confirm_after=3, recheck_s=60.0)
    state = online_camera()
    for at in (200.0, 260.0):
        state, tr = judge(state, "fault", at, policy)
        assert tr is None and state.recheck_at == at + 60.0
    state, tr = judge(state, "fault", 320.0, policy)
    assert tr is not None and tr.new == "degraded"
    one = StatusPolicy(confirm_after=1)
    state, tr = judge(online_camera(), "fault", 200.0, one)
    assert tr is not None and tr.new == "degraded"


def test_judge_rejects_bad_verdict_and_time_running_backwards() -> None:
    state = online_camera()
    with pytest.raises(InvalidHistory, match="verdict"):
        judge(state, "awful", 500.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidHistory, match="precedes"):
        judge(state, "clean", state.since - 1)


def test_a_stored_state_from_before_the_two_dimensions_loads() -> None:
    """Rows written when a diagnosis fault was a probe outcome: it meant the camera answered."""
    old = {
        "status": "degraded",
        "since": 50.0,
        "fail_streak": 0,
        "ok_streak": 0,
        "fault_streak": 2,
        "recent": ["ok", "fault", "fault"],
        "changes": [False, True, False],
        "settled": "degraded",
    }
    state = CameraState.load(old)
    assert state.recent == ("ok", "ok", "ok") and state.settled == "online"
    assert state.picture == "unknown" and state.fault_streak == 0
    state, tr = step(state, "ok", 60.0)
    assert tr is not None and (tr.old, tr.new) == ("degraded", "online")


def test_since_moves_only_on_transitions() -> None:
    state = initial_state(1000.0)
    state, _ = step(state, "ok", 1010.0)
    assert state.since == 1000.0
    state, tr = step(state, "ok", 1020.0)
    assert tr is not None and state.since == 1020.0
    state, tr = step(state, "ok", 1030.0)
    assert tr is None and state.since == 1020.0


def test_custom_streak_lengths() -> None:
    policy = StatusPolicy(offline_after=1, online_after=4)
    _, trs, seen = run(["fail", "ok", "ok", "ok", "ok"], policy=policy)
    assert seen == ["offline", "offline", "offline", "offline", "online"]
    assert len(trs) == 2


# --- flapping ----------------------------------------------------------------------------------


def test_alternating_goes_flapping_once_then_calms_to_online() -> None:
    alternating: list[Outcome] = ["fail", "ok"] * 10
    steady: list[Outcome] = ["ok"] * 10
    state, trs, seen = run(["ok", "ok", *alternating, *steady])
    assert [(t.old, t.new) for t in trs] == [
        ("unknown", "online"),
        ("online", "flapping"),
        ("flapping", "online"),
    ]
    # four raw changes (fail, ok, fail, ok after the two oks) reach 4/10 = 0.4
    assert seen[2:6] == ["online", "online", "online", "flapping"]
    assert "4 of the last 10" in trs[1].reason
    assert "calmed" in trs[2].reason
    assert state.status == "online"
    # it stayed flapping through the whole alternation
    assert seen[5:22] == ["flapping"] * 17


def test_flapping_calms_to_offline_when_the_camera_dies() -> None:
    alternating: list[Outcome] = ["fail", "ok"] * 5
    flap: list[Outcome] = ["ok", "ok", *alternating]
    dead: list[Outcome] = ["fail"] * 12
    state, trs, _ = run([*flap, *dead])
    assert [t.new for t in trs] == ["online", "flapping", "offline"]
    assert trs[-1].old == "flapping"
    assert state.settled == "offline" and state.status == "offline"


def test_settled_status_keeps_evolving_under_flapping() -> None:
    # while flapping, three fails in a row settle offline underneath; calm-down reveals it
    flap: list[Outcome] = ["ok", "ok", "fail", "ok", "fail", "ok", "fail", "fail", "fail"]
    state, _, _ = run(flap)
    assert state.status == "flapping" and state.settled == "offline"
    state, trs, _ = run(["fail"] * 10, state=state, t0=state.since)
    assert [(t.old, t.new) for t in trs] == [("flapping", "offline")]
    assert "settled: " in trs[0].reason and "consecutive failed" in trs[0].reason


def test_recent_window_is_bounded() -> None:
    state, _, _ = run(["ok", "fail", "fail"] * 20)
    assert len(state.recent) == len(state.changes) == POLICY.flap_window
    assert state.recent[-3:] == ("ok", "fail", "fail")


def test_first_probe_is_not_a_change() -> None:
    state, _ = step(initial_state(0.0), "fail", 1.0)
    assert state.changes == (False,)


def test_alternating_picture_verdicts_are_not_flapping() -> None:
    """Flapping is about reachability; a picture that comes and goes is judged by diagnoses."""
    state = online_camera()
    at = 200.0
    verdicts: tuple[Verdict, ...] = ("fault", "clean") * 6
    for verdict in verdicts:
        at += 60.0
        state, tr = judge(state, verdict, at)
        assert tr is None
    assert state.status == "online"


# --- input errors ------------------------------------------------------------------------------


def test_step_rejects_bad_outcome_and_time_running_backwards() -> None:
    state = initial_state(100.0)
    with pytest.raises(InvalidHistory, match="outcome"):
        step(state, "timeout", 101.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidHistory, match="precedes"):
        step(state, "ok", 99.0)


def test_state_rejects_inconsistent_fields() -> None:
    with pytest.raises(InvalidHistory):
        CameraState(status="sleeping", since=0.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidHistory):
        CameraState(status="flapping", since=0.0, settled="flapping")
    with pytest.raises(InvalidHistory):
        CameraState(status="online", since=0.0, recent=("ok",), changes=())
    with pytest.raises(InvalidHistory):
        CameraState(status="online", since=0.0, settled="degraded")
    with pytest.raises(InvalidHistory):
        CameraState(status="online", since=0.0, picture="dirty")  # type: ignore[arg-type]


# --- availability ------------------------------------------------------------------------------

HISTORY = [
    Transition("unknown", "online", 10.0, "r"),
    Transition("online", "offline", 40.0, "r"),
    Transition("offline", "online", 55.0, "r"),
    Transition("online", "degraded", 100.0, "r"),
    Transition("degraded", "online", 130.0, "r"),
]


def test_availability_matches_hand_computation() -> None:
    got = availability_seconds(HISTORY, 20.0, 120.0, "unknown")
    # online 20..40 and 55..100, offline 40..55, degraded 100..120
    assert got == {
        "unknown": 0.0,
        "online": 65.0,
        "degraded": 20.0,
        "offline": 15.0,
        "flapping": 0.0,
    }
    assert got["online"] / (120.0 - 20.0) == 0.65  # exact 在线率 (intact) of this camera


def test_availability_from_a_window_with_the_status_at_start() -> None:
    window = [t for t in HISTORY if 20.0 <= t.at < 120.0]
    assert availability_seconds(window, 20.0, 120.0, "online") == availability_seconds(
        HISTORY, 20.0, 120.0, "unknown"
    )


def test_availability_before_first_transition_and_empty_period() -> None:
    got = availability_seconds(HISTORY, 0.0, 10.0, "unknown")
    assert got["unknown"] == 10.0 and sum(got.values()) == 10.0
    assert set(availability_seconds([], 5.0, 5.0, "offline").values()) == {0.0}
    assert availability_seconds([], 0.0, 86400.0, "offline")["offline"] == 86400.0


def test_availability_rejects_broken_histories() -> None:
    with pytest.raises(InvalidHistory, match="leaves"):
        availability_seconds(HISTORY[1:], 0.0, 200.0, "unknown")
    with pytest.raises(InvalidHistory, match="order"):
        availability_seconds([HISTORY[1], HISTORY[0]], 0.0, 200.0, "online")
    with pytest.raises(InvalidHistory, match="before it starts"):
        availability_seconds(HISTORY, 10.0, 0.0, "unknown")
    with pytest.raises(InvalidHistory):
        availability_seconds(HISTORY, 0.0, 10.0, "asleep")  # type: ignore[arg-type]


def test_availability_of_a_driven_history() -> None:
    # 1-minute probes: online from minute 2, offline from minute 7, online again from minute 9
    _, trs, _ = run(["ok", "ok", "ok", "ok", "fail", "fail", "fail", "ok", "ok"])
    assert [(t.new, t.at) for t in trs] == [
        ("online", 120.0),
        ("offline", 420.0),
        ("online", 540.0),
    ]
    got = availability_seconds(trs, 0.0, 600.0, "unknown")
    assert got["unknown"] == 120.0
    assert got["online"] == 300.0 + 60.0
    assert got["offline"] == 120.0


# --- properties --------------------------------------------------------------------------------

outcomes = st.lists(st.sampled_from(OUTCOMES), max_size=60)
policies = st.builds(
    StatusPolicy,
    offline_after=st.integers(1, 6),
    online_after=st.integers(1, 6),
    flap_window=st.integers(1, 15),
    flap_threshold=st.floats(0.05, 1.0),
)


@settings(max_examples=300, deadline=None)
@given(prefix=outcomes, extra=st.integers(0, 20), policy=policies)
def test_a_long_enough_fail_run_ends_offline_unless_flapping(
    prefix: list[Outcome], extra: int, policy: StatusPolicy
) -> None:
    state, _, _ = run(prefix, policy=policy)
    k = policy.offline_after + extra
    state, _, _ = run(["fail"] * k, policy=policy, state=state, t0=state.since)
    assert state.status in ("offline", "flapping")
    assert state.settled == "offline"
    if k > policy.flap_window:  # every change in the window is gone
        assert state.status == "offline"


@settings(max_examples=300, deadline=None)
@given(seq=outcomes, policy=policies)
def test_transitions_are_fewer_than_outcomes_and_chain(
    seq: list[Outcome], policy: StatusPolicy
) -> None:
    state, trs, seen = run(seq, policy=policy)
    assert len(trs) <= len(seq)
    previous: Status = "unknown"
    for t in trs:
        assert t.old == previous and t.new != t.old
        previous = t.new
    assert previous == state.status
    assert all(s in STATUSES for s in seen)
    assert state.status == "flapping" or state.status == state.settled


@settings(max_examples=300, deadline=None)
@given(
    seq=outcomes,
    gaps=st.lists(st.floats(0.0, 1e4), min_size=60, max_size=60),
    start=st.floats(-1e3, 3e5),
    length=st.floats(0.0, 3e5),
)
def test_availability_seconds_sum_to_the_period(
    seq: list[Outcome], gaps: list[float], start: float, length: float
) -> None:
    state = initial_state(0.0)
    trs: list[Transition] = []
    now = 0.0
    for outcome, gap in zip(seq, gaps, strict=False):
        now += gap
        state, tr = step(state, outcome, now)
        if tr is not None:
            trs.append(tr)
    end = start + length
    got = availability_seconds(trs, start, end, "unknown")
    assert all(v >= 0.0 for v in got.values())
    assert math.isclose(sum(got.values()), end - start, rel_tol=1e-9, abs_tol=1e-6)


events = st.lists(
    st.one_of(
        st.tuples(st.just("probe"), st.sampled_from(OUTCOMES)),
        st.tuples(st.just("diagnosis"), st.sampled_from(VERDICTS)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(seq=events, policy=policies)
def test_degraded_exactly_when_reachable_and_picture_confirmed_faulty(
    seq: list[tuple[str, str]], policy: StatusPolicy
) -> None:
    state = initial_state(0.0)
    previous: Status = "unknown"
    now = 0.0
    for kind, value in seq:
        now += 60.0
        if kind == "probe":
            outcome: Outcome = "ok" if value == "ok" else "fail"
            state, tr = step(state, outcome, now, policy)
        else:
            verdict: Verdict = "clean" if value == "clean" else "fault"
            state, tr = judge(state, verdict, now, policy, ("frozen",))
        if tr is not None:
            assert tr.old == previous and tr.new != tr.old
            previous = tr.new
        assert state.status == previous
        flapping = sum(state.changes) / policy.flap_window >= policy.flap_threshold
        expected_degraded = not flapping and state.settled == "online" and state.picture == "faulty"
        assert (state.status == "degraded") == expected_degraded
        assert (state.recheck_at is not None) == (state.picture == "suspect")
