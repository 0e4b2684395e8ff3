"""Coverage test at Shanxi scale, beside a shapely STRtree disc join on the same data.

    python bench/bench_coverage.py [--points 2400000] [--cameras 100000] [--repeat 1]

Points are 100 m cell centres of a ~155 km square (2.4 M cells ≈ a province's built-up
and rural grid); cameras are 60 % in 20 town clusters and 40 % scattered, with radii
30-200 m, 70 % known sectors and 30 % assumed discs. Prints points/s for
``geo.coverage.covered_mask`` (KD-tree join + exact sector test), the anchor's points/s
(``shapely.STRtree`` over the points, ``query(cameras, predicate="dwithin",
distance=radius)``, i.e. discs only, no bearing test; tree build included, point
creation not), and the ratio. Same seed every run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geo.coverage import covered_mask
from geo.footprint import Footprints, footprints

CELL_M = 100.0


def make_data(
    n_points: int, n_cameras: int, seed: int = 20261127
) -> tuple[np.ndarray, np.ndarray, Footprints]:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_points)))
    ix = np.arange(n_points)
    px = (ix % side + 0.5) * CELL_M
    py = (ix // side + 0.5) * CELL_M
    extent = side * CELL_M
    n_town = int(n_cameras * 0.6)
    towns = rng.uniform(0.1 * extent, 0.9 * extent, size=(20, 2))
    which = rng.integers(0, 20, size=n_town)
    town_xy = towns[which] + rng.normal(0.0, 2000.0, size=(n_town, 2))
    rural_xy = rng.uniform(0.0, extent, size=(n_cameras - n_town, 2))
    xy = np.clip(np.vstack([town_xy, rural_xy]), 0.0, extent)
    azimuth = rng.uniform(0.0, 360.0, size=n_cameras)
    azimuth[rng.random(n_cameras) < 0.3] = np.nan
    hfov = rng.uniform(30.0, 110.0, size=n_cameras)
    radius = rng.uniform(30.0, 200.0, size=n_cameras)
    level = rng.choice([1, 2, 3], size=n_cameras)
    fp = footprints(
        xy[:, 0],
        xy[:, 1],
        azimuth,
        hfov,
        radius,
        level,
        default_radius_by_level={1: 150.0, 2: 100.0, 3: 50.0},
    )
    return px, py, fp


def anchor(px: np.ndarray, py: np.ndarray, fp: Footprints) -> tuple[float, np.ndarray]:
    points = shapely.points(px, py)
    cams = shapely.points(fp.x, fp.y)
    t0 = time.perf_counter()
    tree = shapely.STRtree(points)
    _, pt_idx = tree.query(cams, predicate="dwithin", distance=fp.radius_m)
    covered = np.zeros(px.shape[0], dtype=bool)
    covered[pt_idx] = True
    return time.perf_counter() - t0, covered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_400_000)
    parser.add_argument("--cameras", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    px, py, fp = make_data(args.points, args.cameras)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        mask = covered_mask(fp, px, py)
        ours.append(time.perf_counter() - t0)
        t_anchor, disc_mask = anchor(px, py, fp)
        theirs.append(t_anchor)
    t_ours = statistics.median(ours)
    t_theirs = statistics.median(theirs)
    n = args.points
    print(f"{n:,} points x {args.cameras:,} cameras ({int(fp.assumed.sum()):,} assumed discs)")
    print(
        f"covered_mask (KD-tree join + sector test): {t_ours:.2f} s, {n / t_ours:,.0f} points/s, "
        f"{mask.mean():.2%} covered"
    )
    print(
        f"anchor STRtree dwithin (discs only):       {t_theirs:.2f} s, {n / t_theirs:,.0f} "
        f"points/s, {disc_mask.mean():.2%} covered"
    )
    print(f"ratio (ours / anchor, points/s): {t_theirs / t_ours:.2f}")
    assert not (mask & ~disc_mask).any(), "a sector covered a point its disc does not"


if __name__ == "__main__":
    main()
