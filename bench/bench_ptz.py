"""Separation of the 云台失控 measure (`health.ptz.picture_change`) on the VQD clip set.

    python bench/bench_ptz.py [--clips bench/out/vqd-clips] [--split all]

A head that did not move leaves two samples of one view: what then separates them is H.264
noise, sensor grain, the OSD clock, moving cars and sway. That case is each clean clip's median
picture against its scene's reference clip (same size, another moment), as the worker compares
the sample before the move with the one after it. A head that moved is the same clip seen
through a window 80 % of its width, the second window shifted by a share of that width (a pan
of 0.05 in ONVIF's generic space is ≈ 9°, a quarter or more of a PTZ camera's wide field of
view; 5 % and 10 % are the small end). Night and low-texture (skyline) scenes are included: a
view without structure returns NaN (not judged), which is counted apart.

Reports, at the default `ptz_min_change`, how many still views would be called moved (a stuck
head missed) and how many panned views would be called stuck (a false 云台失控).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import vqd_clips
from bench.bench_vqd import read_clip
from health.diagnosis import Thresholds, reference_picture
from health.ptz import picture_change

SHIFTS = (0.05, 0.09, 0.15, 0.3)
WINDOW = 0.8


def _window(frames: list[np.ndarray], shift: float) -> np.ndarray:
    w = frames[0].shape[1]
    view = round(w * WINDOW)
    x0 = round(view * shift)
    return reference_picture([np.ascontiguousarray(f[:, x0 : x0 + view]) for f in frames])


def _summary(name: str, values: list[float], bar: float, below: bool) -> str:
    judged = [v for v in values if not math.isnan(v)]
    wrong = sum(1 for v in judged if (v < bar) == below)
    q = np.quantile(judged, [0.0, 0.5, 0.95, 1.0]) if judged else [math.nan] * 4
    return (
        f"{name:<22} n={len(values):>3} unjudged={len(values) - len(judged):>2} "
        f"min={q[0]:.3f} median={q[1]:.3f} p95={q[2]:.3f} max={q[3]:.3f} "
        f"wrong at {bar}: {wrong}/{len(judged)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=Path, default=vqd_clips.OUT)
    parser.add_argument(
        "--split", choices=("train", "test", "fresh", "fresh2", "all"), default="all"
    )
    args = parser.parse_args()
    labels = args.clips / "labels.json"
    if not labels.exists():
        print(f"no clip set in {args.clips}: run bench/vqd_clips.py first", file=sys.stderr)
        return 2
    clips = [c for c in json.loads(labels.read_text(encoding="utf-8")) if c["fault"] == "clean"]
    if args.split != "all":
        clips = [c for c in clips if c["split"] == args.split]
    bar = Thresholds().ptz_min_change
    still: list[float] = []
    moved: dict[float, list[float]] = {s: [] for s in SHIFTS}
    for clip in clips:
        frames = read_clip(args.clips / f"{clip['name']}.mp4")
        reference = args.clips / f"{clip['scene']}-{clip['size']}-reference.mp4"
        if reference.exists():
            still.append(picture_change(reference_picture(read_clip(reference)),
                                        reference_picture(frames)))  # fmt: skip
        for shift in SHIFTS:
            moved[shift].append(picture_change(_window(frames, 0.0), _window(frames, shift)))
    print(f"{len(clips)} clean clips ({args.split}); ptz_min_change = {bar}")
    print(_summary("still (stuck head)", still, bar, below=False))
    for shift in SHIFTS:
        print(_summary(f"panned {shift:.0%} of view", moved[shift], bar, below=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
