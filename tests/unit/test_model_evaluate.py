"""The replay of the evaluation protocol over a batch run's outputs: four rows, sane numbers, the stream's own
rows, and recency pays off. (The batch run itself, Spark and MLflow included: tests/integration.)"""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from models.evaluate import (
    ONLINE_WEIGHTS,
    SYSTEMS,
    EvaluationConfig,
    EvaluationError,
    FrozenInputsRanker,
    ReplayStore,
    choose_online_weight,
    replay,
    split_time,
    write_report,
)
from models.online import coefficients
from pipelines.stream.session_features import features_from_log
from tandem.schema import Event
from tests.models_data import drifting_log
from tests.serving_models import batch_outputs


def _epoch(events):
    return ((pd.to_datetime(events["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy()


@pytest.fixture(scope="module")
def world():
    events, items = drifting_log(n_users=150, n_items=80, days=20, sessions_per_user=8)
    as_of = split_time(_epoch(events), 0.8)
    return events, items, batch_outputs(events, items, as_of)


@pytest.fixture(scope="module")
def result(world):
    events, items, outputs = world
    return replay(events, items, outputs, EvaluationConfig(online_update_every=200, online_weight=0.5),
                  online_weights=ONLINE_WEIGHTS)


def test_four_rows_in_protocol_order(result):
    assert [r["name"] for r in result.rows] == list(SYSTEMS)
    for row in result.rows:
        for key in ("hitrate@10", "ndcg@10", "recall@10"):
            assert 0.0 <= row[key] <= 1.0
        assert row["ndcg@10"] <= row["hitrate@10"]
    assert result.details["queries"] == result.rows[0]["queries"] > 0
    assert result.details["online_updates"]["during_replay"] > 0
    assert result.details["batch_ranker"]["feature_service"] == "ranker_batch_v1"


def test_the_weight_sweep_ranks_the_hybrids_own_candidates(result):
    """Each weight re-blends the same candidates and scores; at the hybrid's own weight it is the hybrid row."""
    sweep = result.details["online_weight_sweep"]
    assert list(sweep) == [str(w) for w in ONLINE_WEIGHTS]
    assert sweep["0.5"] == pytest.approx(result.row("hybrid")["ndcg@10"])
    best = choose_online_weight(result)
    assert sweep[str(best)] == max(sweep.values())



def test_the_replay_remembers_batch_scores_without_changing_them(world):
    """The frozen batch rows' scores, remembered per row, are the champion's own: repeated rows, rows first seen
    in a later call and a row that differs in one feature all score as the model scores them."""
    _, _, outputs = world
    width = len(outputs.batch.feature_columns)
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(12, width)).astype(np.float32)
    rows[2, :] = np.nan
    frozen = FrozenInputsRanker.of(outputs.batch)
    first = rows[[0, 1, 2, 0, 2, 3]]
    assert np.array_equal(frozen.score(first), outputs.batch.score(first))
    assert len(frozen.memo) == 4
    later = np.vstack([rows[[3, 4, 0]], rows[[4]] + np.eye(1, width, 0, dtype=np.float32)])
    assert np.array_equal(frozen.score(later), outputs.batch.score(later))
    assert len(frozen.memo) == 6
    assert FrozenInputsRanker.of(None) is None
    full = FrozenInputsRanker(outputs.batch.loaded, max_rows=3)  # past its bound it scores without remembering
    assert np.array_equal(full.score(rows[:2]), outputs.batch.score(rows[:2])) and len(full.memo) == 2
    assert np.array_equal(full.score(rows[1:6]), outputs.batch.score(rows[1:6])) and len(full.memo) == 2
    assert np.array_equal(full.score(rows[[0, 1]]), outputs.batch.score(rows[[0, 1]]))

def test_a_replay_needs_an_online_weight(world):
    events, items, outputs = world
    with pytest.raises(EvaluationError, match="validation split"):
        replay(events, items, outputs, EvaluationConfig())


def test_the_online_model_goes_on_from_the_one_it_is_given(world, result):
    """After T the replay starts from the validation replay's online model, as the stream's carries on: every query
    is ranked with it from the first, and it learns on in a copy."""
    events, items, outputs = world
    start = result.online_model
    before = coefficients(start)
    config = EvaluationConfig(online_update_every=10**9, online_weight=1.0)  # no step in this short replay
    cold = replay(events, items, outputs, config, online_weights=(0.0, 1.0))
    warm = replay(events, items, outputs, config, online_weights=(0.0, 1.0), online_start=start)
    assert cold.online_model is None and cold.details["online_updates"]["started"] == "untrained"
    assert warm.details["online_updates"]["during_replay"] == 0
    assert warm.online_model is not start and coefficients(warm.online_model) == before
    assert warm.details["online_weight_sweep"]["1.0"] != cold.details["online_weight_sweep"]["1.0"]
    stepped = replay(events, items, outputs, replace(config, online_update_every=200), online_start=start)
    assert stepped.details["online_updates"]["during_replay"] > 0
    assert coefficients(stepped.online_model) != before and coefficients(start) == before


def test_per_day_quality_adds_up_to_the_table(result):
    per_day = result.details["per_day"]
    assert sum(d["queries"] for d in per_day) == result.details["queries"]
    assert [d["day"] for d in per_day] == sorted(d["day"] for d in per_day)
    for name in SYSTEMS:
        weighted = sum(d[f"{name}:hitrate@10"] * d["queries"] for d in per_day) / result.details["queries"]
        assert weighted == pytest.approx(result.row(name)["hitrate@10"])


def test_the_stream_and_the_hybrid_follow_the_session(result):
    """Sessions stay in one category: what the stream just saw beats anything frozen at T."""
    assert result.row("stream-only")["ndcg@10"] > 1.5 * result.row("popularity")["ndcg@10"]
    assert result.row("hybrid")["ndcg@10"] > result.row("batch-only")["ndcg@10"]


def test_the_replay_store_holds_what_the_stream_processor_writes(world):
    """After the replay's events, each user's session row and each item's trending row equal the processor's
    from-scratch recomputation over the same events (pipelines/stream/session_features.features_from_log)."""
    events, items, outputs = world
    category = dict(zip(items["item_id"], items["category"], strict=True))
    store = ReplayStore(outputs, category)
    later = events[_epoch(events) >= outputs.as_of].sort_values("ts", kind="stable")
    for e in later.itertuples():
        store.observe(e.event_id, e.user_id, e.item_id, e.event_type, pd.Timestamp(e.ts).timestamp())
    reference = features_from_log([Event(e.event_id, e.user_id, e.item_id, e.event_type,
                                         pd.Timestamp(e.ts).to_pydatetime(), session_id=e.session_id)
                                   for e in later.itertuples()], category)
    assert store.sessions == reference.users
    for item, features in reference.items.items():
        assert store.trend[store.index[item]] == pytest.approx(features["trend_score"])
    some = next(iter(reference.users))
    values = store.values(some)
    assert values["user_session_v1__last_item_ids"] == reference.users[some]["last_item_ids"]
    assert all(k.startswith(("user_features_v1__", "user_candidates_v1__", "user_session_v1__")) for k in values)


def test_report_files(result, tmp_path):
    md, js = write_report(result, tmp_path / "reports", json_path=tmp_path / "out.json")
    payload = json.loads((tmp_path / "out.json").read_text())
    assert [set(r) for r in payload["rows"]] == [{"name", "hitrate@10", "ndcg@10", "recall@10"}] * 4
    assert "| hybrid |" in md.read_text() and js.exists()
    assert "in-process" in payload["mode"]


def test_bad_config_and_a_split_with_nothing_to_replay_are_refused(world):
    events, items, outputs = world
    with pytest.raises(EvaluationError, match="split_quantile"):
        EvaluationConfig(split_quantile=1.2)
    with pytest.raises(EvaluationError, match="online_weight"):
        EvaluationConfig(online_weight=1.5)
    late = type(outputs)(float(_epoch(events).max()) + 1, outputs.users, outputs.item_ids, outputs.items,
                         outputs.batch)
    with pytest.raises(EvaluationError, match="nothing to replay"):
        replay(events, items, late, EvaluationConfig(online_weight=0.5))


def test_new_and_returning_users_split_the_queries(result):
    groups = result.details["by_user"]
    assert set(groups) == {"new", "returning"}
    assert groups["new"]["queries"] + groups["returning"]["queries"] == result.details["queries"]
    for name in SYSTEMS:
        total = sum(g["ndcg"][name] * g["queries"] for g in groups.values()) / result.details["queries"]
        assert total == pytest.approx(result.row(name)["ndcg@10"])
    assert "returning (" in result.markdown()


def test_by_user_group_counts_each_group_apart():
    from models.evaluate import by_user_group

    groups = by_user_group(np.array([True, False, False, True]), {"s": [1, 0, 3, 0]}, k=10)
    assert groups["returning"] == {"queries": 2, "hitrate": {"s": 0.5}, "ndcg": {"s": 0.5}}
    assert groups["new"]["queries"] == 2 and groups["new"]["hitrate"] == {"s": 0.5}
    assert groups["new"]["ndcg"]["s"] == pytest.approx(0.5 / np.log2(4))
