"""Frame-level video-quality diagnosis (视频质量诊断) on a short sample of frames.

The last rung of the probe ladder (DESIGN.md §2 "Health and KPIs"): a DESCRIBE proves the
camera talks, only frames prove it shows something useful. The checks are the list that VQD
products and 雪亮 tenders name; every one is a cheap vectorised statistic of small grey frames,
because a worker diagnoses thousands of cameras a day on two cores, and each is reported with
its value, its threshold (`[health.diagnosis]`) and its Chinese label (`LABELS`).

Why each measure (frames are first brought to at most `work_width` px wide, where the
thresholds were tuned on the labelled clip set of `bench/bench_vqd.py`):

- **signal_loss** 信号丢失 — no frames at all, or frames that are a "no video" screen: nearly
  every pixel within a few levels of one colour that is black or saturated blue (what DVRs,
  encoders and decoders show when the analogue input is lost). Value: share of such frames (1
  when no frame came). Everything else is masked: a blue screen is not "colour cast".
- **frozen** 画面冻结 — a run of `frozen_frames` frames, each more than `frozen_similarity`
  of its pixels within `frozen_pixel_tolerance` levels of the previous one. A tolerance of a few
  levels absorbs re-encoding jitter of a repeated frame; a live OSD clock is far below 5 %.
- **too_dark / too_bright** 亮度异常 — median of the frames' mean grey level.
- **low_contrast** 对比度异常 — median of the frames' grey standard deviation (fog, a dirty
  dome, a flat picture).
- **colour_cast** 偏色 — with a reference: the CIELAB chroma shift, place by place against
  the accepted picture, that at least 75 % of the lit view shows. A failed IR-cut filter or a
  dead colour channel tints every surface; a scene whose colours drift (a sky at dusk, a lit
  advertisement) tints part of it while walls and road keep theirs. It also needs the picture's
  own chroma offset D ≥ `colour_cast_offset`, so a grey IR night picture is never a cast.
  Without a reference: the cast factor of CIELAB chroma (Xu et al.), the mean (a, b) offset `D`
  of the lit pixels against their chroma spread `M`; fires when D ≥ `colour_cast_offset` and
  K = D / M ≥ `colour_cast_factor`.
- **blur** 清晰度异常 — the re-blur measure of Crété-Roffet et al. (2007): blur the picture
  again and see how much of its neighbour differences survive. A sharp picture loses much, a
  defocused one little. It is a ratio, so unlike the variance of the Laplacian it does not
  call a dim, flat or low-texture scene blurred; 0 sharp … 1 fully blurred. With a reference
  it also fires when the sample lost ≥ `blur_reference_loss` of re-blur against the reference
  measured alike (small median pictures), and is past `blur_reference_floor`: a scene that was
  soft when accepted never reaches the absolute bar when its focus slips.
- **noise** 雪花/噪声 — temporal: the median pixel change between consecutive frames after the
  global shift (camera sway, a pan) is compensated and a global brightness change removed.
  Snow and noise are new every frame; after H.264 they turn into blotches that a spatial
  estimate (median residual, Immerkær) takes for texture, but they still change every frame,
  while in a live scene most pixels do not. While the view sways, the bar is
  `max(noise_level, noise_texture_slope × mean gradient of that flattest part)`: in a view
  textured everywhere (foliage, gravel, a panned photograph) aligning a sub-pixel sway leaves
  a residual that grows with the texture; the reported threshold is that bar.
- **stripes** 条纹干扰 — rolling horizontal bands (mains-frequency interference in analogue
  links): the strongest periodic component (periods of 3 … h/3 rows) of the change of the
  frame's row profile between consecutive frames. Rolling bands move between frames; the
  scene's own horizontal structures (bricks, stairs) stand still and cancel, and a moving car
  is a bump spread over many periods.
- **shake** 画面抖动 — global displacement between consecutive frames by phase correlation; a
  pan moves steadily, a shaking mount jumps back and forth. Value: RMS of the displacements
  around their median, in px at 320 px width, over pairs the correlation is sure of.
- **occlusion** 遮挡 — the largest connected region of blocks that had texture in the reference
  picture and lost it (flat, or much darker than the rest of the view became). Without a
  reference it is not judged: a flat or dark region alone is as often a sky, a wall, the
  black bars of a test pattern or a night scene as a cover (the old dark/uniform-block rule
  fired on every black and night picture).
- **scene_change** 场景变更 — 1 − the correlation of gradient-magnitude maps of the reference
  picture and of this sample's median picture, after a small shift (≤ `scene_max_shift` of the
  width: sway, a loose bracket) is allowed. Gradient maps ignore brightness and colour, so
  day/night and a cast do not count as a moved camera.
- **ptz_stuck** 云台失控 — not judged from one sample: opt-in (`ptz_check`), the worker pans a
  PTZ camera by `ptz_pan` between two samples and back (`health.ptz`), and `with_ptz` adds
  the flag, firing when the view changed less than `ptz_min_change` (the scene-change measure
  without a shift allowed, between the two median pictures). Not in `CHECKS` (the frame
  checks); in `KNOWN_CHECKS`, so `faults` may list it.

Per-frame measures are combined with the median over the sample, so a single glitched frame (a
keyframe artefact, a passing headlight) does not decide the verdict. Some flags explain others
(`MASKS`): a black screen is also dark, flat and "blurred"; those are reported as masked (value
kept, `masked_by` set) instead of firing, so an operator sees the cause, not its symptoms.
Which fired flags are faults (make a camera `degraded`) and which are warnings is
configuration (`Thresholds.faults`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from health.errors import InvalidFrames, InvalidThresholds

__all__ = [
    "CHECKS",
    "DEFAULT_FAULTS",
    "KNOWN_CHECKS",
    "LABELS",
    "MASKS",
    "MUTUAL",
    "PTZ_CHECK",
    "REFERENCE_SIZE",
    "Baseline",
    "Diagnosis",
    "Flag",
    "Thresholds",
    "diagnose",
    "reference_picture",
    "with_ptz",
]

CHECKS: Final = (
    "signal_loss",
    "frozen",
    "too_dark",
    "too_bright",
    "low_contrast",
    "colour_cast",
    "blur",
    "noise",
    "stripes",
    "shake",
    "occlusion",
    "scene_change",
)

LABELS: Final[dict[str, str]] = {
    "signal_loss": "信号丢失",
    "frozen": "画面冻结",
    "too_dark": "亮度异常（过暗）",
    "too_bright": "亮度异常（过亮）",
    "low_contrast": "对比度异常",
    "colour_cast": "偏色",
    "blur": "清晰度异常",
    "noise": "雪花/噪声",
    "stripes": "条纹干扰",
    "shake": "画面抖动",
    "occlusion": "遮挡",
    "scene_change": "场景变更",
    "ptz_stuck": "云台失控",
}

# 云台失控 is not judged from one sample of frames: the worker moves a PTZ camera between two
# samples (opt-in, `ptz_check`; see `health.ptz`) and adds this flag with `with_ptz`.
PTZ_CHECK: Final = "ptz_stuck"
KNOWN_CHECKS: Final = (*CHECKS, PTZ_CHECK)

# Checks that fire when their value is *below* the threshold; all others at or above it.
BELOW: Final = frozenset({"too_dark", "low_contrast", PTZ_CHECK})

# The default: what makes a camera degraded; the rest are warnings.
DEFAULT_FAULTS: Final = (
    "signal_loss",
    "frozen",
    "noise",
    "occlusion",
    "colour_cast",
    "blur",
)

# flag → flags it explains (the explained ones are masked when it fires). Order matters: a
# flag masked by an earlier one does not mask others.
MASKS: Final[dict[str, tuple[str, ...]]] = {
    "signal_loss": KNOWN_CHECKS[1:],
    "too_dark": ("low_contrast", "blur", "colour_cast", "occlusion", "scene_change", "noise"),
    "too_bright": ("low_contrast", "blur", "colour_cast", "occlusion", "scene_change"),
    # A frozen picture cannot show a move: the encoder, not the pan-tilt head, is at fault.
    "frozen": ("shake", "stripes", "noise", PTZ_CHECK),
    "colour_cast": ("low_contrast",),
    "low_contrast": ("blur", "occlusion", "scene_change"),
    "shake": ("noise", "blur", "scene_change", "stripes"),
    "stripes": ("noise", "blur"),
    "noise": ("shake", "blur", "occlusion", "scene_change", "low_contrast"),
    # Another view is not blurred because it is less sharp than the reference.
    "scene_change": ("occlusion", "colour_cast", "blur"),
    "occlusion": ("colour_cast", "blur"),
}
# Pairs that each explain the other: the one further past its threshold is taken as the cause.
# (Stripes always explain noise: noise averages out of a row profile, bands do not.)
MUTUAL: Final = (("noise", "shake"),)

# The reference picture kept for scene_change / occlusion: small grey, aspect 16:9.
REFERENCE_SIZE: Final = (160, 90)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Diagnosis thresholds (`[health.diagnosis]`); tuned at 320 px width on the training split
    of bench/bench_vqd.py, DESIGN.md §2 values where it gives them (mean 30/220, std 25,
    frozen run of 10 frames > 95 % similar).

    `faults` lists the checks that make a camera degraded; any other fired check is a warning.
    """

    dark_mean: float = 30.0
    bright_mean: float = 220.0
    low_contrast_std: float = 25.0
    frozen_frames: int = 10
    frozen_block_change: float = 6.0
    frozen_moving_share: float = 0.005
    frozen_region_share: float = 0.01
    signal_loss_share: float = 0.5
    signal_loss_black: float = 25.0
    signal_loss_uniform: float = 0.9
    signal_loss_tolerance: int = 6
    colour_cast_offset: float = 12.0
    colour_cast_factor: float = 1.5
    colour_cast_pixel_value: int = 40
    blur_reblur: float = 0.385
    blur_reference_loss: float = 0.05
    blur_reference_floor: float = 0.2
    noise_level: float = 2.2
    noise_flat_share: float = 0.2
    noise_texture_slope: float = 0.2
    stripes_amplitude: float = 3.5
    shake_px: float = 1.2
    shake_min_response: float = 0.1
    baseline_noise_ratio: float = 1.4
    baseline_noise_margin: float = 1.0
    baseline_stripes_ratio: float = 2.5
    baseline_contrast_ratio: float = 0.7
    occlusion_share: float = 0.12
    occlusion_block: int = 10
    occlusion_block_std: float = 3.0
    occlusion_texture_loss: float = 0.35
    scene_change: float = 0.2
    scene_max_shift: float = 0.1
    work_width: int = 320
    # 云台失控 (opt-in: moving a camera turns it away from what an operator may be watching,
    # and interrupts a preset tour, so a deployment decides; see `health.ptz`).
    ptz_check: bool = False
    ptz_min_change: float = 0.2
    ptz_pan: float = 0.05
    ptz_settle_s: float = 2.0
    faults: tuple[str, ...] = DEFAULT_FAULTS

    def __post_init__(self) -> None:
        if not isinstance(self.ptz_check, bool):
            raise InvalidThresholds("ptz_check must be true or false")
        for f in fields(self):
            if f.name in ("faults", "ptz_check"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise InvalidThresholds(f"threshold {f.name} must be a finite number ≥ 0")
        if self.frozen_frames < 2:
            raise InvalidThresholds("frozen_frames must be at least 2 (a run needs two frames)")
        for name in (
            "frozen_moving_share",
            "frozen_region_share",
            "signal_loss_share",
            "signal_loss_uniform",
            "noise_flat_share",
        ):
            if not 0 < getattr(self, name) <= 1:
                raise InvalidThresholds(f"{name} is a share in (0, 1]")
        if self.frozen_region_share < self.frozen_moving_share:
            raise InvalidThresholds(
                "frozen_region_share must be ≥ frozen_moving_share (a run's place holds its pairs)"
            )
        if not 0 < self.scene_max_shift < 0.5:
            raise InvalidThresholds("scene_max_shift is a share of the width in (0, 0.5)")
        if not 0 < self.ptz_pan <= 0.5:
            raise InvalidThresholds(
                "ptz_pan is a relative pan in ONVIF's generic space, in (0, 0.5]: a small move"
            )
        if self.ptz_settle_s > 10:
            raise InvalidThresholds("ptz_settle_s must be at most 10 s (a diagnosis holds a lease)")
        if self.occlusion_block < 4 or self.work_width < 64:
            raise InvalidThresholds("occlusion_block must be ≥ 4 px and work_width ≥ 64 px")
        unknown = [name for name in self.faults if name not in KNOWN_CHECKS]
        if unknown:
            raise InvalidThresholds(
                f"faults: unknown check {unknown[0]!r}; known ones: {', '.join(KNOWN_CHECKS)}"
            )


@dataclass(frozen=True, slots=True)
class Flag:
    """One check: its measured value, the threshold it was compared with, and the verdict.

    `value` is NaN when the check could not run (no frames, or no reference picture for
    scene_change). `fired` is the verdict after masking: a value past its threshold that
    another fired flag explains keeps `fired` false and names that flag in `masked_by`.
    `fault` is `fired` and the check is listed in `Thresholds.faults`.
    """

    name: str
    fired: bool
    value: float
    threshold: float
    fault: bool = False
    masked_by: str | None = None

    @property
    def label(self) -> str:
        return LABELS[self.name]


@dataclass(frozen=True, slots=True)
class Baseline:
    """A camera's own normal, measured on the sample its scene reference came from and kept
    with that reference (`health.reference`): what separates a fault from the nature of a
    scene. A fine-textured wall leaves a temporal residual that a flat street would only show
    under snow; a fractal test pattern or a fence scrolls a periodic row structure; a foggy
    valley is low-contrast every day. Against its baseline a camera is judged on *change*;
    the absolute bars stay the floor (and apply alone when there is no reference yet).
    """

    noise: float  # temporal residual in the flattest part (the noise value)
    stripes: float  # strongest periodic row-profile change
    contrast: float  # median grey standard deviation

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Baseline | None:
        """The baseline from its stored form; None when it is missing or not one (an
        older reference, a damaged record): then the absolute bars alone apply."""
        if not isinstance(data, dict):
            return None
        try:
            values = {f.name: float(data[f.name]) for f in fields(cls)}
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(v) and v >= 0 for v in values.values()):
            return None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict on one frame sample.

    `faulty` is true when a fault flag fired; `fired` lists every fired flag (faults and
    warnings), `faults` only the faults. `picture` is this sample's median grey picture at
    `REFERENCE_SIZE` (None without frames): the scene reference to keep when a technician
    accepts it, or when it is the first clean diagnosis; `baseline` this sample's statistics,
    kept with it.
    """

    flags: dict[str, Flag]
    faulty: bool
    frames: int
    fired: tuple[str, ...] = field(default=())
    faults: tuple[str, ...] = field(default=())
    picture: NDArray[np.uint8] | None = None
    baseline: Baseline | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(name for name in self.fired if name not in self.faults)


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
        if height < 16 or width < 16:
            raise InvalidFrames(f"frame {i} is {width}×{height} px; at least 16×16 is needed")
        if size is None:
            scale = min(1.0, work_width / width)
            size = (max(16, round(width * scale)), max(16, round(height * scale)))
        if (width, height) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(frame, dtype=np.uint8))
    return out


def _moving_blocks(grey: NDArray[np.uint8], tolerance: float) -> NDArray[np.bool_]:
    """Per consecutive pair, which 8×8 blocks changed: a block changed when its mean absolute
    difference exceeds `tolerance` levels. A keyframe re-encoding a repeated picture moves
    many pixels by a level or two (no block), a passing car or a pedestrian moves a few blocks
    by tens of levels."""
    n, h, w = grey.shape
    bh, bw = h // 8, w // 8
    moving = np.zeros((max(n - 1, 0), bh, bw), dtype=bool)
    for i in range(1, n):
        # |difference| of uint8 fits uint8; an area resize by exactly 8 is the block mean.
        diff = cv2.absdiff(grey[i, : bh * 8, : bw * 8], grey[i - 1, : bh * 8, : bw * 8])
        blocks = cv2.resize(diff.astype(np.float32), (bw, bh), interpolation=cv2.INTER_AREA)
        moving[i - 1] = blocks > tolerance
    return moving


def _frozen_run(moving: NDArray[np.bool_], t: Thresholds) -> int:
    """Longest run of consecutive pairs in which (almost) nothing changed *in the same
    place*: each pair changes at most `frozen_moving_share` of the blocks, and all the pairs
    of the run together at most `frozen_region_share`. A frozen feed with a burnt-in OSD clock
    changes the same few blocks once a second; a low-texture street whose only motion is one
    small car changes as few blocks per pair, but the car carries them across the view."""
    if len(moving) == 0:
        return 0
    size = moving[0].size
    each = moving.reshape(len(moving), -1).sum(axis=1) <= t.frozen_moving_share * size
    limit = t.frozen_region_share * size
    best = run = 0
    union = np.zeros(moving[0].shape, dtype=bool)
    for i in range(len(moving)):
        if not each[i]:
            run = 0
            continue
        if run == 0:
            union = moving[i].copy()
        else:
            union |= moving[i]
            if np.count_nonzero(union) > limit:
                # Restart at the latest pairs whose changes stay in one small place.
                j, union = i, moving[i].copy()
                while j > i - run and np.count_nonzero(union | moving[j - 1]) <= limit:
                    j -= 1
                    union |= moving[j]
                run = i - j
        run += 1
        best = max(best, run)
    return best


def _signal_loss(thumbs: NDArray[np.uint8], t: Thresholds) -> float:
    """Share of frames that are a black or blue "no video" screen (on the small pictures: a
    uniform screen is uniform at any size)."""
    n = len(thumbs)
    flat = thumbs.reshape(n, -1, 3)
    # Only dark or blue frames can be such a screen; a cheap mean spares the rest.
    means = flat[:, ::16].mean(axis=1)
    candidates = (means.mean(axis=1) < 2 * t.signal_loss_black) | (
        means[:, 0] > np.maximum(means[:, 1], means[:, 2]) + 40
    )
    if not candidates.any():
        return 0.0
    flat = flat[candidates]
    median = np.median(flat[:, ::7], axis=1)  # (n, 3) B, G, R
    near = np.abs(flat.astype(np.int16) - median[:, None, :].astype(np.int16)).max(axis=2)
    uniform = (near <= t.signal_loss_tolerance).mean(axis=1) >= t.signal_loss_uniform
    b, g, r = median[:, 0], median[:, 1], median[:, 2]
    blue = (b >= 100) & (b >= 2 * np.maximum(g, r))
    black = median.mean(axis=1) < t.signal_loss_black
    return float((uniform & (blue | black)).sum() / n)


def _chroma(
    picture: NDArray[np.uint8], t: Thresholds, keep: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.float64], float]:
    """Mean CIELAB (a, b) offset of the lit (and kept) pixels of a BGR picture, and the cast
    factor K = |mean| / spread (Xu et al.)."""
    lab = cv2.cvtColor(picture, cv2.COLOR_BGR2Lab)
    lit = lab[..., 0] >= t.colour_cast_pixel_value
    if keep is not None:
        lit &= keep
    if lit.sum() < 64:
        return np.zeros(2), 0.0
    a = lab[..., 1][lit].astype(np.float32) - 128.0
    b = lab[..., 2][lit].astype(np.float32) - 128.0
    centre = np.array([float(a.mean()), float(b.mean())])
    spread = float(math.hypot(float(a.std()), float(b.std())))
    return centre, float(np.hypot(*centre)) / max(spread, 1.0)


def _reblur(grey: NDArray[np.uint8], floor: float = 6.0) -> NDArray[np.float64]:
    """Crété-Roffet blur per frame (0 sharp … 1 blurred), vertical and horizontal, the worse.

    Only neighbour differences above `floor` levels count: sensor noise is added after the
    optics, so a defocused camera still shows sharp grain, which in a low-texture scene would
    otherwise outweigh its few soft edges.
    """
    f = grey.astype(np.float32)
    n = len(f)
    out = np.empty(n)
    for i in range(n):
        worst = 0.0
        for axis, kernel in ((0, (1, 9)), (1, (9, 1))):
            blurred = cv2.blur(f[i], kernel)
            d_f = np.abs(np.diff(f[i], axis=axis))
            d_b = np.abs(np.diff(blurred, axis=axis))
            edges = d_f > floor
            s_f = float(d_f[edges].sum())
            if s_f <= 0:
                worst = 1.0
                continue
            s_v = float(np.maximum(0.0, d_f - d_b)[edges].sum())
            worst = max(worst, (s_f - s_v) / s_f)
        out[i] = worst
    return out


def _shifts(small: NDArray[np.float32]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Global shift (dx, dy) of each frame against the previous one, and the correlation's
    confidence: phase correlation of the four quadrants, median of their shifts, so one
    moving object (a bus filling a quadrant) cannot pass for the camera moving."""
    n, h, w = small.shape
    th, tw = h // 2, w // 2
    window = cv2.createHanningWindow((tw, th), cv2.CV_32F)
    shifts = np.zeros((max(n - 1, 0), 2))
    response = np.zeros(max(n - 1, 0))
    tiles = [(y, x) for y in (0, th) for x in (0, tw)]
    for i in range(1, n):
        found = []
        sure = []
        for y, x in tiles:
            (dx, dy), resp = cv2.phaseCorrelate(
                small[i - 1, y : y + th, x : x + tw], small[i, y : y + th, x : x + tw], window
            )
            found.append((dx, dy))
            sure.append(resp)
        shifts[i - 1] = np.median(np.array(found), axis=0)
        response[i - 1] = float(np.median(sure))
    return shifts, response


def _aligned_pair(
    prev: NDArray[np.float32], cur: NDArray[np.float32], dx: int, dy: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The overlap of two frames after `cur` is moved back by (dx, dy)."""
    h, w = prev.shape
    dx, dy = max(-w // 3, min(w // 3, dx)), max(-h // 3, min(h // 3, dy))
    p = prev[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    c = cur[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
    return p, c


def _noise_and_stripes(
    grey: NDArray[np.uint8], shifts: NDArray[np.float64], t: Thresholds
) -> tuple[float, float, float]:
    """(temporal noise in the flattest part of the scene, strongest periodic row-profile
    change, mean gradient of that flattest part), medians over consecutive pairs; `shifts` are
    in px of `grey`.

    Noise is the mean absolute change (clipped at 16, so a passing car adds little) between
    aligned consecutive frames, over the `noise_flat_share` of pixels where the sample's mean
    picture is flattest: there a live scene barely changes (its change is at edges: motion,
    sub-pixel sway), while snow and noise change it every frame.
    """
    n = len(grey)
    if n < 2:
        return 0.0, 0.0, 0.0
    frames = grey.astype(np.float32)
    mean = frames.mean(axis=0)
    gradient = np.abs(cv2.Sobel(mean, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(mean, cv2.CV_32F, 0, 1))
    gradient = cv2.blur(gradient, (5, 5))
    flat = gradient <= np.quantile(gradient[::2, ::2], t.noise_flat_share)
    noise = np.zeros(n - 1)
    h, w = frames.shape[1:]
    for i in range(1, n):
        sx, sy = (float(v) for v in shifts[i - 1])
        # Sub-pixel: a slow pan or sway moves by fractions of a pixel, and the rounding
        # residual on texture would read as noise.
        moved = cv2.warpAffine(
            frames[i - 1],
            np.array([[1, 0, sx], [0, 1, sy]], dtype=np.float32),
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        margin_y = min(math.ceil(abs(sy)), h // 3)
        margin_x = min(math.ceil(abs(sx)), w // 3)
        p = np.asarray(moved, np.float32)[margin_y : h - margin_y, margin_x : w - margin_x]
        c = frames[i, margin_y : h - margin_y, margin_x : w - margin_x]
        mask = flat[margin_y : h - margin_y, margin_x : w - margin_x]
        delta = c - p
        delta -= float(np.median(delta[::4, ::4]))
        chosen = np.minimum(np.abs(delta), 16.0)[mask]
        noise[i - 1] = float(chosen.mean()) if chosen.size else 0.0
    # Stripes on the plain difference: rolling bands drag the phase correlation along (they
    # are the strongest moving pattern), so the aligned one would cancel them. A row profile
    # is linear in the frame, so the profile of a difference is the difference of profiles.
    stripes = np.zeros(n - 1)
    if h >= 12:
        rows = frames.mean(axis=2)  # (n, h)
        coarse = frames[:, ::4, ::4]
        offsets = np.array([float(np.median(coarse[i] - coarse[i - 1])) for i in range(1, n)])
        profiles = np.diff(rows, axis=0) - offsets[:, None]
        spectrum = np.abs(np.fft.rfft(profiles * np.hanning(h), axis=1))
        band = spectrum[:, 3 : h // 3 + 1]  # bin k is a period of h / k: h/3 … 3 rows
        if band.shape[1]:
            # Amplitude of a sinusoid from its Hann-windowed rfft bin: 2·|X| / Σ window.
            stripes = band.max(axis=1) * 4.0 / h
    texture = float(gradient[flat].mean()) if flat.any() else 0.0
    return float(np.median(noise)), float(np.median(stripes)), texture


def _block_stats(
    picture: NDArray[np.float32], block: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    h, w = picture.shape
    bh, bw = h // block, w // block
    blocks = picture[: bh * block, : bw * block].reshape(bh, block, bw, block)
    return blocks.mean(axis=(1, 3)), blocks.std(axis=(1, 3))


def _largest_component(mask: NDArray[np.bool_]) -> tuple[float, NDArray[np.bool_]]:
    """(share of the largest 8-connected region of `mask`, that region)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return 0.0, np.zeros(mask.shape, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return float(stats[best, cv2.CC_STAT_AREA] / mask.size), labels == best


def _occlusion(
    picture: NDArray[np.float32], reference: NDArray[np.float32] | None, t: Thresholds
) -> tuple[float, NDArray[np.bool_]]:
    """Largest connected share of blocks now covered: flat where the reference had texture,
    or much darker than the reference. Changes of the whole picture (night, exposure) are
    divided out with the upper quartile of the per-block ratios, which an object covering up
    to ~70 % of the view does not move. Without a reference: not judged (NaN).
    Returns the share and the covered blocks (sizeable regions, widened) as a pixel mask."""
    block = max(4, round(t.occlusion_block * picture.shape[1] / t.work_width))
    mean, std = _block_stats(picture, block)
    if reference is None:
        return math.nan, np.zeros(picture.shape[:2], dtype=bool)
    ref_mean, ref_std = _block_stats(reference, block)
    lit = ref_mean >= t.dark_mean
    gain = float(np.quantile(mean[lit] / ref_mean[lit], 0.75)) if lit.any() else 1.0
    textured = ref_std >= 2 * t.occlusion_block_std
    contrast = (
        float(np.quantile(std[textured] / ref_std[textured], 0.75)) if textured.any() else 1.0
    )
    flat = std <= np.maximum(t.occlusion_block_std, t.occlusion_texture_loss * contrast * ref_std)
    darker = lit & (mean < 0.5 * gain * ref_mean)
    changed = flat & (textured | darker)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        changed.astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return 0.0, np.zeros(picture.shape[:2], dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    share = float(areas.max() / changed.size)
    # The sizeable regions (not a few scattered flat blocks), two blocks wider: an
    # occluder's edge is out of focus and spills over its blocks.
    big = 1 + np.flatnonzero(areas >= max(4, 0.02 * changed.size))
    sizeable = np.isin(labels, big).astype(np.uint8)
    around = cv2.dilate(sizeable, np.ones((5, 5), np.uint8)).astype(bool)
    return share, _pixels(around, block, picture.shape)


def _pixels(blocks: NDArray[np.bool_], block: int, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """A block mask blown up to a pixel mask of `shape` (edge rows/columns left out)."""
    out = np.zeros(shape[:2], dtype=bool)
    up = np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)
    out[: up.shape[0], : up.shape[1]] = up
    return out


def _gradient(picture: NDArray[np.float32]) -> NDArray[np.float32]:
    smooth = cv2.GaussianBlur(picture, (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 2.0), np.float32)


def _scene_change(
    picture: NDArray[np.float32],
    reference: NDArray[np.float32],
    covered: NDArray[np.bool_],
    t: Thresholds,
) -> float:
    """1 − correlation of gradient maps, after a small shift is allowed, over the part of the
    view not `covered` (an object over the lens is occlusion; the rest of the view still
    matches the reference, whereas a turned camera matches nowhere)."""
    h, w = reference.shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(reference, picture, window)
    if abs(dx) > t.scene_max_shift * w or abs(dy) > t.scene_max_shift * h:
        dx = dy = 0.0
    r, p = _aligned_pair(_gradient(reference), _gradient(picture), round(dx), round(dy))
    open_view = (~covered).astype(np.float32)
    keep_f, _ = _aligned_pair(open_view, open_view, round(dx), round(dy))
    keep = keep_f > 0
    if keep.mean() < 0.2:
        keep = np.ones_like(keep)
    r = r[keep]
    p = p[keep]
    r = r - r.mean()
    p = p - p.mean()
    denominator = float(np.sqrt((r * r).sum() * (p * p).sum()))
    if denominator <= 1e-6:
        # Neither has structure (both flat): nothing to say the view moved.
        return 0.0 if float((r * r).sum()) <= 1e-6 and float((p * p).sum()) <= 1e-6 else 1.0
    return float(1.0 - (r * p).sum() / denominator)


@functools.lru_cache(maxsize=8)
def _sorting_network(size: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort as compare-exchange pairs, for a power-of-two `size`."""
    pairs: list[tuple[int, int]] = []
    span = 1
    while span < size:
        k = span
        while k >= 1:
            for j in range(k % span, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (span * 2) == (i + j + k) // (span * 2):
                        pairs.append((i + j, i + j + k))
            k //= 2
        span *= 2
    return tuple(pairs)


def _median_picture(stack: NDArray[np.uint8]) -> NDArray[np.float64]:
    """`np.median(stack, axis=0)` of a uint8 picture stack, exactly, ~3.5 × faster: a sorting
    network of whole-picture minimum/maximum (191 of them for up to 32 frames) instead of a
    partition per pixel along a strided axis. Padding with as many 0 as 255 pictures keeps
    the middle where it was."""
    n = len(stack)
    if n > 64:
        return np.asarray(np.median(stack, axis=0), np.float64)
    size = 1 << (n - 1).bit_length()
    low = (size - n) // 2
    black, white = np.zeros(stack.shape[1:], np.uint8), np.full(stack.shape[1:], 255, np.uint8)
    wires = [black] * low + list(stack) + [white] * (size - n - low)
    for a, b in _sorting_network(size):
        wires[a], wires[b] = np.minimum(wires[a], wires[b]), np.maximum(wires[a], wires[b])
    return (wires[low + (n - 1) // 2].astype(np.float64) + wires[low + n // 2]) / 2


def reference_picture(frames: Sequence[NDArray[Any]]) -> NDArray[np.uint8]:
    """The median BGR picture of `frames` at `REFERENCE_SIZE`: what scene_change, occlusion
    and colour_cast compare with. Moving objects are gone from a median; the scene stays."""
    bgr = _prepare(frames, REFERENCE_SIZE[0] * 2)
    if not bgr:
        raise InvalidFrames("a reference picture needs at least one frame")
    small = np.stack(
        [cv2.resize(f, REFERENCE_SIZE, interpolation=cv2.INTER_AREA) for f in bgr]
    ).astype(np.uint8, copy=False)
    return np.asarray(_median_picture(small) + 0.5, np.uint8)


@dataclass(frozen=True, slots=True)
class _RefColour:
    """The reference's chroma: its global centre, and its smoothed (a, b) and L maps."""

    centre: NDArray[np.float64]
    ab: NDArray[np.float32]  # (2, h, w) CIELAB a, b − 128, smoothed
    lightness: NDArray[np.uint8]


def _ab_maps(picture: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Smoothed CIELAB (a, b) − 128 maps and the L map: smoothing makes a pixel's chroma that
    of its surroundings, so a sway of a pixel or two between pictures does not matter."""
    lab = cv2.cvtColor(picture, cv2.COLOR_BGR2Lab)
    ab = np.stack(
        [cv2.GaussianBlur(lab[..., c].astype(np.float32) - 128.0, (0, 0), 1.5) for c in (1, 2)]
    )
    return np.asarray(ab, np.float32), np.asarray(lab[..., 0], np.uint8)


def _as_reference(
    reference: NDArray[Any] | None, t: Thresholds
) -> tuple[NDArray[np.float32] | None, _RefColour | None]:
    """(grey picture at REFERENCE_SIZE, its chroma or None for a grey reference)."""
    if reference is None:
        return None, None
    if (
        not isinstance(reference, np.ndarray)
        or reference.dtype != np.uint8
        or reference.ndim not in (2, 3)
        or (reference.ndim == 3 and reference.shape[2] != 3)
    ):
        raise InvalidFrames("the reference picture must be a uint8 BGR (or grey) image")
    if reference.shape[1::-1] != REFERENCE_SIZE:
        reference = cv2.resize(reference, REFERENCE_SIZE, interpolation=cv2.INTER_AREA)
    if reference.ndim == 2:
        return reference.astype(np.float32), None
    bgr = np.asarray(reference, np.uint8)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    ab, lightness = _ab_maps(bgr)
    return grey, _RefColour(_chroma(bgr, t)[0], ab, lightness)


# The share of the view whose colour must have moved at least this much: a cast moves them all.
_CAST_QUANTILE: Final = 0.25


def _cast_against(
    picture: NDArray[np.uint8],
    ref: _RefColour,
    keep: NDArray[np.bool_] | None,
    centre: NDArray[np.float64],
    t: Thresholds,
) -> float:
    """How far the colour moved from the accepted picture's, place by place: the chroma shift
    that at least 75 % of the lit view shows. A failed IR-cut filter or a dead colour channel
    tints every surface, grey walls and roads included; a scene whose colours drift (a sky at
    dusk, a lit advertisement, a season, a fountain's lights) tints some of it while the
    buildings and the road keep theirs, so a fraction of the view moving does not count. A
    view too dark to judge falls back to the shift of the whole picture's chroma centre."""
    ab, lightness = _ab_maps(picture)
    lit = (lightness >= t.colour_cast_pixel_value) & (ref.lightness >= t.colour_cast_pixel_value)
    if keep is not None:
        lit &= keep
    if lit.mean() < 0.05:
        return float(np.hypot(*(centre - ref.centre)))
    shift = np.hypot(ab[0] - ref.ab[0], ab[1] - ref.ab[1])[lit]
    return float(np.quantile(shift, _CAST_QUANTILE))


def _against_baseline(threshold_of: dict[str, float], b: Baseline, t: Thresholds) -> None:
    """The bars of the checks a scene's nature can pass, judged as change from the camera's
    own normal. Noise: the accepted sample's residual plus `baseline_noise_margin` and at
    least `baseline_noise_ratio` × it; stripes: `baseline_stripes_ratio` × the accepted
    sample's. Never below the absolute bars, which stay the floor (snow on a flat street is
    not excused by its baseline). Contrast: below `baseline_contrast_ratio` of the accepted
    contrast when that is under the absolute bar (a view that is flat by nature is warned
    about only when it flattens further)."""
    # With a baseline the texture allowance is the camera's own: the bar is its accepted
    # residual plus a margin (and a share of it, as a textured view's sway residual varies
    # with the sway), never below the absolute bar.
    threshold_of["noise"] = max(
        t.noise_level, b.noise + t.baseline_noise_margin, t.baseline_noise_ratio * b.noise
    )
    threshold_of["stripes"] = max(threshold_of["stripes"], t.baseline_stripes_ratio * b.stripes)
    threshold_of["low_contrast"] = min(
        threshold_of["low_contrast"], t.baseline_contrast_ratio * b.contrast
    )


def diagnose(
    frames: Sequence[NDArray[Any]],
    *,
    thresholds: Thresholds | None = None,
    reference: NDArray[Any] | None = None,
    baseline: Baseline | None = None,
) -> Diagnosis:
    """Run every check on `frames` (8-bit BGR, in capture order) and return all their flags.

    `reference` is the accepted scene picture (`reference_picture`, or `Diagnosis.picture`
    of a clean sample); without it scene_change and occlusion are not judged (NaN). The
    element type is loose because OpenCV's stubs type every result as a generic array; the
    uint8 dtype is checked at run time instead (`InvalidFrames`).

    Every check is always reported, fired or not, so a dashboard can show how close a camera is
    to a threshold. Raises `InvalidFrames` only for input that is not an image at all.
    """
    t = thresholds if thresholds is not None else Thresholds()
    ref, ref_colour = _as_reference(reference, t)
    bgr_list = _prepare(frames, t.work_width)
    n = len(bgr_list)
    threshold_of = {
        "signal_loss": t.signal_loss_share,
        "frozen": float(t.frozen_frames),
        "too_dark": t.dark_mean,
        "too_bright": t.bright_mean,
        "low_contrast": t.low_contrast_std,
        "colour_cast": t.colour_cast_offset,
        "blur": t.blur_reblur,
        "noise": t.noise_level,
        "stripes": t.stripes_amplitude,
        "shake": t.shake_px,
        "occlusion": t.occlusion_share,
        "scene_change": t.scene_change,
    }
    values: dict[str, float] = dict.fromkeys(CHECKS, math.nan)
    extra_fire: dict[str, bool] = {}
    relative_blur = False
    picture_out: NDArray[np.uint8] | None = None
    measured: Baseline | None = None
    if n == 0:
        values["signal_loss"] = 1.0
    else:
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in bgr_list]).astype(
            np.uint8, copy=False
        )
        thumbs = np.stack(
            [cv2.resize(f, REFERENCE_SIZE, interpolation=cv2.INTER_AREA) for f in bgr_list]
        ).astype(np.uint8, copy=False)
        values["signal_loss"] = _signal_loss(thumbs, t)
        # OpenCV's one pass per frame: numpy's float64 reductions over the stack cost ~200×.
        stats = np.array([cv2.meanStdDev(g) for g in grey], np.float64).reshape(n, 2)
        means, stds = stats[:, 0], stats[:, 1]
        values["too_dark"] = values["too_bright"] = float(np.median(means))
        values["low_contrast"] = float(np.median(stds))

        # A low-contrast picture moves by fewer levels: the block tolerance follows contrast.
        contrast = min(1.0, max(0.3, float(np.median(stds)) / 50.0))
        run = _frozen_run(_moving_blocks(grey, t.frozen_block_change * contrast), t)
        values["frozen"] = float(run + 1 if run else 1)
        values["blur"] = float(np.median(_reblur(grey[::4])))  # a steady measure: 5 frames do

        # Motion on the small pictures (REFERENCE_SIZE whatever the aspect: shifts are scaled
        # back per axis).
        small = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in thumbs]).astype(np.float32)
        scale = (grey.shape[2] / REFERENCE_SIZE[0], grey.shape[1] / REFERENCE_SIZE[1])
        shifts, response = _shifts(small)
        shifts *= np.array(scale)  # in px of the work frames from here on
        noise, stripes, texture = _noise_and_stripes(grey, shifts, t)
        # A view textured everywhere (foliage, gravel, a panned photograph) keeps texture even
        # in its flattest part, and there the residual of aligning a sub-pixel sway grows with
        # the local gradient: while the view moves, the bar rises with that texture, so only
        # change beyond what the texture explains counts as snow. A still view has no such
        # residual (and snow itself roughens the mean picture), so its bar stays put.
        sure_shifts = shifts[response >= t.shake_min_response]  # snow has no sure shift
        swaying = len(sure_shifts) >= 2 and float(np.median(np.hypot(*sure_shifts.T))) >= 0.1
        if swaying:
            threshold_of["noise"] = max(t.noise_level, t.noise_texture_slope * texture)
        values["noise"] = noise
        values["stripes"] = stripes
        width = grey.shape[2]
        sure = response >= t.shake_min_response
        if sure.sum() >= 2:
            d_sure = shifts[sure]
            jitter = d_sure - np.median(d_sure, axis=0)
            values["shake"] = float(np.sqrt((jitter**2).sum(axis=1).mean())) * 320.0 / width
        else:
            values["shake"] = 0.0

        if ref is not None:
            # Against the scene's own sharpness: a photograph-like scene that was soft when
            # accepted (an upscaled sub stream, a hazy view) never reaches the absolute
            # re-blur threshold when its focus slips, but it loses sharpness against its
            # reference, measured alike (median picture size, same floor for noise).
            small_grey = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in thumbs[::4]])
            now = float(np.median(_reblur(small_grey, 3.0)))
            then = float(_reblur(ref.astype(np.uint8)[None], 3.0)[0])
            relative_blur = (
                now - then >= t.blur_reference_loss and values["blur"] >= t.blur_reference_floor
            )
        measured = Baseline(
            noise=noise,
            stripes=stripes,
            contrast=values["low_contrast"],
        )
        if baseline is not None and ref is not None:
            _against_baseline(threshold_of, baseline, t)
        picture_out = np.asarray(_median_picture(thumbs) + 0.5, np.uint8)
        picture = cv2.cvtColor(picture_out, cv2.COLOR_BGR2GRAY).astype(np.float32)
        values["occlusion"], covered = _occlusion(picture, ref, t)
        if ref is not None:
            values["scene_change"] = _scene_change(picture, ref, covered, t)
        # Chroma of the view outside an occluder (a green cloth over half the lens is
        # occlusion, not a cast).
        centre, k = _chroma(picture_out, t, None if covered.mean() > 0.8 else ~covered)
        offset = float(np.hypot(*centre))
        if ref_colour is not None:
            # Against the accepted picture: a warm scene is not a cast, a change of it is. A
            # grey night picture (no chroma at all) is the IR mode, not a cast either.
            keep = None if covered.mean() > 0.8 else ~covered
            values["colour_cast"] = _cast_against(picture_out, ref_colour, keep, centre, t)
            extra_fire["colour_cast"] = offset >= t.colour_cast_offset
        else:
            values["colour_cast"] = offset
            extra_fire["colour_cast"] = k >= t.colour_cast_factor

    past: dict[str, bool] = {}
    for name in CHECKS:
        value, threshold = values[name], threshold_of[name]
        hit = value < threshold if name in BELOW else value >= threshold  # NaN: never
        past[name] = bool(hit) and extra_fire.get(name, True)
    past["blur"] = past["blur"] or relative_blur
    return _verdict(past, values, threshold_of, t, n, picture_out, measured)


def _verdict(
    past: dict[str, bool],
    values: dict[str, float],
    threshold_of: dict[str, float],
    t: Thresholds,
    n: int,
    picture: NDArray[np.uint8] | None,
    measured: Baseline | None = None,
) -> Diagnosis:
    """Flags from which checks are past their thresholds: masking (`MUTUAL`, `MASKS`), then
    which of the remaining fired flags are faults."""
    masked_by: dict[str, str] = {}
    for a, b in MUTUAL:
        if past[a] and past[b] and a not in masked_by and b not in masked_by:
            # Snow throws phase correlation about; a shaking picture leaves residue in flat
            # areas. The one further past its threshold
            # is the cause, except that heavy noise (3 × its threshold) leaves no shift worth
            # believing.
            ratio = {n: values[n] / max(threshold_of[n], 1e-9) for n in (a, b)}
            heavy = a == "noise" and values[a] >= 3 * t.noise_level
            winner = a if heavy else max(ratio, key=lambda n: ratio[n])
            masked_by[b if winner == a else a] = winner
            for other in MASKS[winner]:
                if past.get(other) and other not in masked_by:
                    masked_by[other] = winner
    for name, explained in MASKS.items():
        if past[name] and name not in masked_by:
            for other in explained:
                if past.get(other) and other not in masked_by:
                    masked_by[other] = name
    flags: dict[str, Flag] = {}
    for name in values:
        fired = past[name] and name not in masked_by
        flags[name] = Flag(
            name,
            fired,
            float(values[name]),
            float(threshold_of[name]),
            fault=fired and name in t.faults,
            masked_by=masked_by.get(name),
        )
    fired_names = tuple(name for name in KNOWN_CHECKS if name in flags and flags[name].fired)
    faults = tuple(name for name in fired_names if flags[name].fault)
    return Diagnosis(
        flags=flags,
        faulty=bool(faults),
        frames=n,
        fired=fired_names,
        faults=faults,
        picture=picture,
        baseline=measured,
    )


def with_ptz(diagnosis: Diagnosis, value: float, thresholds: Thresholds | None = None) -> Diagnosis:
    """`diagnosis` with the 云台失控 flag added: `value` is how much the picture changed after
    a relative move (`health.ptz.picture_change`; NaN when it could not be judged), and the
    check fires below `ptz_min_change`. The other flags are judged again with it, so a frozen
    or lost picture explains a picture that did not move."""
    t = thresholds if thresholds is not None else Thresholds()
    flags = {k: f for k, f in diagnosis.flags.items() if k != PTZ_CHECK}
    values = {k: f.value for k, f in flags.items()}
    threshold_of = {k: f.threshold for k, f in flags.items()}
    past = {k: f.fired or f.masked_by is not None for k, f in flags.items()}
    values[PTZ_CHECK] = float(value)
    threshold_of[PTZ_CHECK] = t.ptz_min_change
    past[PTZ_CHECK] = bool(value < t.ptz_min_change)  # NaN: never
    return _verdict(
        past, values, threshold_of, t, diagnosis.frames, diagnosis.picture, diagnosis.baseline
    )
