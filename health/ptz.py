"""云台失控 (PTZ out of control): move a PTZ camera a little and see whether the picture moves.

A diagnosis of one sample cannot tell a pan-tilt head that no longer answers: the picture is
fine, it just never goes where the operator sends it. So, opt-in (`[health.diagnosis]
ptz_check`), the worker samples, sends an ONVIF RelativeMove of a small pan
(`ptz_pan`), waits `ptz_settle_s`, samples again, and moves back by the same amount.

Health never learns ONVIF (DESIGN.md §1, the import rule): the composition (`api`, which alone
may import both `ingest` and `health`) hands the worker a `PtzMover`, as it hands the GB/T
28181 `MediaOpener` (`health.media`).

The measure, `picture_change`: 1 − the correlation of the gradient-magnitude maps of the two
samples' median pictures, after a shift of at most `SWAY` (4 %) of the picture is aligned away:
the measure of 场景变更, with only sway allowed, since a pan *is* a shift. The codec's noise
floor (H.264 re-encoding, grain, the OSD clock, passing cars) is what the median and the
gradient smoothing remove; sway is what the alignment removes (a fine texture, gravel or
brick, decorrelates at a shift of a pixel or two). A pan of ≥ 9 % of the width (0.05 of
ONVIF's generic space ≈ 9°, on a view up to 100° wide) moves every edge past the alignment, so
the maps decorrelate; a head that did not move leaves them as they were. On the 118 clean
clips of the VQD set (bench/bench_ptz.py): a still view 0.009 median, 0.136 at p95, above 0.2
only on an animated synthetic source; a view panned by 9 % ≥ 0.231. A picture without
structure (a blank wall, a black night view) cannot show a move: NaN, not judged, rather than
a false 云台失控.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

# (camera id, relative pan in ONVIF's generic space) → a context that has moved the camera by
# that pan when entered and moves it back by the same amount when left (also on error or
# cancel). Raises `health.errors.PtzUnavailable` when entering cannot move it.
PtzMover = Callable[[uuid.UUID, float], AbstractAsyncContextManager[None]]

# Mean gradient magnitude (grey levels per px, smoothed) below which a picture has too little
# structure to show a move.
MIN_STRUCTURE = 0.5
# The largest shift (share of the width/height) taken for sway rather than a move: a pan of
# 0.05 in ONVIF's generic space (≈ 9°) moves a 100° wide view by ≥ 9 % of its width.
SWAY = 0.04


def _gradient(picture: NDArray[Any]) -> NDArray[np.float32]:
    grey = picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 2.0), np.float32)


def _overlap(
    a: NDArray[np.float32], b: NDArray[np.float32], dx: int, dy: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The parts of `a` and `b` that show the same place when `b` is moved back by (dx, dy)."""
    h, w = a.shape
    return (
        a[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)],
        b[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)],
    )


def picture_change(before: NDArray[Any], after: NDArray[Any], max_sway: float = SWAY) -> float:
    """How much the view changed between two median pictures (`Diagnosis.picture`, 160×90
    BGR): 0 the same view … 1 unrelated; NaN when either has no structure to compare.

    A shift of at most `max_sway` of the picture (a pole swaying in the wind, a loose
    bracket: seconds apart, the view is rarely where it was to the pixel, and a fine texture
    decorrelates at once) is aligned away first; a pan moves the view further than that."""
    if before.shape[:2] != after.shape[:2]:
        after = cv2.resize(after, before.shape[1::-1], interpolation=cv2.INTER_AREA)
    g0, g1 = _gradient(before), _gradient(after)
    if float(g0.mean()) < MIN_STRUCTURE or float(g1.mean()) < MIN_STRUCTURE:
        return math.nan
    h, w = g0.shape
    grey = [
        (p if p.ndim == 2 else cv2.cvtColor(p, cv2.COLOR_BGR2GRAY)).astype(np.float32)
        for p in (before, after)
    ]
    (dx, dy), _ = cv2.phaseCorrelate(grey[0], grey[1], cv2.createHanningWindow((w, h), cv2.CV_32F))
    if abs(dx) <= max_sway * w and abs(dy) <= max_sway * h:
        g0, g1 = _overlap(g0, g1, round(dx), round(dy))
    a = g0 - g0.mean()
    b = g1 - g1.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if denominator <= 1e-6:
        return math.nan
    return float(min(1.0, max(0.0, 1.0 - (a * b).sum() / denominator)))
