"""Video-quality diagnosis on synthetic frame samples, one pattern per fault.

The normal scene is a moving textured picture (blurred colour noise, a sliding grey gradient,
solid shapes, an OSD caption) shifting every frame, like a street scene with traffic. Each
faulty pattern is derived from it, so a flag firing is caused by the fault and not by a
different scene.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from health.diagnosis import CHECKS, Thresholds, diagnose
from health.errors import HealthError, InvalidFrames, InvalidThresholds

W, H, N = 320, 180, 12
Frames = list[NDArray[Any]]


def normal_scene(n: int = N, seed: int = 0) -> Frames:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (H + 80, W + 160, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    texture = cv2.normalize(smooth, np.empty_like(smooth), 0, 255, cv2.NORM_MINMAX)
    xx = np.mgrid[0:H, 0:W][1]
    frames = []
    for i in range(n):
        shifted = texture[20 : 20 + H, 4 * i : 4 * i + W].astype(np.float32)
        gradient = ((xx + 8 * i) % W) / W * 120.0
        frame = np.clip(0.5 * shifted + gradient[..., None], 0, 255).astype(np.uint8)
        cv2.rectangle(frame, (20 + 5 * i, 30), (80 + 5 * i, 90), (30, 200, 60), -1)
        cv2.circle(frame, (220 - 3 * i, 120), 30, (200, 40, 40), -1)
        cv2.putText(frame, "CAM 01", (10, 170), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255,) * 3, 2)
        frames.append(frame)
    return frames


def black() -> Frames:
    rng = np.random.default_rng(1)  # a little sensor noise: real black is never exactly 0
    return [rng.integers(0, 6, (H, W, 3), dtype=np.uint8) for _ in range(N)]


def too_bright() -> Frames:
    return [np.clip(f.astype(np.int16) + 200, 0, 255).astype(np.uint8) for f in normal_scene()]


def flat_grey() -> Frames:
    rng = np.random.default_rng(2)
    return [(118 + rng.integers(0, 3, (H, W, 3))).astype(np.uint8) for _ in range(N)]


def frozen() -> Frames:
    still = normal_scene(1)[0]
    rng = np.random.default_rng(3)
    # Re-encoding jitter of a repeated frame: ±1 grey level on some pixels.
    return [
        np.clip(still.astype(np.int16) + rng.integers(-1, 2, still.shape), 0, 255).astype(np.uint8)
        for _ in range(N)
    ]


def blurred() -> Frames:
    return [cv2.GaussianBlur(f, (0, 0), 5.0) for f in normal_scene()]


def half_occluded() -> Frames:
    frames = normal_scene()
    for f in frames:
        f[:, : W // 2] = 0
    return frames


def red_cast() -> Frames:
    tint = np.array([0.45, 0.45, 1.0])  # BGR: blue and green channels weakened, red boosted
    return [
        np.clip(f * tint + np.array([0, 0, 60]), 0, 255).astype(np.uint8) for f in normal_scene()
    ]


def snow() -> Frames:
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)]


PATTERNS = {
    "too_dark": black,
    "too_bright": too_bright,
    "low_contrast": flat_grey,
    "frozen": frozen,
    "blur": blurred,
    "occlusion": half_occluded,
    "colour_cast": red_cast,
    "noise": snow,
}


def test_normal_moving_scene_raises_no_flag() -> None:
    diagnosis = diagnose(normal_scene())
    assert set(diagnosis.flags) == set(CHECKS)
    assert not diagnosis.faulty, {n: f for n, f in diagnosis.flags.items() if f.fired}
    assert diagnosis.fired == ()
    assert diagnosis.frames == N


@pytest.mark.parametrize("check", list(PATTERNS))
def test_each_fault_pattern_fires_its_flag(check: str) -> None:
    diagnosis = diagnose(PATTERNS[check]())
    flag = diagnosis.flags[check]
    assert flag.fired, flag
    assert diagnosis.faulty
    assert check in diagnosis.fired


@pytest.mark.parametrize("check", list(PATTERNS))
def test_each_flag_stays_quiet_on_the_normal_scene(check: str) -> None:
    flag = diagnose(normal_scene()).flags[check]
    assert not flag.fired, flag
    assert math.isfinite(flag.value)


@pytest.mark.parametrize(
    ("pattern", "others_quiet"),
    [
        (frozen, ["too_dark", "too_bright", "low_contrast", "blur", "occlusion", "noise"]),
        (blurred, ["frozen", "occlusion", "noise", "too_dark", "low_contrast"]),
        (red_cast, ["frozen", "blur", "occlusion", "noise"]),
        (snow, ["frozen", "blur", "occlusion", "colour_cast", "low_contrast"]),
        (half_occluded, ["frozen", "blur", "colour_cast", "noise", "too_dark"]),
    ],
)
def test_a_fault_does_not_drag_unrelated_flags_along(
    pattern: object, others_quiet: list[str]
) -> None:
    assert callable(pattern)
    flags = diagnose(pattern()).flags
    assert [name for name in others_quiet if flags[name].fired] == []


def test_no_frames_is_signal_loss_and_nothing_else_is_judged() -> None:
    diagnosis = diagnose([])
    assert diagnosis.flags["signal_loss"].fired
    assert diagnosis.fired == ("signal_loss",)
    assert diagnosis.faulty
    assert all(math.isnan(diagnosis.flags[name].value) for name in CHECKS[1:])


def test_signal_loss_is_quiet_when_frames_arrive() -> None:
    assert not diagnose(normal_scene(2)).flags["signal_loss"].fired


def test_frozen_needs_the_configured_run_of_similar_frames() -> None:
    still = frozen()
    moving = normal_scene(5, seed=7)
    short = diagnose(still[:9] + moving).flags["frozen"]
    assert (short.fired, short.value) == (False, 9.0)
    long = diagnose(moving[:2] + still[:10] + moving[2:]).flags["frozen"]
    assert (long.fired, long.value) == (True, 10.0)
    assert diagnose(still[:9], thresholds=Thresholds(frozen_frames=5)).flags["frozen"].fired


def test_large_and_grey_frames_are_downscaled_and_accepted() -> None:
    big = [cv2.resize(f, (1920, 1080), interpolation=cv2.INTER_CUBIC) for f in normal_scene()]
    assert not diagnose(big).faulty
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in normal_scene()]
    diagnosis = diagnose(grey)
    assert not diagnosis.faulty
    assert diagnosis.flags["colour_cast"].value == 0.0


def test_dark_scene_passes_with_a_lower_configured_threshold() -> None:
    dim = [(f // 5).astype(np.uint8) for f in normal_scene()]
    assert diagnose(dim).flags["too_dark"].fired
    assert not diagnose(dim, thresholds=Thresholds(dark_mean=20)).flags["too_dark"].fired


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


def test_impossible_thresholds_are_rejected() -> None:
    with pytest.raises(InvalidThresholds):
        Thresholds(frozen_frames=1)
    with pytest.raises(InvalidThresholds):
        Thresholds(blur_laplacian_var=math.nan)
