"""The scene reference as stored: the accepted picture with the baseline kept inside it, and
the checks judged against a camera's own normal once it has one."""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from health.diagnosis import Baseline, Thresholds, diagnose, reference_picture
from health.reference import decode_reference, encode_reference

from .test_diagnosis import H, W, flat_grey, noisy, normal_scene, stripes

Frames = list[NDArray[Any]]


def test_the_baseline_travels_inside_the_reference_png() -> None:
    accepted = diagnose(normal_scene())
    assert accepted.picture is not None and accepted.baseline is not None
    png = encode_reference(accepted.picture, accepted.baseline)
    assert png is not None
    picture, baseline = decode_reference(png)
    assert picture is not None and np.array_equal(picture, accepted.picture)
    assert baseline == accepted.baseline
    # Any PNG reader still sees the picture.
    plain = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert plain is not None
    assert np.array_equal(plain, accepted.picture)


def test_a_reference_stored_before_baselines_or_damaged_loses_nothing_else() -> None:
    picture = reference_picture(normal_scene())
    ok, old = cv2.imencode(".png", picture)
    assert ok
    got, baseline = decode_reference(old.tobytes())
    assert got is not None and np.array_equal(got, picture) and baseline is None
    assert decode_reference(None) == (None, None)
    assert decode_reference(b"not a picture") == (None, None)
    # A damaged baseline text: the picture stays, the absolute bars apply.
    png = encode_reference(picture, Baseline(1.0, 0.5, 40.0))
    assert png is not None
    broken = png.replace(b'"noise"', b'"nois!"')
    got, baseline = decode_reference(broken)
    assert got is not None and baseline is None
    assert Baseline.from_dict({"noise": -1, "stripes": 1, "contrast": 1}) is None
    assert Baseline.from_dict("noise") is None


def grainy(sigma: float, seed: int) -> Frames:
    """The normal scene with fine temporal grain everywhere: what a fine-textured wall under a
    sub-pixel sway, or a sensor's own noise, leaves on a camera whose picture is fine."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8)
        for f in normal_scene(seed=0)
    ]


def test_noise_is_judged_as_change_from_the_cameras_own_normal() -> None:
    reference = reference_picture(normal_scene())
    accepted = diagnose(grainy(3.5, 1), reference=reference)
    assert accepted.baseline is not None
    later = grainy(3.5, 2)  # the same camera, another day: as grainy as when accepted
    alone = diagnose(later, reference=reference).flags["noise"]
    assert alone.fired  # past the absolute bar
    judged = diagnose(later, reference=reference, baseline=accepted.baseline).flags["noise"]
    assert not judged.fired and judged.threshold > alone.threshold
    # Snow on that camera is still snow.
    snowed = diagnose(noisy(), reference=reference, baseline=accepted.baseline)
    assert "noise" in snowed.faults


def test_stripes_and_contrast_are_judged_against_the_baseline() -> None:
    reference = reference_picture(normal_scene())
    # A scene whose rows change periodically by nature (a fence, a fractal test pattern).
    banded = diagnose(stripes(), reference=reference)
    assert banded.baseline is not None and "stripes" in banded.fired
    again = diagnose(stripes(), reference=reference, baseline=banded.baseline)
    assert "stripes" not in again.fired
    # A foggy valley is low-contrast every day; only a further drop is a change.
    foggy = flat_grey()
    base = diagnose(foggy).baseline
    assert base is not None and "low_contrast" in diagnose(foggy, reference=reference).fired
    assert "low_contrast" not in diagnose(foggy, reference=reference, baseline=base).fired
    flatter = [(118 + 0.3 * (f.astype(np.float32) - 118)).astype(np.uint8) for f in foggy]
    assert "low_contrast" in diagnose(flatter, reference=reference, baseline=base).fired


def test_without_a_reference_the_absolute_bars_alone_apply() -> None:
    """A baseline belongs to a reference: the very first diagnosis has neither."""
    base = diagnose(grainy(3.5, 1)).baseline
    assert base is not None
    assert diagnose(grainy(3.5, 2), baseline=base).flags["noise"].fired


def test_frozen_is_a_change_in_one_place_not_little_change() -> None:
    """A frozen feed with a live OSD clock changes the same few blocks; a low-texture street
    whose only motion is one small car changes as few blocks per pair, across the view."""
    yy = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    sky = (np.array([120, 90, 60]) + np.array([80, 80, 90]) * yy) * np.ones((H, W, 3))
    cv2.rectangle(sky, (30, 70), (110, H), (60, 60, 65), -1)
    cv2.rectangle(sky, (180, 50), (260, H), (50, 50, 55), -1)
    background = sky.astype(np.uint8)

    def street(car: bool) -> Frames:
        rng = np.random.default_rng(0)
        frames = []
        for i in range(20):
            f = background.copy()
            if car:
                # A small car with its lights on, far away: 6 × 4 px at 320 px.
                cv2.rectangle(f, (10 + 10 * i, 160), (16 + 10 * i, 164), (220, 220, 230), -1)
            cv2.putText(
                f, f"08:00:{i // 15:02d}", (200, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255,) * 3
            )
            noise = rng.integers(-1, 2, f.shape)
            frames.append(np.clip(f.astype(np.int16) + noise, 0, 255).astype(np.uint8))
        return frames

    everywhere = dataclasses.replace(Thresholds(), frozen_region_share=1.0)
    assert diagnose(street(car=True), thresholds=everywhere).flags["frozen"].fired
    assert not diagnose(street(car=True)).flags["frozen"].fired
    assert diagnose(street(car=False)).flags["frozen"].fired
