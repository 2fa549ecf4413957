"""Offline tables: schemas derived from the feature views, empty placeholders, idempotent day partitions."""

from datetime import UTC, date, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.batch import feast_repo, offline


@pytest.fixture
def offline_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_OFFLINE_DIR", str(tmp_path / "offline"))
    return tmp_path / "offline"


def test_stream_tables_start_empty_with_the_views_schema(offline_dir):
    assert offline.ensure_table("user_session_v1")
    table = pq.read_table(offline_dir / "user_session" / offline.PLACEHOLDER)
    view = feast_repo.feature_view("user_session_v1")
    assert table.num_rows == 0
    assert table.column_names == ["user_id", "event_timestamp", *[f.name for f in view.features], "created"]
    assert str(table.schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    assert table.schema.field("last_item_ids").type.value_type == "string"
    assert not offline.ensure_table("user_session_v1")  # idempotent


def test_writing_a_day_replaces_it_and_drops_the_placeholder(offline_dir):
    offline.ensure_table("user_candidates_v1")
    at = datetime(2026, 3, 10, tzinfo=UTC)
    rows = pd.DataFrame({"user_id": ["u1", "u2"], "candidate_item_ids": [["i1", "i2"], []],
                         "candidate_scores": [[0.9, 0.5], []], "candidate_source": ["batch-ranker/3"] * 2})
    offline.write_day("user_candidates_v1", rows, date(2026, 3, 9), at)
    offline.write_day("user_candidates_v1", rows.iloc[:1], date(2026, 3, 9), at)
    table_dir = offline_dir / "user_candidates"
    assert not (table_dir / offline.PLACEHOLDER).exists()
    assert offline.existing_days(table_dir) == {date(2026, 3, 9)}
    latest = offline.latest_rows(table_dir, "user_id")
    assert list(latest.index) == ["u1"] and list(latest.at["u1", "candidate_item_ids"]) == ["i1", "i2"]
    assert latest.at["u1", "event_timestamp"] == pd.Timestamp(at)


def test_rows_missing_a_column_are_named(offline_dir):
    rows = pd.DataFrame({"user_id": ["u1"], "candidate_item_ids": [["i1"]]})
    with pytest.raises(ValueError, match="lack column.*candidate_scores, candidate_source"):
        offline.write_day("user_candidates_v1", rows, date(2026, 3, 9), datetime(2026, 3, 10, tzinfo=UTC))
