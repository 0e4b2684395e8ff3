"""The 云台失控 measure on synthetic pictures: sway is not a move, a pan is, a blank view is
not judged."""

from __future__ import annotations

import math

import cv2
import numpy as np

from health.diagnosis import Thresholds
from health.ptz import picture_change

W, H = 160, 90


def _view(x0: int, width: int = W) -> np.ndarray:
    """A textured scene twice the view's width, seen from column `x0`: fine grain and a few
    buildings' edges, like gravel beside a road."""
    rng = np.random.default_rng(3)
    scene = cv2.GaussianBlur(rng.integers(0, 256, (H, 2 * width, 3), dtype=np.uint8), (0, 0), 1.2)
    for i in range(0, 2 * width, 37):
        scene[20:70, i : i + 9] = (40 + i % 180, 90, 160)
    return np.ascontiguousarray(scene[:, x0 : x0 + width])


def test_a_still_or_swaying_view_did_not_move_and_a_panned_one_did() -> None:
    bar = Thresholds().ptz_min_change
    assert picture_change(_view(40), _view(40)) < 0.01
    for sway in (1, 2, 4):  # px at 160: ≤ 4 % of the width, aligned away
        assert picture_change(_view(40), _view(40 + sway)) < bar
    for pan in (15, 24, 48):  # 9 %, 15 %, 30 % of the width
        assert picture_change(_view(40), _view(40 + pan)) >= bar


def test_a_view_without_structure_is_not_judged() -> None:
    flat = np.full((H, W, 3), 128, np.uint8)
    assert math.isnan(picture_change(flat, flat))
    assert math.isnan(picture_change(_view(40), flat))
