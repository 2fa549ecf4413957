"""Blending the batch and online scores into the one score serving ranks by (imported by serving/ too).

Both models output log-odds; the blend is a weighted sum in log-odds space. With no online score
(no online model yet, or the stream is degraded) the blend is the batch score alone, so the order
falls back to the batch ranker's.
"""

from __future__ import annotations

import numpy as np

DEFAULT_ONLINE_WEIGHT = 0.7


def blend_scores(batch_scores: np.ndarray, online_scores: np.ndarray | None,
                 online_weight: float = DEFAULT_ONLINE_WEIGHT) -> np.ndarray:
    """(1 - w) * batch + w * online, per candidate; `online_scores=None` returns the batch scores.

    Scores are log-odds (XGBoost margin, SGD decision function). NaN online scores (a candidate
    the online model could not score) fall back to that candidate's batch score.
    """
    if not 0.0 <= online_weight <= 1.0:
        raise ValueError(f"online_weight: expected a value in [0, 1], got {online_weight!r}")
    batch = np.asarray(batch_scores, dtype=float)
    if online_scores is None:
        return batch.copy()
    online = np.asarray(online_scores, dtype=float)
    if online.shape != batch.shape:
        raise ValueError(f"blend_scores: {batch.shape[0]} batch scores but {online.shape[0]} online scores")
    online = np.where(np.isnan(online), batch, online)
    return (1.0 - online_weight) * batch + online_weight * online


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Log-odds to probability (for the API's per-model scores)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))
