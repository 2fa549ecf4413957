"""The GX suites catch what they promise, and the report names each failed expectation and its row count."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pipelines.batch import feast_repo
from tandem.settings import Settings
from tests.feature_defects import PLANTED_FAILURES, plant_item_defects
from validation.checkpoints import ValidationFailed, Validator
from validation.suites import feature_table_suite, raw_events_suite, training_set_suite

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def validator(tmp_path_factory):
    return Validator(Settings(home=tmp_path_factory.mktemp("gx-home")))


def events(rows: list[dict]) -> pd.DataFrame:
    base = {"user_id": "u1", "item_id": "i1", "event_type": "click", "value": None, "ts": NOW - timedelta(hours=1),
            "session_id": "s1"}
    df = pd.DataFrame([{**base, "event_id": f"e{k}", **r} for k, r in enumerate(rows)])
    df["ts"] = pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]")
    return df[["event_id", "user_id", "item_id", "event_type", "value", "ts", "session_id"]]


def test_clean_events_pass(validator):
    df = events([{}, {"event_type": "rating", "value": 4.5}, {"event_type": "purchase", "value": 19.9}])
    report = validator.run("raw_events", df, raw_events_suite(now=NOW))
    assert report.success, report.describe()
    assert report.evaluated == len(raw_events_suite(now=NOW))
    assert report.docs.exists()


def test_planted_defects_are_each_named_with_their_row_count(validator):
    df = events([{}, {}, {"user_id": None}, {"ts": NOW + timedelta(days=30)}, {"event_type": "like"},
                 {"event_type": "rating", "value": 7.0}, {"event_type": "rating", "value": None}])
    df.loc[1, "event_id"] = df.loc[0, "event_id"]
    report = validator.run("raw_events", df, raw_events_suite(now=NOW))
    failed = {(f.expectation, f.column, f.unexpected_count) for f in report.failures}
    assert failed == {
        ("expect_column_values_to_be_unique", "event_id", 2),
        ("expect_column_values_to_not_be_null", "user_id", 1),
        ("expect_column_values_to_be_between", "ts", 1),
        ("expect_column_values_to_be_in_set", "event_type", 1),
        ("expect_column_values_to_be_between", "value", 1),
        ("expect_column_values_to_not_be_null", "value", 1),
    }
    text = str(ValidationFailed([report]))
    assert "expect_column_values_to_be_in_set(event_type) failed on 1 of 7 rows (e.g. 'like')" in text
    assert ("failed on 1 of 2 rows (e.g. 7.0); expected min_value=0.0, max_value=5.0 "
            "where event_type == 'rating'") in text


def test_missing_columns_fail_the_schema_check(validator):
    df = events([{}]).drop(columns=["session_id"])
    report = validator.run("raw_events", df, raw_events_suite(now=NOW))
    assert [f.expectation for f in report.failures] == ["expect_table_columns_to_match_set"]


def test_feature_table_suite_checks_ranges_keys_and_snapshot_times(validator):
    view = feast_repo.feature_view("item_features_v1")
    names = [f.name for f in view.features]
    good = {n: 0 for n in names} | {"category": "A", "price": 3.0, "avg_rating": None, "conversion_rate": 0.5}
    rows = plant_item_defects({"item_id": "i1", "event_timestamp": NOW, **good},
                              {"item_id": "i2", "event_timestamp": NOW, **good}, NOW + timedelta(days=3))
    df = pd.DataFrame(rows)
    report = validator.run("item_features_v1", df, feature_table_suite(view, "item_id", now=NOW))
    failed = {(f.expectation, f.column, f.unexpected_count) for f in report.failures}
    assert failed == PLANTED_FAILURES


def test_training_set_suite_wants_both_labels(validator):
    cols = ["user_features_v1__purchase_rate"]
    df = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i1"], "event_timestamp": [NOW, NOW],
                       "label": [1, 1], cols[0]: [0.1, None]})
    report = validator.run("training_set", df, training_set_suite(cols, now=NOW))
    assert [f.expectation for f in report.failures] == ["expect_column_mean_to_be_between"]
