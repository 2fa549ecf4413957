"""The Feast-path adapters: derived category affinity, numeric feature columns, the time split."""

import numpy as np
import pandas as pd
import pytest

from models.batch_steps import CATEGORY_AFFINITY, add_category_affinity, model_feature_columns, split_by_time
from models.train import TrainingError, monotone_constraints


def _frame():
    return pd.DataFrame({
        "user_id": ["a", "a", "b", "b"],
        "item_id": ["x", "y", "x", "z"],
        "event_timestamp": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"], utc=True),
        "label": [1, 0, 0, 1],
        "user_features_v1__events_7d": [3, 3, 1, 1],
        "user_features_v1__top_category": ["books", "books", None, None],
        "user_features_v1__top_categories": [["books", "toys"], ["books", "toys"], None, None],
        "user_features_v1__top_category_shares": [[0.7, 0.3], [0.7, 0.3], None, None],
        "item_features_v1__category": ["toys", "games", "toys", "books"],
        "item_features_v1__price": [1.0, 2.0, np.nan, 4.0],
    })


def test_category_affinity_is_the_users_share_of_the_items_category():
    out = add_category_affinity(_frame())
    assert list(out[CATEGORY_AFFINITY]) == [0.3, 0.0, 0.0, 0.0]
    with pytest.raises(TrainingError, match="lacks item_features_v1__category"):
        add_category_affinity(_frame().drop(columns=["item_features_v1__category"]))


def test_only_numeric_service_columns_are_trained_on_and_affinity_is_constrained():
    frame = add_category_affinity(_frame())
    service = [c for c in frame.columns if "__" in c]
    cols = model_feature_columns(frame, service)
    assert cols == ["user_features_v1__events_7d", "item_features_v1__price", CATEGORY_AFFINITY]
    assert monotone_constraints(cols) == (0, 0, 1)


def test_split_by_time_holds_out_the_latest_rows():
    frame = pd.concat([_frame()] * 5, ignore_index=True)
    frame["event_timestamp"] = pd.date_range("2025-01-01", periods=len(frame), freq="h", tz="UTC")
    train, holdout = split_by_time(frame, 0.2)
    assert train["event_timestamp"].max() < holdout["event_timestamp"].min()
    assert len(holdout) == 4
    with pytest.raises(TrainingError, match="lacks positives or negatives"):
        split_by_time(frame.assign(label=1))


def test_category_affinity_for_serving_matches_the_training_derivation():
    from models.batch_steps import category_affinity

    frame = add_category_affinity(_frame())
    first = frame.iloc[0]
    got = category_affinity(first["user_features_v1__top_categories"], first["user_features_v1__top_category_shares"],
                            list(frame["item_features_v1__category"]))
    assert list(got) == [0.3, 0.0, 0.3, 0.7]
    assert list(category_affinity(None, None, ["toys", None])) == [0.0, 0.0]
