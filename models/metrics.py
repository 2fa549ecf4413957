"""Ranking and classification metrics, pure numpy: HitRate/NDCG/Recall@k and AUC.

Two shapes are supported. Replay queries (DESIGN.md §5) reveal one item per query: `rank_of`
gives its 1-based rank in a top-k list (0 = not in the list) and `QueryMetrics` accumulates
HitRate@k, NDCG@k (1/log2(rank+1)) and Recall@k. Grouped frames (a holdout of labelled rows
per user) are scored by `grouped_ranking_metrics`, which ranks each user's rows by score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def rank_of(item: object, top: Sequence[object]) -> int:
    """1-based position of `item` in `top`, 0 if it is absent."""
    for pos, candidate in enumerate(top, start=1):
        if candidate == item:
            return pos
    return 0


def dcg_gain(rank: int) -> float:
    """The discounted gain of one relevant item at 1-based `rank` (0 = not retrieved)."""
    return 0.0 if rank <= 0 else 1.0 / float(np.log2(rank + 1))


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose revealed item is in the top k (ranks are 1-based, 0 = missing)."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return 0.0
    return float(np.mean((ranks > 0) & (ranks <= k)))


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k of single-relevant-item queries: 1/log2(rank+1) inside the top k, else 0."""
    ranks = np.asarray(ranks, dtype=float)
    if ranks.size == 0:
        return 0.0
    inside = (ranks > 0) & (ranks <= k)
    gains = np.zeros_like(ranks)
    gains[inside] = 1.0 / np.log2(ranks[inside] + 1.0)
    return float(gains.mean())


def recall_at_k(relevant: Sequence[object], top: Sequence[object], k: int) -> float:
    """Share of the relevant items found in the first k of `top` (0 when nothing is relevant)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(list(top)[:k])) / len(rel)


def ndcg_of_list(relevant: Sequence[object], top: Sequence[object], k: int) -> float:
    """NDCG@k of a ranked list against a set of equally relevant items."""
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(dcg_gain(pos) for pos, item in enumerate(list(top)[:k], start=1) if item in rel)
    ideal = sum(dcg_gain(pos) for pos in range(1, min(len(rel), k) + 1))
    return dcg / ideal


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); ValueError if one class is missing."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    if labels.shape != scores.shape:
        raise ValueError(f"auc: labels have shape {labels.shape} but scores {scores.shape}")
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auc: needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=float)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class QueryMetrics:
    """Accumulates the rank of the revealed item per replay query; `summary(k)` gives the report row."""

    name: str
    ranks: list[int] = field(default_factory=list)

    def add(self, item: object, top: Sequence[object]) -> int:
        rank = rank_of(item, top)
        self.ranks.append(rank)
        return rank

    def summary(self, k: int = 10) -> dict[str, float | str | int]:
        ranks = np.asarray(self.ranks)
        # one revealed item per query, so recall@k equals hit rate@k
        hit = hit_rate_at_k(ranks, k)
        return {"name": self.name, f"hitrate@{k}": hit, f"ndcg@{k}": ndcg_at_k(ranks, k), f"recall@{k}": hit,
                "queries": int(ranks.size)}


def grouped_ranking_metrics(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10
                            ) -> dict[str, float]:
    """HitRate/NDCG/Recall@k averaged over groups (users) that have at least one positive row.

    Each group's rows are ranked by score (descending); its positives are the relevant items.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    if not (len(groups) == len(labels) == len(scores)):
        raise ValueError(f"grouped_ranking_metrics: lengths differ (groups {len(groups)}, labels {len(labels)}, "
                         f"scores {len(scores)})")
    # sort by group, then score descending, ties broken pessimistically (negatives first) so a constant
    # scorer cannot look good because positives happen to come first in the frame
    order = np.lexsort((labels, -scores, groups))
    g, lab = groups[order], labels[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    group_index = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(g)]))
    rank = np.arange(len(g)) - starts[group_index] + 1
    n_groups = len(starts)
    n_pos = np.bincount(group_index, weights=lab, minlength=n_groups)
    in_top = lab & (rank <= k)
    hits = np.bincount(group_index, weights=in_top, minlength=n_groups)
    dcg = np.bincount(group_index, weights=np.where(in_top, 1.0 / np.log2(rank + 1.0), 0.0), minlength=n_groups)
    ideal_cum = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))
    ideal = ideal_cum[np.minimum(n_pos, k).astype(int).clip(1) - 1]
    valid = n_pos > 0
    if not valid.any():
        return {f"hitrate@{k}": 0.0, f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, "groups": 0}
    return {
        f"hitrate@{k}": float(np.mean(hits[valid] > 0)),
        f"ndcg@{k}": float(np.mean(dcg[valid] / ideal[valid])),
        f"recall@{k}": float(np.mean(hits[valid] / n_pos[valid])),
        "groups": int(valid.sum()),
    }
