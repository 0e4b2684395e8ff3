"""Camera status from two dimensions: reachability (probes) and picture quality (diagnoses).

DESIGN.md §2 "Health and KPIs". A protocol probe (OPTIONS/DESCRIBE) says the camera answers; it
says nothing about the picture. A frame diagnosis says what the picture shows. Mixing both into
one streak (as this module once did) let the next successful DESCRIBE reset a black or frozen
picture, so degraded cameras stayed `online` and the 完好率 counted them as intact. They are kept
apart here, in one small immutable `CameraState`:

- **reachability** (`step`, fed by probe outcomes ``ok``/``fail``) — hysteresis: offline after
  `offline_after` consecutive failures, online after `online_after` consecutive successes; the
  rule is the same from every status, including ``unknown``. One lost probe on a busy NVR must
  not page a command centre, and one lucky probe on a dying link must not clear the alarm.
  `settled` holds this status (unknown / online / offline).
- **picture** (`judge`, fed by diagnosis verdicts ``clean``/``fault``) — a first faulty
  diagnosis makes the picture ``suspect`` and asks for a re-diagnosis soon (`recheck_at`,
  `recheck_s` later; a passing truck's headlights or one bad keyframe is not a fault); the
  `confirm_after`-th faulty diagnosis in a row confirms it (``faulty``); it stays faulty until a
  clean diagnosis clears it. A probe never touches this dimension.
- **flapping** — an overlay on reachability. A camera whose raw probe result keeps changing is
  hidden from the streak rule (alternating ok/fail never builds a streak of 3 fails); when the
  share of changes over the last `flap_window` probes reaches `flap_threshold` the status is
  ``flapping`` until the window calms. The share is taken over the full window length, so a
  new camera needs as many changes as an old one before it is called flapping.

The status shown is: flapping if flapping, else offline/unknown as reachability says, else
``degraded`` when the picture fault is confirmed, else ``online``. An offline camera keeps its
picture verdict: when it comes back it is degraded again until a clean diagnosis.

Only status changes are reported as `Transition`s; `availability_seconds` turns a transition
history back into seconds per status, which is what an exact 在线率 / 完好率 over a period needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Final, Literal

from health.errors import InvalidHistory, InvalidPolicy

__all__ = [
    "OUTCOMES",
    "PICTURES",
    "STATUSES",
    "VERDICTS",
    "CameraState",
    "Outcome",
    "Picture",
    "Status",
    "StatusPolicy",
    "Transition",
    "Verdict",
    "availability_seconds",
    "diagnosis_due",
    "initial_state",
    "judge",
    "step",
]

Status = Literal["unknown", "online", "degraded", "offline", "flapping"]
Outcome = Literal["ok", "fail"]
Verdict = Literal["clean", "fault"]
Picture = Literal["unknown", "clean", "suspect", "faulty"]

STATUSES: Final[tuple[Status, ...]] = ("unknown", "online", "degraded", "offline", "flapping")
OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "fail")
VERDICTS: Final[tuple[Verdict, ...]] = ("clean", "fault")
PICTURES: Final[tuple[Picture, ...]] = ("unknown", "clean", "suspect", "faulty")

# The reachability one outcome stands for on its own (the "raw" state of the flap detector).
_RAW: Final[dict[str, Status]] = {"ok": "online", "fail": "offline"}
_SETTLED: Final[frozenset[str]] = frozenset({"unknown", "online", "offline"})


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    """Streak lengths, flap damping and picture confirmation; defaults from DESIGN.md §2
    (N = 3, M = 2) and issue 12 (a faulty picture re-diagnosed within 10 minutes, confirmed
    by the second faulty diagnosis).

    A 40 % share of changes over 10 probes means at least four flips in the window: more than
    a camera that went down and came back (two flips) or two honest outages, less than a link
    that drops every other probe.
    """

    offline_after: int = 3
    online_after: int = 2
    flap_window: int = 10
    flap_threshold: float = 0.4
    confirm_after: int = 2
    recheck_s: float = 600.0

    def __post_init__(self) -> None:
        recheck = self.recheck_s
        if isinstance(recheck, bool) or not isinstance(recheck, int | float):
            raise InvalidPolicy(f"recheck_s must be a number of seconds, got {recheck!r}")
        if not 0 < recheck <= 86_400:
            raise InvalidPolicy(f"recheck_s must be in (0, 86400] seconds, got {recheck!r}")
        for name in ("offline_after", "online_after", "flap_window", "confirm_after"):
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
    camera changes nothing: there was no raw state to change). `settled` is the reachability
    (unknown / online / offline) underneath. `picture` is the picture dimension,
    `fault_streak` the faulty diagnoses in a row, `faults` the flags of the latest faulty one,
    and `recheck_at` when a suspect picture is to be diagnosed again (None: not asked).
    """

    status: Status
    since: float
    fail_streak: int = 0
    ok_streak: int = 0
    fault_streak: int = 0
    recent: tuple[Outcome, ...] = ()
    changes: tuple[bool, ...] = ()
    settled: Status = field(default="unknown")
    picture: Picture = "unknown"
    faults: tuple[str, ...] = ()
    recheck_at: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise InvalidHistory(f"unknown status {self.status!r}")
        if self.settled not in _SETTLED:
            raise InvalidHistory(
                f"settled (reachability) must be unknown, online or offline, got {self.settled!r}"
            )
        if self.picture not in PICTURES:
            raise InvalidHistory(f"unknown picture state {self.picture!r}")
        if len(self.recent) != len(self.changes):
            raise InvalidHistory("recent outcomes and their change flags must align")
        if any(o not in _RAW for o in self.recent):
            raise InvalidHistory(f"recent outcomes must be among {OUTCOMES}")

    @classmethod
    def load(cls, data: dict[str, object]) -> CameraState:
        """A state from its stored JSON, including rows written before the two dimensions:
        their streak counted diagnosis faults as probe outcomes (``fault``, settled
        ``degraded``). Such a fault meant the camera answered, so it becomes ``ok``; the
        picture starts unknown and is judged again at the next diagnosis."""
        d = dict(data)
        legacy = d.get("settled") == "degraded" or "fault" in tuple(d.get("recent", ()))  # type: ignore[arg-type]
        d["recent"] = tuple("ok" if o == "fault" else o for o in d.get("recent", ()))  # type: ignore[attr-defined]
        d["changes"] = tuple(d.get("changes", ()))  # type: ignore[arg-type]
        d["faults"] = tuple(d.get("faults", ()))  # type: ignore[arg-type]
        if legacy:
            if d.get("settled") == "degraded":
                d["settled"] = "online"
            d["fault_streak"] = 0  # `status` stays: the next step moves it, with a transition
        return cls(**d)  # type: ignore[arg-type]

    def dump(self) -> dict[str, object]:
        """The state as its stored JSON object (the inverse of `load`), shallow: the
        fields are numbers, strings and tuples of strings, and `dataclasses.asdict`'s deep
        copy cost a quarter of a catalog's first health observations (issue 15)."""
        return {name: getattr(self, name) for name in _STATE_FIELDS}


_STATE_FIELDS = tuple(f.name for f in fields(CameraState))


def initial_state(now: float) -> CameraState:
    """A newly registered camera: nothing observed yet, so nothing claimed."""
    return CameraState(status="unknown", since=now)


def _settle(settled: Status, ok: int, fail: int, policy: StatusPolicy) -> Status:
    """The streak rule of reachability, identical from every status (see module docstring)."""
    if ok >= policy.online_after:
        return "online"
    if fail >= policy.offline_after:
        return "offline"
    return settled


def _shown(settled: Status, picture: Picture, flapping: bool) -> Status:
    """The one status a map and the KPIs show, from the two dimensions and the overlay."""
    if flapping:
        return "flapping"
    if settled == "online" and picture == "faulty":
        return "degraded"
    return settled


def _flapping(state: CameraState, policy: StatusPolicy) -> bool:
    return sum(state.changes) / policy.flap_window >= policy.flap_threshold


def _picture_reason(state: CameraState, policy: StatusPolicy) -> str:
    flags = ", ".join(state.faults) or "a fault"
    return (
        f"picture fault confirmed by {state.fault_streak} faulty diagnoses in a row "
        f"(confirm_after={policy.confirm_after}): {flags}"
    )


def _streak_reason(status: Status, state: CameraState, policy: StatusPolicy) -> str:
    if status == "online":
        return f"{state.ok_streak} consecutive ok probes (online_after={policy.online_after})"
    if status == "degraded":
        return (
            f"{state.ok_streak} consecutive ok probes (online_after={policy.online_after}); "
            + _picture_reason(state, policy)
        )
    if status == "offline":
        return (
            f"{state.fail_streak} consecutive failed probes (offline_after={policy.offline_after})"
        )
    return "flap window calmed before any status was established"


def _moved(
    old: CameraState, new: CameraState, now: float, reason: str
) -> tuple[CameraState, Transition | None]:
    if new.status == old.status:
        return replace(new, since=old.since), None
    return replace(new, since=now), Transition(
        old=old.status, new=new.status, at=now, reason=reason
    )


def step(
    state: CameraState, outcome: Outcome, now: float, policy: StatusPolicy | None = None
) -> tuple[CameraState, Transition | None]:
    """Feed one probe outcome (reachability); return the new state and the transition it
    caused, if any. The picture dimension is untouched: a DESCRIBE says nothing about it.

    `now` must not precede `state.since`, so that stored transitions are in time order and
    `availability_seconds` can trust them.
    """
    policy = policy or StatusPolicy()
    if outcome not in _RAW:
        raise InvalidHistory(f"probe outcome must be one of {OUTCOMES}, got {outcome!r}")
    if now < state.since:
        raise InvalidHistory(f"probe at {now} precedes the current status (since {state.since})")

    ok = state.ok_streak + 1 if outcome == "ok" else 0
    fail = state.fail_streak + 1 if outcome == "fail" else 0
    settled = _settle(state.settled, ok, fail, policy)

    changed = bool(state.recent) and _RAW[state.recent[-1]] != _RAW[outcome]
    keep = policy.flap_window
    nxt = replace(
        state,
        fail_streak=fail,
        ok_streak=ok,
        recent=(*state.recent, outcome)[-keep:],
        changes=(*state.changes, changed)[-keep:],
        settled=settled,
    )
    flapping = _flapping(nxt, policy)
    nxt = replace(nxt, status=_shown(settled, nxt.picture, flapping))
    if nxt.status == state.status:
        return nxt, None

    window = f"{sum(nxt.changes)} of the last {policy.flap_window} probes changed state"
    if nxt.status == "flapping":
        reason = f"flapping: {window} (threshold {policy.flap_threshold:g})"
    elif state.status == "flapping":
        reason = f"calmed: {window}; settled: " + _streak_reason(nxt.status, nxt, policy)
    else:
        reason = _streak_reason(nxt.status, nxt, policy)
    return _moved(state, nxt, now, reason)


def judge(
    state: CameraState,
    verdict: Verdict,
    now: float,
    policy: StatusPolicy | None = None,
    faults: Sequence[str] = (),
) -> tuple[CameraState, Transition | None]:
    """Feed one diagnosis verdict (picture); return the new state and its transition, if any.

    `faults` are the fault flags of a ``fault`` verdict (kept for the reason and the report).
    A first fault makes the picture ``suspect`` and sets `recheck_at` (`recheck_s` later); the
    `confirm_after`-th fault in a row confirms it, and a reachable camera becomes degraded. A
    ``clean`` verdict clears the picture at once: a camera is degraded only while its
    picture is confirmed bad.
    """
    policy = policy or StatusPolicy()
    if verdict not in VERDICTS:
        raise InvalidHistory(f"diagnosis verdict must be one of {VERDICTS}, got {verdict!r}")
    if now < state.since:
        raise InvalidHistory(f"diagnosis at {now} precedes the current status ({state.since})")
    if verdict == "clean":
        nxt = replace(state, picture="clean", fault_streak=0, faults=(), recheck_at=None)
        cleared = ", ".join(state.faults) or "none"
        reason = f"a clean diagnosis cleared the picture fault (was: {cleared})"
    else:
        streak = state.fault_streak + 1
        confirmed = streak >= policy.confirm_after
        nxt = replace(
            state,
            picture="faulty" if confirmed else "suspect",
            fault_streak=streak,
            faults=tuple(faults),
            recheck_at=None if confirmed else now + policy.recheck_s,
        )
        reason = _picture_reason(nxt, policy)
    nxt = replace(nxt, status=_shown(nxt.settled, nxt.picture, _flapping(nxt, policy)))
    return _moved(state, nxt, now, reason)


def diagnosis_due(state: CameraState, now: float) -> bool:
    """Whether a suspect picture's re-diagnosis is due (the daily rotation aside)."""
    return state.recheck_at is not None and now >= state.recheck_at


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
