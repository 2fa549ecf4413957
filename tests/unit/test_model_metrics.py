"""Ranking and classification metrics against hand-computed values."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from models.metrics import QueryMetrics, auc, grouped_ranking_metrics, ndcg_at_k, ndcg_of_list, rank_of, recall_at_k


def test_single_item_queries():
    m = QueryMetrics("x")
    assert m.add("b", ["a", "b", "c"]) == 2
    assert m.add("z", ["a", "b"]) == 0
    assert m.add("a", ["a"]) == 1
    row = m.summary(k=10)
    assert row["hitrate@10"] == pytest.approx(2 / 3)
    assert row["recall@10"] == row["hitrate@10"]
    assert row["ndcg@10"] == pytest.approx((1 / math.log2(3) + 0 + 1) / 3)
    assert row["queries"] == 3


def test_rank_beyond_k_counts_as_miss():
    assert ndcg_at_k(np.array([11]), 10) == 0.0
    assert rank_of("c", ["a", "b", "c"]) == 3


def test_list_metrics():
    assert recall_at_k(["a", "b"], ["a", "x", "b"], k=2) == 0.5
    assert ndcg_of_list(["a"], ["a", "b"], k=10) == 1.0
    assert ndcg_of_list(["b"], ["a", "b"], k=10) == pytest.approx(1 / math.log2(3))


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding makes ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="needs both classes"):
        auc(np.ones(3), np.arange(3))


def test_grouped_ranking_metrics_by_hand():
    groups = np.array(["u1", "u1", "u1", "u2", "u2", "u3"])
    labels = np.array([1, 0, 0, 0, 1, 0])
    scores = np.array([0.9, 0.5, 0.1, 0.8, 0.2, 0.3])
    out = grouped_ranking_metrics(groups, labels, scores, k=1)
    # u1's positive is first, u2's second; u3 has no positive and is skipped
    assert out["groups"] == 2
    assert out["hitrate@1"] == 0.5
    assert out["ndcg@1"] == 0.5
    out3 = grouped_ranking_metrics(groups, labels, scores, k=3)
    assert out3["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_ties_do_not_favour_positives():
    groups = np.array(["u"] * 4)
    labels = np.array([1, 0, 0, 0])
    out = grouped_ranking_metrics(groups, labels, np.zeros(4), k=1)
    assert out["hitrate@1"] == 0.0
