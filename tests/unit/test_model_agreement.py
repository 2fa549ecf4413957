"""Counting identical top-k lists between the in-process replay and the stack (models/agreement.py), and the
replay's frozen-model mode that the comparison runs the in-process side with."""

import numpy as np
import pandas as pd
import pytest

from models.agreement import Compared, agreement
from models.evaluate import EvaluationConfig, EvaluationError, replay, split_time
from models.ranking import Ranker
from models.registry import ONLINE_MODEL, LoadedModel
from tests.models_data import drifting_log
from tests.serving_models import batch_outputs


def test_only_identical_lists_agree_and_the_first_disagreements_are_kept_in_order():
    same = ("a", "b", "c")
    queries = [Compared(0, "u1", "a", same, same),
               Compared(1, "u1", "x", same, ("b", "a", "c")),  # same items, another order: a disagreement
               Compared(2, "u2", "c", same, same),
               Compared(3, "u3", "b", same, ("a", "b")),  # one item short
               Compared(4, "u4", "z", same, ("a", "b", "d"))]
    out = agreement(queries, k=3, keep=2)
    assert (out.compared, out.identical) == (5, 2)
    assert out.share == pytest.approx(0.4)
    assert [d.index for d in out.disagreements] == [1, 3]
    assert out.disagreements[0].served == ("b", "a", "c")
    # each side scored on the same queries: in-process hits a@1, c@3, b@2; the stack a@1 (q0), c@3, b@2 (q3)
    assert out.in_process["hitrate"] == pytest.approx(3 / 5)
    assert out.served["hitrate"] == pytest.approx(3 / 5)
    assert out.in_process["ndcg"] == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(3)) / 5)
    report = out.as_dict()
    assert report["identical"] == 2 and report["first_disagreements"][1]["through_stack"] == ["a", "b"]


def test_lists_are_compared_at_k_and_nothing_compared_is_no_disagreement():
    out = agreement([Compared(0, "u", "a", ("a", "b", "c"), ("a", "b", "x"))], k=2)
    assert out.identical == 1 and out.share == 1.0
    empty = agreement([], k=10)
    assert (empty.compared, empty.share, empty.served["ndcg"]) == (0, 1.0, 0.0)
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        agreement([], k=0)


@pytest.fixture(scope="module")
def world():
    events, items = drifting_log(n_users=120, n_items=60, days=15, sessions_per_user=6)
    epoch = (pd.to_datetime(events["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    as_of = split_time(epoch.to_numpy(), 0.8)
    return events, items, batch_outputs(events, items, as_of)


def test_a_frozen_online_model_scores_every_query_and_learns_nothing(world):
    events, items, outputs = world
    config = EvaluationConfig(online_update_every=200, online_weight=1.0)
    learned = replay(events, items, outputs, config)
    assert learned.online_model is not None  # the prequential replay trained one
    frozen = Ranker(LoadedModel(ONLINE_MODEL, "7", "", learned.online_model, []))
    asked = []
    first = replay(events, items, outputs, config, online_model=frozen, max_queries=150, on_query=asked.append)
    assert first.details["queries"] == len(asked) == 150
    assert first.details["online_updates"]["during_replay"] == 0 and first.online_model is None
    assert first.details["online_updates"]["frozen"] == "online-ranker v7"
    assert [q.position for q in asked] == list(range(asked[0].position, asked[0].position + 150))
    assert all(q.event_id == f"replay-{q.position}" for q in asked)
    for q in asked:  # asked exactly when the item is new to the user, and never recommending what they saw
        assert bool(q.hybrid) == (q.item_id not in q.seen)
        assert not set(q.hybrid) & q.seen and len(q.hybrid) <= 10
    # frozen means the same answers however often it runs, and the first queries do not depend on later ones
    again = []
    replay(events, items, outputs, config, online_model=frozen, max_queries=50, on_query=again.append)
    assert again == asked[:50]
    with pytest.raises(EvaluationError, match="max_queries: expected a positive integer"):
        replay(events, items, outputs, config, max_queries=0)
