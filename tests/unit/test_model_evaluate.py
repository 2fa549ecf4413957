"""The evaluation protocol on a small drifting log: four rows, sane numbers, and recency pays off."""

import json

import numpy as np
import pytest

from models.evaluate import SYSTEMS, EvaluationConfig, EvaluationError, evaluate_events, write_report
from models.stream_state import StreamProcessorState
from tests.models_data import drifting_log


@pytest.fixture(scope="module")
def result():
    events, items = drifting_log(n_users=150, n_items=80, days=20, sessions_per_user=8)
    return evaluate_events(events, items, EvaluationConfig(online_update_every=200))


def test_four_rows_in_protocol_order(result):
    assert [r["name"] for r in result.rows] == list(SYSTEMS)
    for row in result.rows:
        for key in ("hitrate@10", "ndcg@10", "recall@10"):
            assert 0.0 <= row[key] <= 1.0
        assert row["ndcg@10"] <= row["hitrate@10"]
    assert result.details["queries"] == result.rows[0]["queries"] > 0
    assert result.details["online_updates"]["during_replay"] > 0


def test_per_day_quality_adds_up_to_the_table(result):
    per_day = result.details["per_day"]
    assert sum(d["queries"] for d in per_day) == result.details["queries"]
    assert [d["day"] for d in per_day] == sorted(d["day"] for d in per_day)
    for name in SYSTEMS:
        weighted = sum(d[f"{name}:hitrate@10"] * d["queries"] for d in per_day) / result.details["queries"]
        assert weighted == pytest.approx(result.row(name)["hitrate@10"])


def test_hybrid_beats_batch_only_when_taste_drifts(result):
    assert result.row("hybrid")["ndcg@10"] > result.row("batch-only")["ndcg@10"]
    assert result.row("hybrid")["hitrate@10"] > result.row("popularity")["hitrate@10"]


def test_stream_state_is_injected():
    events, items = drifting_log(n_users=40, n_items=30, days=6, sessions_per_user=4)
    made = []

    def factory(catalog):
        made.append(catalog.n_categories)
        return StreamProcessorState(catalog)

    evaluate_events(events, items, EvaluationConfig(online_update_every=100), stream_state_factory=factory)
    assert made == [4]


def test_report_files(result, tmp_path):
    md, js = write_report(result, tmp_path / "reports", json_path=tmp_path / "out.json")
    payload = json.loads((tmp_path / "out.json").read_text())
    assert [set(r) for r in payload["rows"]] == [{"name", "hitrate@10", "ndcg@10", "recall@10"}] * 4
    assert "| hybrid |" in md.read_text() and js.exists()
    assert "in-process" in payload["mode"]


def test_bad_config_and_tiny_data_are_refused():
    with pytest.raises(EvaluationError, match="split_quantile"):
        EvaluationConfig(split_quantile=1.2)
    events, items = drifting_log(n_users=3, n_items=40, days=2, sessions_per_user=1)
    with pytest.raises(EvaluationError, match="at least 100"):
        evaluate_events(events, items)


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
