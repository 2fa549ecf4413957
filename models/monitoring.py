"""Pure statistics for monitoring: population stability index (PSI) and binomial confidence intervals.

No I/O and no services: `tandem monitor` (models/monitor.py) and `tandem ab-report` (models/ab_report.py)
feed these functions arrays and counts.

PSI compares a reference distribution p with a recent one q over the same bins:
``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)``. Numeric features are binned at the reference's quantiles
(so each reference bin holds about the same share; ties collapse bins), with open-ended outer bins so
recent values outside the reference range still land somewhere. Categorical features use one bin per
category seen in either sample. Empty bins get a share of `EPSILON` (then the shares are renormalized),
so a category that appears or vanishes gives a large but finite PSI instead of infinity. Rules of thumb:
< 0.1 stable, 0.1–0.2 moderate shift, > 0.2 significant shift (the default threshold).

Intervals: the Wilson score interval for a proportion, and Newcombe's hybrid-score interval (method 10)
for the difference of two independent proportions, both at 95% by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4
DEFAULT_BINS = 10
DEFAULT_THRESHOLD = 0.2
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Binned:
    """Reference and recent shares over the same bins (labels describe each bin)."""

    labels: list[str]
    reference: np.ndarray
    recent: np.ndarray


def psi_from_shares(reference: np.ndarray, recent: np.ndarray, epsilon: float = EPSILON) -> float:
    """PSI of two share vectors over the same bins; empty bins are floored at `epsilon` and renormalized."""
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(recent, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"expected two share vectors of the same length, got shapes {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("a distribution with no mass has no PSI")
    p = np.maximum(p / p.sum(), epsilon)
    q = np.maximum(q / q.sum(), epsilon)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_bin_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates from ties removed); -inf/+inf are implied."""
    ref = _finite(reference)
    if len(ref) == 0:
        raise ValueError("no finite reference values to bin")
    if bins < 2:
        raise ValueError(f"bins: expected at least 2, got {bins}")
    edges = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)


def bin_numeric(reference: np.ndarray, recent: np.ndarray, bins: int = DEFAULT_BINS) -> Binned:
    """Shares of the reference and recent values in bins cut at the reference's quantiles."""
    ref, rec = _finite(reference), _finite(recent)
    if len(rec) == 0:
        raise ValueError("no finite recent values to bin")
    edges = numeric_bin_edges(ref, bins)
    # right-closed bins: (-inf, e0], (e0, e1], ..., (e_last, inf) — a point mass at an edge stays in one bin
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1)
    rec_counts = np.bincount(np.searchsorted(edges, rec, side="left"), minlength=len(edges) + 1)
    bounds = ["-inf", *(f"{e:.4g}" for e in edges), "inf"]
    labels = [f"({lo}, {hi}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return Binned(labels, ref_counts / ref_counts.sum(), rec_counts / rec_counts.sum())


def bin_categorical(reference: Sequence[object], recent: Sequence[object]) -> Binned:
    """Shares of each category (seen in either sample) in the reference and the recent sample."""
    ref = [str(v) for v in reference if v is not None]
    rec = [str(v) for v in recent if v is not None]
    if not ref or not rec:
        raise ValueError("a categorical feature needs values in both the reference and the recent sample")
    labels = sorted(set(ref) | set(rec))
    index = {c: i for i, c in enumerate(labels)}
    ref_counts = np.bincount([index[v] for v in ref], minlength=len(labels))
    rec_counts = np.bincount([index[v] for v in rec], minlength=len(labels))
    return Binned(labels, ref_counts / ref_counts.sum(), rec_counts / rec_counts.sum())


def psi_numeric(reference: np.ndarray, recent: np.ndarray, bins: int = DEFAULT_BINS, epsilon: float = EPSILON) -> float:
    """PSI of a numeric feature, binned at the reference's quantiles."""
    b = bin_numeric(reference, recent, bins)
    return psi_from_shares(b.reference, b.recent, epsilon)


def psi_categorical(reference: Sequence[object], recent: Sequence[object], epsilon: float = EPSILON) -> float:
    """PSI of a categorical feature, one bin per category."""
    b = bin_categorical(reference, recent)
    return psi_from_shares(b.reference, b.recent, epsilon)


def _finite(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


# ---------------------------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def as_json(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval:
    """Wilson score interval for successes/trials; trials = 0 gives the uninformative [0, 1] around 0."""
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"expected 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return Interval(0.0, 0.0, 1.0)
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(p, low, high)


def difference_interval(successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z_95
                        ) -> Interval:
    """Newcombe's hybrid Wilson interval for p_a - p_b (two independent proportions)."""
    a = wilson_interval(successes_a, trials_a, z)
    b = wilson_interval(successes_b, trials_b, z)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, max(-1.0, low), min(1.0, high))
