"""Frame-level video-quality diagnosis (视频质量诊断) on a short sample of frames.

The last rung of the probe ladder (DESIGN.md §2 "Health and KPIs"): a DESCRIBE proves the
camera talks, only frames prove it shows something useful. Every measure here is a cheap
statistic of small grey (or HSV) frames, because the diagnosis runs on a rotating sample of
thousands of cameras per worker; none needs a model or a reference image of the scene.

Why each measure:

- **signal_loss** — no frames at all. The caller decides the sampling window; an empty sample is
  the one fault no statistic can see, so it is explicit.
- **too_dark / too_bright** — mean grey level. A dead sensor, a camera at night without IR, or a
  lens facing the sun all move the mean to an end of the range; nothing cheaper is as direct.
- **low_contrast** — standard deviation of grey. Fog, a dirty dome, a lost video signal replaced
  by a flat colour screen: the mean may be normal while everything is one level.
- **frozen** — share of pixels changing by at most `frozen_pixel_tolerance` grey levels between
  consecutive frames; a run of `frozen_frames` frames each more than `frozen_similarity`
  similar to the previous one fires. A tolerance of a few levels absorbs re-encoding jitter of a
  repeated frame, while real motion or sensor noise changes far more pixels. A perfectly static
  scene encoded at a very low bit rate can look frozen too; sample frames some seconds apart.
- **blur** — variance of the Laplacian (Pech-Pacheco et al. 2000): focus concentrates energy in
  second derivatives, a defocused or fogged lens removes it. It depends on resolution, so frames
  are brought to at most `work_width` pixels wide, where the defaults were calibrated.
- **occlusion** — share of the largest 8-connected region of blocks that are dark or uniform.
  An object over the lens (cloth, leaves, paint, a hand) is too close to be in focus, so it
  shows as one smooth or dark patch; requiring one *connected* region ignores many small flat
  patches scattered over a normal scene (walls, road surface).
- **colour_cast** — dominance of one hue among sufficiently saturated, not-dark pixels, gated
  by a minimum mean saturation. A failed IR-cut filter or a broken colour channel pushes
  nearly everything to one hue with strong saturation; a scene that merely has one colourful
  object has low overall saturation and stays quiet. Dark pixels are left out because their
  hue is noise.
- **noise** — mean absolute difference between the frame and its 3×3 median: the median
  removes salt-and-pepper and "snow" while keeping edges, so the residual is the impulsive
  high-frequency energy of interference, and small for real edges and texture.

Per-frame measures are combined with the median over the sample, so a single glitched frame (a
keyframe artefact, a passing headlight) does not decide the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from health.errors import InvalidFrames, InvalidThresholds

__all__ = ["CHECKS", "Diagnosis", "Flag", "Thresholds", "diagnose"]

CHECKS = (
    "signal_loss",
    "too_dark",
    "too_bright",
    "low_contrast",
    "frozen",
    "blur",
    "occlusion",
    "colour_cast",
    "noise",
)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Diagnosis thresholds; defaults from DESIGN.md §2, the others calibrated at 320×180.

    `blur_laplacian_var`, `occlusion_*`, `colour_cast_*` and `noise_residual` were set on
    synthetic patterns (see tests/health/test_diagnosis.py): a normal textured scene measures
    Laplacian variance ≈ 390, occlusion share ≈ 0.04, hue share ≈ 0.23 and noise residual ≈ 0.7;
    the faulty patterns land far on the other side (blur ≈ 2–6, half-occluded 0.5, tinted ≥ 0.87,
    snow ≈ 37). Real deployments should tune them per camera model from data.
    """

    dark_mean: float = 30.0
    bright_mean: float = 220.0
    low_contrast_std: float = 25.0
    frozen_frames: int = 10
    frozen_similarity: float = 0.95
    frozen_pixel_tolerance: int = 2
    blur_laplacian_var: float = 50.0
    occlusion_share: float = 0.4
    occlusion_block: int = 16
    occlusion_block_std: float = 2.0
    colour_cast_share: float = 0.6
    colour_cast_min_saturation: float = 80.0
    colour_cast_pixel_saturation: int = 60
    colour_cast_pixel_value: int = 40
    noise_residual: float = 12.0
    work_width: int = 320

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise InvalidThresholds(f"threshold {f.name} must be a finite number ≥ 0")
        if self.frozen_frames < 2:
            raise InvalidThresholds("frozen_frames must be at least 2 (a run needs two frames)")
        if not 0 < self.frozen_similarity <= 1 or not 0 < self.colour_cast_share <= 1:
            raise InvalidThresholds("frozen_similarity and colour_cast_share are shares in (0, 1]")
        if self.occlusion_block < 2 or self.work_width < 32:
            raise InvalidThresholds("occlusion_block must be ≥ 2 px and work_width ≥ 32 px")


@dataclass(frozen=True, slots=True)
class Flag:
    """One check: its measured value and the threshold it was compared with.

    `value` is NaN when the check could not run (no frames). Grey input is accepted and simply
    has no colour, so colour_cast stays quiet on it.
    Checks that fire below their threshold: signal_loss (frame count < 1), too_dark,
    low_contrast, blur. All others fire at or above it.
    """

    name: str
    fired: bool
    value: float
    threshold: float


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict on one frame sample; `faulty` is true when any check fired."""

    flags: dict[str, Flag]
    faulty: bool
    frames: int
    fired: tuple[str, ...] = field(default=())


def _prepare(frames: Sequence[NDArray[Any]], work_width: int) -> list[NDArray[np.uint8]]:
    """Validate, bring to BGR and to at most `work_width` px, all to the first frame's size."""
    out: list[NDArray[np.uint8]] = []
    size: tuple[int, int] | None = None
    for i, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            raise InvalidFrames(f"frame {i} is not a uint8 numpy array; decode it as 8-bit BGR")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.ndim == 3 and frame.shape[2] == 4:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        elif frame.ndim != 3 or frame.shape[2] != 3:
            raise InvalidFrames(f"frame {i} has shape {frame.shape}; expected H×W×3 BGR")
        height, width = frame.shape[:2]
        if height < 8 or width < 8:
            raise InvalidFrames(f"frame {i} is {width}×{height} px; at least 8×8 is needed")
        if size is None:
            scale = min(1.0, work_width / width)
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
        if (width, height) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(frame, dtype=np.uint8))
    return out


def _longest_run(mask: NDArray[np.bool_]) -> int:
    """Length of the longest run of True values, without a Python loop over the sample."""
    if not mask.any():
        return 0
    padded = np.concatenate(([0], mask.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[0::2]).max())


def _occlusion(grey: NDArray[np.uint8], t: Thresholds) -> NDArray[np.float64]:
    """Largest connected dark-or-uniform block region, as a share of each frame's blocks."""
    n, height, width = grey.shape
    b = min(t.occlusion_block, height, width)
    bh, bw = height // b, width // b
    blocks = grey[:, : bh * b, : bw * b].reshape(n, bh, b, bw, b).astype(np.float32)
    mean = blocks.mean(axis=(2, 4))
    std = blocks.std(axis=(2, 4))
    masks = ((mean < t.dark_mean) | (std < t.occlusion_block_std)).astype(np.uint8)
    shares = np.zeros(n)
    for i, mask in enumerate(masks):
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count > 1:
            shares[i] = stats[1:, cv2.CC_STAT_AREA].max() / mask.size
    return shares


def _colour_cast(frame: NDArray[np.uint8], t: Thresholds) -> tuple[float, float]:
    """(share of the dominant 30° hue bin among saturated pixels, mean saturation of lit ones)."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    lit = val >= t.colour_cast_pixel_value
    if not lit.any():
        return 0.0, 0.0
    coloured = lit & (sat >= t.colour_cast_pixel_saturation)
    mean_sat = float(sat[lit].mean())
    total = int(coloured.sum())
    if total == 0:
        return 0.0, mean_sat
    # OpenCV hue is 0..179 (2° steps); shift by 7 so red (which wraps at 0/180) is one bin.
    bins = ((hue[coloured].astype(np.int16) + 7) % 180) // 15
    return float(np.bincount(bins, minlength=12).max() / total), mean_sat


def diagnose(frames: Sequence[NDArray[Any]], *, thresholds: Thresholds | None = None) -> Diagnosis:
    """Run every check on `frames` (8-bit BGR, in capture order) and return all their flags.

    The element type is loose because OpenCV's stubs type every result as a generic array; the
    uint8 dtype is checked at run time instead (`InvalidFrames`).

    Every check is always reported, fired or not, so a dashboard can show how close a camera is
    to a threshold. Raises `InvalidFrames` only for input that is not an image at all.
    """
    t = thresholds if thresholds is not None else Thresholds()
    bgr = _prepare(frames, t.work_width)
    n = len(bgr)
    flags: dict[str, Flag] = {}

    def put(name: str, value: float, threshold: float, *, below: bool) -> None:
        # NaN (check not run) compares false both ways, so it never fires.
        fired = value < threshold if below else value >= threshold
        flags[name] = Flag(name, bool(fired), float(value), float(threshold))

    put("signal_loss", float(n), 1.0, below=True)
    if n == 0:
        for name in CHECKS[1:]:
            threshold = {
                "too_dark": t.dark_mean,
                "too_bright": t.bright_mean,
                "low_contrast": t.low_contrast_std,
                "frozen": float(t.frozen_frames),
                "blur": t.blur_laplacian_var,
                "occlusion": t.occlusion_share,
                "colour_cast": t.colour_cast_share,
                "noise": t.noise_residual,
            }[name]
            put(name, math.nan, threshold, below=False)
        return _verdict(flags, n)

    grey: NDArray[np.uint8] = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in bgr]).astype(
        np.uint8, copy=False
    )
    means = grey.mean(axis=(1, 2))
    stds = grey.std(axis=(1, 2))
    put("too_dark", float(np.median(means)), t.dark_mean, below=True)
    put("too_bright", float(np.median(means)), t.bright_mean, below=False)
    put("low_contrast", float(np.median(stds)), t.low_contrast_std, below=True)

    as_int = grey.astype(np.int16)
    steady = np.abs(np.diff(as_int, axis=0)) <= t.frozen_pixel_tolerance
    similar = steady.mean(axis=(1, 2)) > t.frozen_similarity
    run = _longest_run(similar)
    put("frozen", float(run + 1 if run else 1), float(t.frozen_frames), below=False)

    laplacian = [float(cv2.Laplacian(g, cv2.CV_64F).var()) for g in grey]
    put("blur", float(np.median(laplacian)), t.blur_laplacian_var, below=True)

    put("occlusion", float(np.median(_occlusion(grey, t))), t.occlusion_share, below=False)

    casts = [_colour_cast(f, t) for f in bgr]
    share = float(np.median([c[0] for c in casts]))
    saturation = float(np.median([c[1] for c in casts]))
    put("colour_cast", share, t.colour_cast_share, below=False)
    if flags["colour_cast"].fired and saturation < t.colour_cast_min_saturation:
        flags["colour_cast"] = Flag("colour_cast", False, share, t.colour_cast_share)

    residual = [
        float(np.abs(as_int[i] - cv2.medianBlur(grey[i], 3).astype(np.int16)).mean())
        for i in range(n)
    ]
    put("noise", float(np.median(residual)), t.noise_residual, below=False)
    return _verdict(flags, n)


def _verdict(flags: dict[str, Flag], n: int) -> Diagnosis:
    fired = tuple(name for name in CHECKS if flags[name].fired)
    return Diagnosis(flags=flags, faulty=bool(fired), frames=n, fired=fired)
