"""The pure ranking logic of /recommend: A/B assignment, candidates, blending (models/blend.py), top-k.

How online rows become model inputs is tests/unit/test_serving_rows.py."""

from collections import Counter

import numpy as np
import pytest

from models.blend import blend_scores
from models.ranking import MAX_CANDIDATES, UserView, gather_candidates, top_k
from serving.recommend import assign_variant, feature_age_s
from tandem.settings import SettingsError, Variant, parse_ab_variants

VARIANTS = (Variant("hybrid", 0.5, 0.5), Variant("batch_only", 0.5, 0.0))


def test_assignment_is_deterministic_and_follows_the_shares():
    assert all(assign_variant(f"u{i}", VARIANTS) == assign_variant(f"u{i}", VARIANTS) for i in range(100))
    counts = Counter(assign_variant(f"user-{i}", VARIANTS).name for i in range(20_000))
    assert abs(counts["hybrid"] / 20_000 - 0.5) < 0.02
    skewed = (Variant("a", 0.9, 0.5), Variant("b", 0.1, 0.0))
    counts = Counter(assign_variant(f"user-{i}", skewed).name for i in range(20_000))
    assert abs(counts["b"] / 20_000 - 0.1) < 0.01


def test_assignment_changes_with_the_salt_only():
    users = [f"u{i}" for i in range(200)]
    a = [assign_variant(u, VARIANTS).name for u in users]
    b = [assign_variant(u, VARIANTS, salt="another-experiment").name for u in users]
    assert a != b


def test_ab_variants_setting_is_validated():
    assert parse_ab_variants('{"x": {"share": 1.0}}') == (Variant("x", 1.0, 0.0),)
    for bad, words in [("nope", "not valid JSON"), ("{}", "non-empty"), ('{"a": {"share": 0.4}}', "sum to 0.4"),
                       ('{"a": {"share": 1, "online_weight": 2}}', "online_weight"),
                       ('{"a": {"share": 1, "weight": 0}}', "expected")]:
        with pytest.raises(SettingsError, match=words):
            parse_ab_variants(bad)


def test_candidates_merge_sources_in_order_and_skip_seen():
    user = UserView("u", candidates=("p1", "p2", "s1", "p3"), session_items=("s1", "s2"))
    neighbours = {"s1": ["c1", "c2", "p1"], "s2": ["c3", "s1"]}
    got = gather_candidates(user, neighbours, trending=["t1", "p2"], popular=["pop1", "t1"], exclude=["p3"])
    assert got == [("c1", "neighbours"), ("c3", "neighbours"), ("c2", "neighbours"), ("p1", "neighbours"),
                   ("p2", "precomputed"), ("t1", "trending"), ("pop1", "popular")]


def test_session_category_items_come_after_the_item_neighbours_and_before_the_precomputed_list():
    user = UserView("u", candidates=("p1",), session_items=("s1",), last_category="shoes")
    got = gather_candidates(user, {"s1": ["c1"]}, trending=[], popular=[], session_category=["s1", "k1", "c1"])
    assert got == [("c1", "neighbours"), ("k1", "session_category"), ("p1", "precomputed")]


def test_cold_user_gets_popular_items_and_the_budget_holds():
    popular = [f"i{i}" for i in range(500)]
    got = gather_candidates(UserView("new"), {}, trending=[], popular=popular)
    assert [i for i, _ in got] == popular[:MAX_CANDIDATES]
    assert {s for _, s in got} == {"popular"}
    assert not UserView("new").known


def test_blend_weights_and_batch_only():
    batch, online = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert blend_scores(batch, online, 0.25).tolist() == [0.75, 0.25]
    assert blend_scores(batch, None, 0.5).tolist() == batch.tolist()
    assert blend_scores(batch, online, 0.0).tolist() == batch.tolist()
    assert blend_scores(batch, np.array([np.nan, 1.0]), 0.5).tolist() == [1.0, 0.5]
    with pytest.raises(ValueError, match="online_weight"):
        blend_scores(batch, online, 1.5)


def test_top_k_orders_by_blended_score_and_keeps_both_scores():
    got = top_k(["a", "b", "c"], np.array([0.1, 0.9, 0.5]), np.array([1, 2, 3.0]), None, k=2)
    assert [(r.item_id, r.batch_score, r.online_score) for r in got] == [("b", 2.0, None), ("c", 3.0, None)]
    assert top_k([], np.array([]), None, None, 5) == []
    assert top_k(["a"], np.array([np.nan]), None, None, 1)[0].score == 0.0


def test_feature_age_uses_the_freshest_timestamp():
    assert feature_age_s(100.0, 90.0, None, 95.0) == 5.0
    assert feature_age_s(100.0) == 0.0
    assert feature_age_s(100.0, 101.0) == 0.0
