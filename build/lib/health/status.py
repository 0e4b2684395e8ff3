"""Camera status machine: hysteresis on probe outcomes, flap damping, availability over time.

DESIGN.md §2 "Health and KPIs": a camera goes offline after N consecutive failures (default 3)
and back online after M successes (default 2), and we store transitions, not every probe. One
lost probe on a busy NVR must not page a command centre, and one lucky probe on a dying link
must not clear the alarm; the streak rule is what makes a status worth reporting.

Two layers, both kept in `CameraState`:

- **settled** — the hysteresis status. Each outcome feeds a streak and resets the two others;
  the settled status moves to the status an outcome stands for once its streak is long enough:
  ``ok`` → online after `online_after`, ``fault`` (frames flow, quality fault) → degraded after
  `online_after`, ``fail`` → offline after `offline_after`. The rule is the same from every
  status, including ``unknown``: a new camera is not declared anything on one probe either.
  Faults count like successes (M, not N) because frames *did* flow: degraded is a confirmed
  observation about the picture, not a suspicion about reachability.
- **flapping** — an overlay. A camera whose raw state (the status the latest outcome alone
  stands for) keeps changing is hidden from the streak rule: alternating ok/fail never builds a
  streak of 3 fails, so it would stay "online" forever while half of its probes fail. When the
  share of raw changes over the last `flap_window` probes reaches `flap_threshold`, the status
  becomes ``flapping`` (one transition, not one per probe); it leaves flapping only when the
  window calms below the threshold, to the settled status, which kept evolving underneath. The
  share is taken over the full window length, not over the probes seen so far, so a new camera
  needs as many changes as an old one before it is called flapping.

Only status changes are reported as `Transition`s; `availability_seconds` turns a transition
history back into seconds per status, which is what an exact 在线率 over a period needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from health.errors import InvalidHistory, InvalidPolicy

__all__ = [
    "OUTCOMES",
    "STATUSES",
    "CameraState",
    "Outcome",
    "Status",
    "StatusPolicy",
    "Transition",
    "availability_seconds",
    "initial_state",
    "step",
]

Status = Literal["unknown", "online", "degraded", "offline", "flapping"]
Outcome = Literal["ok", "fault", "fail"]

STATUSES: Final[tuple[Status, ...]] = ("unknown", "online", "degraded", "offline", "flapping")
OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "fault", "fail")

# The status one outcome stands for on its own (the "raw" state of the flap detector).
_RAW: Final[dict[str, Status]] = {"ok": "online", "fault": "degraded", "fail": "offline"}
_SETTLED: Final[frozenset[str]] = frozenset(STATUSES) - {"flapping"}


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """Streak lengths and flap damping; defaults from DESIGN.md §2 (N = 3, M = 2).

    A 40 % share of changes over 10 probes means at least four flips in the window: more than
    a camera that went down and came back (two flips) or two honest outages, less than a link
    that drops every other probe.
    """

    offline_after: int = 3
    online_after: int = 2
    flap_window: int = 10
    flap_threshold: float = 0.4

    def __post_init__(self) -> None:
        for name in ("offline_after", "online_after", "flap_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidPolicy(f"{name} must be a positive integer, got {value!r}")
        threshold = self.flap_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise InvalidPolicy(f"flap_threshold must be a number, got {threshold!r}")
        if not 0 < threshold <= 1:
            raise InvalidPolicy(f"flap_threshold is a share of probes in (0, 1], got {threshold!r}")


@dataclass(frozen=True, slots=True)
class Transition:
    """A status change at time `at` (the probe's timestamp), with a human-readable reason."""

    old: Status
    new: Status
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class CameraState:
    """Everything the machine needs between probes; small, immutable, storable as a row.

    `since` is when `status` began. `recent` holds the last `flap_window` outcomes and
    `changes[i]` whether `recent[i]` differed from the outcome before it (the first probe of a
    camera changes nothing: there was no raw state to change). `settled` is the hysteresis
    status underneath a flapping overlay (equal to `status` otherwise).
    """

    status: Status
    since: float
    fail_streak: int = 0
    ok_streak: int = 0
    fault_streak: int = 0
    recent: tuple[Outcome, ...] = ()
    changes: tuple[bool, ...] = ()
    settled: Status = field(default="unknown")

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidHistory(f"unknown status {self.status!r}")
        if self.settled not in _SETTLED:
            raise InvalidHistory(f"settled status must not be flapping, got {self.settled!r}")
        if len(self.recent) != len(self.changes):
            raise InvalidHistory("recent outcomes and their change flags must align")


def initial_state(now: float) -> CameraState:
    """A newly registered camera: nothing observed yet, so nothing claimed."""
    return CameraState(status="unknown", since=now)


def _settle(settled: Status, ok: int, fault: int, fail: int, policy: StatusPolicy) -> Status:
    """The streak rule, identical from every status (see module docstring)."""
    if ok >= policy.online_after:
        return "online"
    if fault >= policy.online_after:
        return "degraded"
    if fail >= policy.offline_after:
        return "offline"
    return settled


def _streak_reason(status: Status, state: CameraState, policy: StatusPolicy) -> str:
    if status == "online":
        return f"{state.ok_streak} consecutive ok probes (online_after={policy.online_after})"
    if status == "degraded":
        return (
            f"{state.fault_streak} consecutive probes with a quality fault "
            f"(online_after={policy.online_after})"
        )
    if status == "offline":
        return (
            f"{state.fail_streak} consecutive failed probes (offline_after={policy.offline_after})"
        )
    return "flap window calmed before any status was established"


def step(
    state: CameraState, outcome: Outcome, now: float, policy: StatusPolicy | None = None
) -> tuple[CameraState, Transition | None]:
    """Feed one probe outcome; return the new state and the transition it caused, if any.

    `now` must not precede `state.since`, so that stored transitions are in time order and
    `availability_seconds` can trust them.
    """
    policy = policy or StatusPolicy()
    if outcome not in _RAW:
        raise InvalidHistory(f"probe outcome must be one of {OUTCOMES}, got {outcome!r}")
    if now < state.since:
        raise InvalidHistory(f"probe at {now} precedes the current status (since {state.since})")

    ok = state.ok_streak + 1 if outcome == "ok" else 0
    fault = state.fault_streak + 1 if outcome == "fault" else 0
    fail = state.fail_streak + 1 if outcome == "fail" else 0
    settled = _settle(state.settled, ok, fault, fail, policy)

    changed = bool(state.recent) and _RAW[state.recent[-1]] != _RAW[outcome]
    keep = policy.flap_window
    recent = (*state.recent, outcome)[-keep:]
    changes = (*state.changes, changed)[-keep:]
    flips = sum(changes)
    flapping = flips / policy.flap_window >= policy.flap_threshold

    new_status: Status = "flapping" if flapping else settled
    nxt = CameraState(
        status=state.status,
        since=state.since,
        fail_streak=fail,
        ok_streak=ok,
        fault_streak=fault,
        recent=recent,
        changes=changes,
        settled=settled,
    )
    if new_status == state.status:
        return nxt, None

    window = f"{flips} of the last {policy.flap_window} probes changed state"
    if new_status == "flapping":
        reason = f"flapping: {window} (threshold {policy.flap_threshold:g})"
    elif state.status == "flapping":
        reason = f"calmed: {window}; settled: " + _streak_reason(new_status, nxt, policy)
    else:
        reason = _streak_reason(new_status, nxt, policy)
    nxt = replace(nxt, status=new_status, since=now)
    return nxt, Transition(old=state.status, new=new_status, at=now, reason=reason)


def availability_seconds(
    transitions: Sequence[Transition], start: float, end: float, initial_status: Status
) -> dict[str, float]:
    """Seconds spent in each status over [start, end); every status is a key, zeros included.

    `initial_status` is the status before the first given transition. Transitions before
    `start` only move the status forward (so a caller may pass the whole history, or only the
    window with the status in effect at `start`); those at or after `end` are ignored. Each
    transition must leave the status the previous one entered and come in time order: a
    missing or reordered row would silently shift seconds between statuses, which is exactly
    the error an exact 在线率 must not hide.
    """
    if initial_status not in STATUSES:
        raise InvalidHistory(f"unknown initial status {initial_status!r}")
    if end < start:
        raise InvalidHistory(f"period ends ({end}) before it starts ({start})")
    seconds: dict[str, float] = dict.fromkeys(STATUSES, 0.0)
    current: Status = initial_status
    cursor = start
    last_at = float("-inf")
    for t in transitions:
        if t.new not in STATUSES:
            raise InvalidHistory(f"transition at {t.at} enters unknown status {t.new!r}")
        if t.at < last_at:
            raise InvalidHistory(f"transitions out of time order at {t.at} (after {last_at})")
        if t.old != current:
            raise InvalidHistory(
                f"transition at {t.at} leaves {t.old!r} but the camera was {current!r}"
            )
        last_at = t.at
        if t.at >= end:
            break
        if t.at > cursor:
            seconds[current] += t.at - cursor
            cursor = t.at
        current = t.new
    if end > cursor:
        seconds[current] += end - cursor
    return seconds
