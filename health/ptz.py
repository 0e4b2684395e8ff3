"""云台失控 (PTZ out of control): move a PTZ camera a little and see whether the picture moves.

A diagnosis of one sample cannot tell a pan-tilt head that no longer answers: the picture is
fine, it just never goes where the operator sends it. So, opt-in (`[health.diagnosis]
ptz_check`), the worker samples, sends an ONVIF RelativeMove of a small pan
(`ptz_pan`), waits `ptz_settle_s`, samples again, and moves back by the same amount.

Health never learns ONVIF (DESIGN.md §1, the import rule): the composition (`api`, which alone
may import both `ingest` and `health`) hands the worker a `PtzMover`, as it hands the GB/T
28181 `MediaOpener` (`health.media`).

The measure, `picture_change`: 1 − the correlation of the gradient-magnitude maps of the two
samples' median pictures, with no shift allowed (a pan *is* a shift). It is the measure of
场景变更, whose threshold was tuned so that H.264 re-encoding, noise and moving objects of one
unchanged view stay far below 0.2 (bench/bench_vqd.py): the codec's noise floor is what the
median and the gradient smoothing remove. A pan of a few degrees moves every edge by more than
the smoothing width, so the maps decorrelate; a head that did not move leaves them as they were.
A picture without structure (a blank wall, a black night view) cannot show a move: NaN, not
judged, rather than a false 云台失控.
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


def _gradient(picture: NDArray[Any]) -> NDArray[np.float32]:
    grey = picture if picture.ndim == 2 else cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 2.0), np.float32)


def picture_change(before: NDArray[Any], after: NDArray[Any]) -> float:
    """How much the view changed between two median pictures (`Diagnosis.picture`, 160×90
    BGR): 0 the same view … 1 unrelated; NaN when either has no structure to compare."""
    if before.shape[:2] != after.shape[:2]:
        after = cv2.resize(after, before.shape[1::-1], interpolation=cv2.INTER_AREA)
    g0, g1 = _gradient(before), _gradient(after)
    if float(g0.mean()) < MIN_STRUCTURE or float(g1.mean()) < MIN_STRUCTURE:
        return math.nan
    a = g0 - g0.mean()
    b = g1 - g1.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if denominator <= 1e-6:
        return math.nan
    return float(max(0.0, 1.0 - (a * b).sum() / denominator))
