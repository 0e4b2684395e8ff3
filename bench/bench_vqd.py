"""Accuracy of the video-quality diagnosis (视频质量诊断) on a generated, labelled clip set,
beside a simple baseline in the same run, and the diagnosis's own cost.

    python bench/bench_vqd.py [--clips bench/out/vqd-clips] [--jobs 2] [--split test] [--repeat 3]

The clips come from bench/vqd_clips.py (generated on first use; never committed). Each clip is
read as the worker reads a camera: decoded by OpenCV/FFmpeg, downscaled to 320 px, 20 of its
30 frames (2 s at 15 fps) at a fixed stride, as `health.frames` thins them. The scene
reference is the median picture of a clean clip of the same scene, in the same picture size,
taken at another moment ("accepted at installation"), and the camera's baseline is the
statistics of that same reference sample (`Diagnosis.baseline`, kept with the reference in
production): noise, stripes and contrast are judged as change against it (`--no-baseline`:
the absolute bars alone, as a camera without a reference is judged).

Per item: precision and recall over the clips (a flag on a clip whose label neither is nor
allows that item is a false alarm), and the false-fault rate on clean clips (any fault flag of
the default `faults`, and any flag at all). The thresholds were tuned on the train split;
`--split test` (default) reports the first held-out scenes (looked at while the detectors were
reworked, so no longer untouched), `--split fresh` scenes added afterwards (run once, then its
errors were studied while the baselines were built), `--split fresh2` scenes added after that
from sources never used (run once after the detectors were frozen: the honest held-out
figure), `--split train` the tuning set.
Baseline, same clips: mean < 30 / > 220, std < 25, variance of the Laplacian < 50 (Pech-
Pacheco), the same frozen rule, noise as Immerkær's σ ≥ 6, black screen as mean < 20 and std
< 10, colour cast by the grey-world channel offset ≥ 25 %, occlusion by the largest dark-block
region ≥ 40 %; it has no measure for stripes, shake or scene change. Cost: wall time of
`diagnose()` per 20-frame sample on one core, median of `--repeat` passes, and of the baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import vqd_clips
from bench.common import median
from health.diagnosis import CHECKS, Baseline, Thresholds, diagnose, reference_picture
from health.frames import _spread

SAMPLE = 20
WIDTH = 320


def read_clip(path: Path) -> list[np.ndarray]:
    """Decode like the sampler: every frame, downscaled to 320 px, thinned to 20 as it does."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        if w > WIDTH:
            frame = cv2.resize(frame, (WIDTH, round(h * WIDTH / w)), interpolation=cv2.INTER_AREA)
        frames.append(np.asarray(frame, np.uint8))
    cap.release()
    return _spread(frames, SAMPLE)


def baseline(frames: list[np.ndarray]) -> set[str]:
    """The commonly published thresholds: mean, variance, Laplacian, frame difference."""
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames])
    fired: set[str] = set()
    mean, std = float(np.median(grey.mean(axis=(1, 2)))), float(np.median(grey.std(axis=(1, 2))))
    if mean < 20 and std < 10:
        return {"signal_loss"}
    if mean < 30:
        fired.add("too_dark")
    if mean > 220:
        fired.add("too_bright")
    if std < 25:
        fired.add("low_contrast")
    lap = float(np.median([cv2.Laplacian(g, cv2.CV_64F).var() for g in grey]))
    if lap < 50:
        fired.add("blur")
    steady = (np.abs(np.diff(grey.astype(np.int16), axis=0)) <= 2).mean(axis=(1, 2)) > 0.95
    run, best = 0, 0
    for s in steady:
        run = run + 1 if s else 0
        best = max(best, run)
    if best + 1 >= 10:
        fired.add("frozen")
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    g0 = grey[0].astype(np.float32)
    conv = np.abs(cv2.filter2D(g0, -1, kernel))[1:-1, 1:-1]
    sigma = float(conv.sum() * np.sqrt(np.pi / 2) / (6 * conv.size))
    if sigma >= 6:
        fired.add("noise")
    channel = np.stack(frames).reshape(-1, 3).mean(axis=0)
    grey_level = float(channel.mean())
    if grey_level > 1 and float(np.abs(channel - grey_level).max()) / grey_level >= 0.25:
        fired.add("colour_cast")
    blocks = grey[0][: grey.shape[1] // 16 * 16, : grey.shape[2] // 16 * 16]
    bm = blocks.reshape(blocks.shape[0] // 16, 16, blocks.shape[1] // 16, 16).mean(axis=(1, 3))
    dark = np.asarray(bm < 30, dtype=np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    if count > 1 and stats[1:, cv2.CC_STAT_AREA].max() / bm.size >= 0.4:
        fired.add("occlusion")
    return fired


BASELINE_ITEMS = {
    "signal_loss",
    "frozen",
    "too_dark",
    "too_bright",
    "low_contrast",
    "colour_cast",
    "blur",
    "noise",
    "occlusion",
}


def score(
    clips: list[dict[str, Any]], fired: dict[str, set[str]], items: tuple[str, ...]
) -> dict[str, tuple[float, float, int, int, int]]:
    """item → (precision, recall, TP, FP, FN)."""
    out = {}
    for item in items:
        tp = fp = fn = 0
        for c in clips:
            hit = item in fired[c["name"]]
            if item in c["expect"]:
                tp += hit
                fn += not hit
            elif hit and item not in c["allow"]:
                fp += 1
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        out[item] = (precision, recall, tp, fp, fn)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=Path, default=vqd_clips.OUT)
    parser.add_argument("--jobs", type=int, default=2, help="processes generating clips")
    parser.add_argument(
        "--split", choices=("train", "test", "fresh", "fresh2", "all"), default="test"
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="judge without the per-camera baselines (the absolute bars alone)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timing passes")
    parser.add_argument(
        "--sizes", default="", help="only clips of these picture sizes (e.g. cif,360p)"
    )
    parser.add_argument("--values", action="store_true", help="print every clip's values")
    args = parser.parse_args()
    labels = args.clips / "labels.json"
    missing = [tool for tool in ("ffmpeg",) if shutil.which(tool) is None]
    if importlib.util.find_spec("skimage") is None:
        missing.append("scikit-image (pip install -e '.[bench]')")
    if missing and not labels.exists():
        print(
            f"cannot generate the clip set: missing {', '.join(missing)} "
            "(Debian: apt-get install -y ffmpeg)",
            file=sys.stderr,
        )
        return 2
    if not labels.exists():
        print(f"generating the clip set in {args.clips} …", flush=True)
        vqd_clips.generate(args.clips, args.jobs)
    clips = json.loads(labels.read_text(encoding="utf-8"))
    if args.split != "all":
        clips = [c for c in clips if c["split"] == args.split]
    if args.sizes:
        clips = [c for c in clips if c["size"] in args.sizes.split(",")]
    scenes = {s[0]: s for s in vqd_clips.SCENES}
    t = Thresholds()
    # The accepted reference: a clean clip of the scene at another moment (never the clip
    # itself), its median picture, and the baseline measured on that same sample.
    references: dict[tuple[str, str], np.ndarray] = {}
    baselines: dict[tuple[str, str], Baseline | None] = {}
    for scene, size in {(c["scene"], c["size"]) for c in clips}:
        _, kind, source, _ = scenes[scene]
        frames = read_clip(vqd_clips.reference_clip(scene, kind, source, args.clips, size))
        references[scene, size] = reference_picture(frames)
        accepted = diagnose(frames, thresholds=t, reference=references[scene, size])
        baselines[scene, size] = None if args.no_baseline else accepted.baseline
    samples = {c["name"]: read_clip(args.clips / f"{c['name']}.mp4") for c in clips}
    ours: dict[str, set[str]] = {}
    base: dict[str, set[str]] = {}
    faults_on_clean = 0
    any_on_clean = 0
    clean_hits: dict[str, int] = defaultdict(int)
    for c in clips:
        key = (c["scene"], c["size"])
        d = diagnose(
            samples[c["name"]], thresholds=t, reference=references[key], baseline=baselines[key]
        )
        ours[c["name"]] = set(d.fired)
        base[c["name"]] = baseline(samples[c["name"]])
        if c["fault"] == "clean":
            faults_on_clean += d.faulty
            any_on_clean += bool(d.fired)
            for name in d.fired:
                clean_hits[name] += 1
        if (
            args.values
            or (c["fault"] != "clean" and c["fault"] not in d.fired)
            or (set(d.fired) - set(c["expect"]) - set(c["allow"]))
        ):
            values = " ".join(
                f"{n}={f.value:.3g}{'*' if f.fired else ''}{'~' if f.masked_by else ''}"
                for n, f in d.flags.items()
            )
            print(f"  {c['name']:32s} {c['size']:5s} {c['bitrate']:4s} {values}")

    clean = [c for c in clips if c["fault"] == "clean"]
    s_ours = score(clips, ours, CHECKS)
    s_base = score(clips, base, CHECKS)
    print(
        f"\n{len(clips)} clips ({args.split} split: {len(clean)} clean, "
        f"{len(clips) - len(clean)} faulty), {len({c['scene'] for c in clips})} scenes"
    )
    print(f"{'item':14s} {'precision':>9s} {'recall':>7s}  (TP FP FN)   | baseline P / R")

    def fmt(v: float) -> str:
        return "   —" if v != v else f"{v:.3f}"

    for item in CHECKS:
        p, r, tp, fp, fn = s_ours[item]
        bp, br, *_ = s_base[item]
        b = f"{fmt(bp)} / {fmt(br)}" if item in BASELINE_ITEMS else "no measure"
        print(f"{item:14s} {fmt(p):>9s} {fmt(r):>7s}  ({tp:3d} {fp:3d} {fn:3d}) | {b}")
    base_clean_fault = sum(bool(base[c["name"]] & set(t.faults)) for c in clean)
    print(
        f"false faults on clean clips: {faults_on_clean}/{len(clean)} "
        f"({100 * faults_on_clean / max(1, len(clean)):.1f} %), any flag "
        f"{any_on_clean}/{len(clean)} {dict(clean_hits)}; baseline "
        f"{base_clean_fault}/{len(clean)} ({100 * base_clean_fault / max(1, len(clean)):.1f} %)"
    )

    def timed(fn: Callable[[], object]) -> float:
        passes = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            passes.append(time.perf_counter() - t0)
        return median(passes)

    cv2.setNumThreads(1)  # a worker process runs OpenCV on one thread
    scene_of = {c["name"]: (c["scene"], c["size"]) for c in clips}
    names = [c["name"] for c in clips][:120]
    ours_s = timed(
        lambda: [
            diagnose(
                samples[n],
                thresholds=t,
                reference=references[scene_of[n]],
                baseline=baselines[scene_of[n]],
            )
            for n in names
        ]
    ) / len(names)
    base_s = timed(lambda: [baseline(samples[n]) for n in names]) / len(names)
    print(
        f"diagnose() per 20-frame 320 px sample, one core: {1000 * ours_s:.1f} ms "
        f"({1 / ours_s:.0f} samples/s); baseline {1000 * base_s:.1f} ms; ratio "
        f"{ours_s / base_s:.2f} (medians of {args.repeat} passes over {len(names)} samples)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
