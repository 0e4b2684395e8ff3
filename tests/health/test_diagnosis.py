"""Video-quality diagnosis on synthetic frame samples, one pattern per item of the check list.

The normal scene is a moving textured picture (blurred colour noise, a sliding grey gradient,
solid shapes, an OSD caption) shifting every frame, like a street scene with traffic. Each
faulty pattern is derived from it, so a flag firing is caused by the fault and not by a
different scene. The real-stream counterparts (H.264 over RTSP) are in test_vqd_streams.py;
the accuracy over a labelled clip set is measured by bench/bench_vqd.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from health.diagnosis import (
    CHECKS,
    DEFAULT_FAULTS,
    KNOWN_CHECKS,
    LABELS,
    PTZ_CHECK,
    REFERENCE_SIZE,
    Thresholds,
    diagnose,
    reference_picture,
    with_ptz,
)
from health.errors import HealthError, InvalidFrames, InvalidThresholds

W, H, N = 320, 180, 20
Frames = list[NDArray[Any]]


def normal_scene(n: int = N, seed: int = 0) -> Frames:
    """A fixed camera: a smooth sky over a textured street, a car and a ball moving, an OSD."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    texture = cv2.normalize(smooth, np.empty_like(smooth), 0, 255, cv2.NORM_MINMAX)
    xx = np.mgrid[0:H, 0:W][1]
    street = 0.6 * texture.astype(np.float32) + ((xx / W) * 100.0)[..., None]
    sky = np.linspace(150, 200, 60, dtype=np.float32)[:, None, None] * np.array([1.1, 1.0, 0.9])
    street[:60] = np.broadcast_to(sky, (60, W, 3))
    background = np.clip(street, 0, 255).astype(np.uint8)
    frames = []
    for i in range(n):
        frame = background.copy()
        cv2.rectangle(frame, (20 + 6 * i, 90), (80 + 6 * i, 130), (30, 200, 60), -1)
        cv2.circle(frame, (260 - 4 * i, 140), 22, (200, 40, 40), -1)
        cv2.putText(frame, "CAM 01", (10, 170), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255,) * 3, 2)
        frames.append(frame)
    return frames


REFERENCE = reference_picture(normal_scene(seed=0))


def black() -> Frames:
    rng = np.random.default_rng(1)  # a little sensor noise: real black is never exactly 0
    return [rng.integers(0, 6, (H, W, 3), dtype=np.uint8) for _ in range(N)]


def blue_screen() -> Frames:
    screen = np.empty((H, W, 3), np.uint8)
    screen[:] = (200, 40, 20)
    cv2.putText(screen, "NO VIDEO", (100, 90), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255,) * 3, 1)
    return [screen.copy() for _ in range(N)]


def too_dark() -> Frames:
    return [(f // 6).astype(np.uint8) for f in normal_scene()]


def too_bright() -> Frames:
    return [np.clip(f.astype(np.int16) + 200, 0, 255).astype(np.uint8) for f in normal_scene()]


def flat_grey() -> Frames:
    rng = np.random.default_rng(2)
    return [
        (118 + 0.15 * (f.astype(np.float32) - 118) + rng.integers(0, 2, f.shape)).astype(np.uint8)
        for f in normal_scene()
    ]


def frozen() -> Frames:
    still = normal_scene(1)[0]
    rng = np.random.default_rng(3)
    # Re-encoding jitter of a repeated frame: ±1 grey level on some pixels.
    return [
        np.clip(still.astype(np.int16) + rng.integers(-1, 2, still.shape), 0, 255).astype(np.uint8)
        for _ in range(N)
    ]


def blurred() -> Frames:
    return [cv2.GaussianBlur(f, (0, 0), 4.0) for f in normal_scene()]


def half_occluded() -> Frames:
    frames = normal_scene()
    for f in frames:
        f[:, : W // 2] = (25, 40, 30)  # a dark cloth over the left half of the lens
    return frames


def red_cast() -> Frames:
    tint = np.array([0.45, 0.45, 1.0])  # BGR: blue and green channels weakened, red boosted
    return [
        np.clip(f * tint + np.array([0, 0, 60]), 0, 255).astype(np.uint8) for f in normal_scene()
    ]


def noisy() -> Frames:
    rng = np.random.default_rng(4)
    return [
        np.clip(f + rng.normal(0, 25, f.shape), 0, 255).astype(np.uint8) for f in normal_scene()
    ]


def snow() -> Frames:
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)]


def stripes() -> Frames:
    yy = np.arange(H, dtype=np.float32)
    return [
        np.clip(f + 25 * np.sin(2 * np.pi * (yy - 4 * i) / 18)[:, None, None], 0, 255).astype(
            np.uint8
        )
        for i, f in enumerate(normal_scene())
    ]


def shaking() -> Frames:
    rng = np.random.default_rng(5)
    out = []
    for f in normal_scene():
        dx, dy = rng.uniform(-6, 6, 2)
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        out.append(cv2.warpAffine(f, m, (W, H), borderMode=cv2.BORDER_REFLECT))
    return out


def turned_away() -> Frames:
    return [np.ascontiguousarray(f[::-1, ::-1]) for f in normal_scene(seed=9)]


PATTERNS: dict[str, Callable[[], Frames]] = {
    "signal_loss": black,
    "too_dark": too_dark,
    "too_bright": too_bright,
    "low_contrast": flat_grey,
    "frozen": frozen,
    "blur": blurred,
    "occlusion": half_occluded,
    "colour_cast": red_cast,
    "noise": noisy,
    "stripes": stripes,
    "shake": shaking,
    "scene_change": turned_away,
}


def test_every_item_has_a_pattern_and_a_chinese_label() -> None:
    assert set(PATTERNS) == set(CHECKS) == set(LABELS) - {PTZ_CHECK}
    assert set(LABELS) == set(KNOWN_CHECKS)
    assert LABELS["noise"] == "雪花/噪声" and LABELS["scene_change"] == "场景变更"
    assert LABELS["ptz_stuck"] == "云台失控"


def test_a_picture_that_did_not_move_is_ptz_stuck_unless_frozen_or_lost_explains_it() -> None:
    t = Thresholds(faults=(*DEFAULT_FAULTS, PTZ_CHECK))
    clean = diagnose(normal_scene(), thresholds=t, reference=REFERENCE)
    stuck = with_ptz(clean, 0.01, t)
    assert stuck.fired == (PTZ_CHECK,) and stuck.faults == (PTZ_CHECK,) and stuck.faulty
    assert stuck.flags[PTZ_CHECK].label == "云台失控"
    assert stuck.flags[PTZ_CHECK].threshold == t.ptz_min_change
    assert with_ptz(clean, 0.6, t).fired == ()
    unjudged = with_ptz(clean, math.nan, t)
    assert unjudged.fired == () and math.isnan(unjudged.flags[PTZ_CHECK].value)
    # As a warning (the default): fired, but the camera is not faulty for it.
    warned = with_ptz(diagnose(normal_scene(), reference=REFERENCE), 0.01)
    assert warned.fired == (PTZ_CHECK,) and not warned.faulty
    frozen = diagnose(PATTERNS["frozen"](), thresholds=t, reference=REFERENCE)
    explained = with_ptz(frozen, 0.0, t)
    assert explained.fired == ("frozen",)
    assert explained.flags[PTZ_CHECK].masked_by == "frozen"
    # Judging it again keeps every other flag as it was.
    assert {k: f for k, f in explained.flags.items() if k != PTZ_CHECK} == frozen.flags


def test_normal_moving_scene_raises_no_flag() -> None:
    diagnosis = diagnose(normal_scene(), reference=REFERENCE)
    assert set(diagnosis.flags) == set(CHECKS)
    assert diagnosis.fired == (), {n: f for n, f in diagnosis.flags.items() if f.fired}
    assert not diagnosis.faulty
    assert diagnosis.frames == N
    assert all(math.isfinite(f.value) for f in diagnosis.flags.values())


@pytest.mark.parametrize("check", list(PATTERNS))
def test_each_fault_pattern_fires_its_flag_and_only_that_flag(check: str) -> None:
    diagnosis = diagnose(PATTERNS[check](), reference=REFERENCE)
    flag = diagnosis.flags[check]
    assert flag.fired, flag
    assert diagnosis.fired == (check,), {n: f for n, f in diagnosis.flags.items() if f.fired}
    assert flag.fault == (check in DEFAULT_FAULTS)
    assert diagnosis.faulty == (check in DEFAULT_FAULTS)
    assert flag.label == LABELS[check]


def test_blue_no_video_screen_is_signal_loss_not_colour_cast() -> None:
    diagnosis = diagnose(blue_screen(), reference=REFERENCE)
    assert diagnosis.fired == ("signal_loss",)
    assert diagnosis.flags["colour_cast"].masked_by == "signal_loss"


def test_full_frame_snow_is_noise_not_just_low_contrast() -> None:
    """The issue's finding: a full snow pattern used to fire only low_contrast."""
    diagnosis = diagnose(snow(), reference=REFERENCE)
    assert "noise" in diagnosis.faults
    assert not diagnosis.flags["low_contrast"].fired


def test_a_black_screen_reports_its_cause_and_masks_the_symptoms() -> None:
    flags = diagnose(black(), reference=REFERENCE).flags
    assert flags["too_dark"].masked_by == "signal_loss"
    assert flags["frozen"].masked_by == "signal_loss"
    assert not flags["too_dark"].fired and flags["too_dark"].value < 30


def test_no_frames_is_signal_loss_and_nothing_else_is_judged() -> None:
    diagnosis = diagnose([])
    assert diagnosis.flags["signal_loss"].fired
    assert diagnosis.fired == ("signal_loss",) and diagnosis.faults == ("signal_loss",)
    assert diagnosis.picture is None
    assert all(math.isnan(diagnosis.flags[name].value) for name in CHECKS[1:])


def test_without_a_reference_scene_change_and_occlusion_are_not_judged() -> None:
    for frames in (turned_away(), half_occluded()):
        diagnosis = diagnose(frames)
        for name in ("scene_change", "occlusion"):
            assert math.isnan(diagnosis.flags[name].value) and not diagnosis.flags[name].fired


def test_colour_cast_against_the_reference_spares_a_warm_scene() -> None:
    warm = red_cast()
    accepted = reference_picture(warm)  # a scene that is reddish, accepted as it is
    assert diagnose(warm, reference=REFERENCE).flags["colour_cast"].fired
    assert not diagnose(warm, reference=accepted).flags["colour_cast"].fired


def test_a_grey_night_picture_is_not_a_colour_cast() -> None:
    grey = [
        cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        for f in normal_scene()
    ]
    assert not diagnose(grey, reference=REFERENCE).faulty


def test_the_picture_is_a_reference_of_the_configured_size() -> None:
    diagnosis = diagnose(normal_scene(), reference=REFERENCE)
    assert diagnosis.picture is not None
    assert diagnosis.picture.shape == (REFERENCE_SIZE[1], REFERENCE_SIZE[0], 3)
    again = diagnose(normal_scene(seed=0), reference=diagnosis.picture)
    assert not again.flags["scene_change"].fired


def test_which_flags_are_faults_is_configuration() -> None:
    stripes_only = Thresholds(faults=("stripes",))
    diagnosis = diagnose(stripes(), thresholds=stripes_only, reference=REFERENCE)
    assert diagnosis.faults == ("stripes",) and diagnosis.faulty
    assert diagnosis.warnings == ()
    default = diagnose(stripes(), reference=REFERENCE)
    assert not default.faulty and default.warnings == ("stripes",)


def test_frozen_needs_the_configured_run_of_similar_frames() -> None:
    still = frozen()
    moving = normal_scene(5, seed=7)
    short = diagnose(still[:9] + moving).flags["frozen"]
    assert (short.fired, short.value) == (False, 9.0)
    long = diagnose(moving[:2] + still[:10] + moving[2:]).flags["frozen"]
    assert (long.fired, long.value) == (True, 10.0)
    assert diagnose(still[:9], thresholds=Thresholds(frozen_frames=5)).flags["frozen"].fired


def test_a_frozen_picture_with_a_live_osd_clock_is_still_frozen() -> None:
    still = normal_scene(1)[0]
    frames = []
    for i in range(N):
        f = still.copy()
        cv2.putText(f, f"08:00:{i // 8:02d}", (200, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255,) * 3)
        frames.append(f)
    assert diagnose(frames).flags["frozen"].fired


def test_large_and_grey_frames_are_downscaled_and_accepted() -> None:
    big = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in normal_scene()]
    assert not diagnose(big).faulty
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in normal_scene()]
    assert not diagnose(grey).faulty


def test_dark_scene_passes_with_a_lower_configured_threshold() -> None:
    dim = too_dark()
    assert diagnose(dim).flags["too_dark"].fired
    assert not diagnose(dim, thresholds=Thresholds(dark_mean=10)).flags["too_dark"].fired


@pytest.mark.parametrize(
    "frames",
    [
        [np.zeros((H, W, 3), dtype=np.float32)],
        [np.zeros((H, W, 2), dtype=np.uint8)],
        [np.zeros((4, 4, 3), dtype=np.uint8)],
    ],
)
def test_non_image_input_is_rejected(frames: Frames) -> None:
    with pytest.raises(InvalidFrames) as info:
        diagnose(frames)
    assert isinstance(info.value, HealthError)


def test_a_reference_that_is_not_a_picture_is_rejected() -> None:
    with pytest.raises(InvalidFrames, match="reference"):
        diagnose(normal_scene(), reference=np.zeros((90, 160), dtype=np.float32))


def test_impossible_thresholds_are_rejected() -> None:
    with pytest.raises(InvalidThresholds):
        Thresholds(frozen_frames=1)
    with pytest.raises(InvalidThresholds):
        Thresholds(blur_reblur=math.nan)
    with pytest.raises(InvalidThresholds, match="unknown check 'blurr'"):
        Thresholds(faults=("blurr",))
