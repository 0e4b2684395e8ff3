"""Where to put the next K cameras: greedy maximal covering.

Existing cameras are fixed (their coverage is ``already_covered``); each
candidate site (a pole, a junction, a village entrance) is modelled as a disc of
``radius_m`` because a new camera can be aimed where it is needed, and because a
rural checkpoint is judged by "a camera within 150 m" anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from geo.errors import GeoError

__all__ = ["Proposal", "greedy_sites", "incidence"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True, eq=False)
class Proposal:
    """One proposed site, in pick order.

    ``newly_covered`` lists demand indices first covered by this site (not those
    an earlier pick or an existing camera already covers); ``covered_share_after``
    is the weighted share of all demand covered once this site is built.
    """

    index: int
    x: float
    y: float
    newly_covered: IntArray
    gain_weight: float
    covered_share_after: float


def _xy(name: str, x: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
    xa = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ya = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xa.shape != ya.shape or xa.ndim != 1:
        raise GeoError(f"{name} x and y must be 1-D and equal length, got {xa.shape}, {ya.shape}")
    if not bool(np.all(np.isfinite(xa) & np.isfinite(ya))):
        raise GeoError(f"{name} coordinates contain NaN or infinity; drop those rows first")
    return xa, ya


def incidence(
    candidate_x: FloatArray,
    candidate_y: FloatArray,
    demand_x: FloatArray,
    demand_y: FloatArray,
    radius_m: float,
) -> sp.csr_matrix:
    """Sparse candidate × demand matrix, 1 where the site's disc reaches the demand point.

    Built once with a KD-tree join so the greedy loop only does sparse arithmetic.
    """
    shape = (candidate_x.shape[0], demand_x.shape[0])
    if shape[0] == 0 or shape[1] == 0:
        return sp.csr_matrix(shape, dtype=np.float64)
    ctree = cKDTree(np.column_stack([candidate_x, candidate_y]))
    dtree = cKDTree(np.column_stack([demand_x, demand_y]))
    pairs = ctree.sparse_distance_matrix(dtree, radius_m, output_type="ndarray")
    data = np.ones(pairs.shape[0], dtype=np.float64)
    return sp.csr_matrix((data, (pairs["i"], pairs["j"])), shape=shape)


def greedy_sites(
    candidate_x: ArrayLike,
    candidate_y: ArrayLike,
    demand_x: ArrayLike,
    demand_y: ArrayLike,
    demand_weight: ArrayLike | None,
    already_covered: ArrayLike,
    *,
    radius_m: float,
    k: int,
) -> list[Proposal]:
    """Pick up to ``k`` candidate sites, each time the one adding most uncovered demand weight.

    Weighted coverage is monotone submodular, so the greedy total is within
    1 − 1/e (≈ 63 %) of the best possible choice of k sites (Nemhauser, Wolsey &
    Fisher 1978), and its gains never increase from one pick to the next. Ties go
    to the lowest candidate index, so the output is deterministic. A site is never
    picked twice, and picking stops early once no site adds anything: an extra
    camera covering nothing new is not a proposal.

    Each iteration is vectorised: the gain update subtracts, for every candidate,
    the weight of demand it shared with the pick (one sparse product), so the loop
    runs k times and never over sites or demand points.
    """
    if k < 0:
        raise GeoError(f"k must be non-negative, got {k}")
    if not (np.isfinite(radius_m) and radius_m > 0):
        raise GeoError(f"radius_m must be positive metres, got {radius_m}")
    cx, cy = _xy("candidate", candidate_x, candidate_y)
    dx, dy = _xy("demand", demand_x, demand_y)
    n_dem = dx.shape[0]
    w = np.ones(n_dem) if demand_weight is None else np.asarray(demand_weight, dtype=np.float64)
    done = np.array(already_covered, dtype=np.bool_)  # copied: updated as sites are picked
    if w.shape != (n_dem,) or done.shape != (n_dem,):
        raise GeoError(
            f"demand_weight {w.shape} and already_covered {done.shape} must match "
            f"the {n_dem} demand points"
        )
    if not bool(np.all(np.isfinite(w) & (w >= 0))):
        raise GeoError("demand weights must be finite and non-negative")
    total = float(w.sum())
    if k == 0 or cx.size == 0 or n_dem == 0 or total <= 0:
        return []

    a = incidence(cx, cy, dx, dy, float(radius_m))
    a_csc = a.tocsc()
    open_w = np.where(done, 0.0, w)
    gains = np.asarray(a @ open_w, dtype=np.float64)
    covered_w = float(w[done].sum())
    picked = np.zeros(cx.size, dtype=np.bool_)
    out: list[Proposal] = []
    while len(out) < k:  # one pass per pick (plus rare float-residue skips)
        masked = np.where(picked, -np.inf, gains)
        best = int(np.argmax(masked))  # argmax returns the first maximum: lowest index wins
        if not masked[best] > 0:
            break
        row = a.indices[a.indptr[best] : a.indptr[best + 1]]
        newly = np.sort(row[~done[row]]).astype(np.intp)
        gain = float(w[newly].sum())
        if not gain > 0:
            # Incremental subtraction left rounding residue on a site that adds nothing.
            gains[best] = 0.0
            continue
        done[newly] = True
        covered_w += gain
        picked[best] = True
        # Every candidate loses the weight it shared with the newly covered points.
        gains -= np.asarray(a_csc[:, newly] @ w[newly], dtype=np.float64)
        out.append(
            Proposal(
                index=best,
                x=float(cx[best]),
                y=float(cy[best]),
                newly_covered=newly,
                gain_weight=gain,
                covered_share_after=min(1.0, covered_w / total),
            )
        )
    return out
