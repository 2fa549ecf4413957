"""Training/serving skew: models trained by models/ code, scored through serving's path on the same rows.

The online rows go through Feast's value encoding and serving's decoder (what Redis holds and what
serving reads back), then `models.rows.model_rows` / `online_inputs` and serving's `Ranker`; the
scores must equal what models/ computes on the training set for the same (user, item) rows.
"""

import numpy as np
import pandas as pd
import pytest

from models.batch_steps import CATEGORY_AFFINITY
from models.blend import blend_scores
from models.online import ONLINE_FEATURES, online_features_from_store, predict_margin
from models.ranking import Ranker
from models.registry import BATCH_MODEL, ONLINE_MODEL, LoadedModel
from models.rows import (
    FeatureSkewError,
    check_columns,
    model_rows,
    online_inputs,
    service_columns,
    session_values,
)
from models.train import evaluate_ranker
from serving.features import decode_value
from tests.serving_models import FEATURE_SERVICE, item_rows, repo, train_batch, train_online, training_frame, user_rows

CATS = ("books", "toys", "games")


@pytest.fixture(scope="module")
def world():
    service, user_view, item_view = repo()
    users = [f"u{u:03d}" for u in range(30)]
    items = [f"i{i:03d}" for i in range(40)]
    user_df = user_rows(user_view, users, lambda u: CATS[int(u[1:]) % 3], lambda u: CATS[(int(u[1:]) + 1) % 3])
    item_df = item_rows(item_view, items, lambda i: CATS[int(i[1:]) % 3])
    frame = training_frame(user_df, item_df, n=1200)
    ranker, prepared = train_batch(frame, service)
    return service, user_view, item_view, user_df, item_df, ranker, prepared


def _online_value(value, dtype):
    """A value as Feast writes it to Redis, decoded the way serving reads it."""
    from feast.type_map import python_values_to_proto_values

    return decode_value(python_values_to_proto_values([value], dtype.to_value_type())[0].SerializeToString())


def _store_user(user_view, row: pd.Series) -> dict:
    return {f"{user_view.name}__{f.name}": _online_value(None if _isnan(row[f.name]) else row[f.name], f.dtype)
            for f in user_view.features}


def _store_items(item_view, item_df: pd.DataFrame) -> tuple[dict[str, np.ndarray], list]:
    """The catalog's numeric columns by full name, as serving's item snapshot holds them."""
    columns: dict[str, np.ndarray] = {}
    for f in item_view.features:
        decoded = [_online_value(None if _isnan(v) else v, f.dtype) for v in item_df[f.name]]
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in decoded):
            columns[f"{item_view.name}__{f.name}"] = np.array([np.nan if v is None else float(v) for v in decoded])
    return columns, list(item_df["category"])


def _isnan(v) -> bool:
    return isinstance(v, float) and np.isnan(v)


def test_the_batch_rankers_columns_are_its_feature_service_plus_derived_affinity(world):
    service, *_, ranker, _ = world
    assert CATEGORY_AFFINITY in ranker.feature_columns
    check_columns(ranker.feature_columns, service_columns(service), FEATURE_SERVICE)
    assert [c for c in ranker.feature_columns if c != CATEGORY_AFFINITY] == \
        [c for c in service_columns(service) if c in ranker.feature_columns]


def test_served_batch_scores_equal_training_scores_on_the_same_rows(world):
    service, user_view, item_view, user_df, item_df, ranker, prepared = world
    item_columns, categories = _store_items(item_view, item_df)
    index = {item: k for k, item in enumerate(item_df["item_id"])}
    served = Ranker(LoadedModel(BATCH_MODEL, "1", "run", ranker, list(ranker.feature_columns),
                                {"feature_service": FEATURE_SERVICE}))
    got = np.zeros(len(prepared))
    for user, group in prepared.groupby("user_id"):  # one request per user: that user's rows as candidates
        values = _store_user(user_view, user_df.set_index("user_id").loc[user])
        rows = np.array([index[i] for i in group["item_id"]])
        got[group.index] = served.score(model_rows(served.feature_columns, values, item_columns, rows,
                                                   [categories[r] for r in rows]))
    expected = ranker.predict_margin(prepared)  # what the batch run scores (train gate, candidate step)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # and so the holdout metrics the champion gate compares are the same whether scored in training or serving
    assert evaluate_ranker(1 / (1 + np.exp(-got)), prepared) == evaluate_ranker(ranker.predict(prepared), prepared)


def test_a_cold_user_is_scored_like_a_training_row_without_a_user_snapshot(world):
    _, _, item_view, _, item_df, ranker, prepared = world
    item_columns, categories = _store_items(item_view, item_df)
    cold = prepared.head(5).copy()
    for col in cold.columns:
        if col.startswith("user_features_v1__"):
            cold[col] = [None] * len(cold) if cold[col].dtype == object else np.nan
    cold[CATEGORY_AFFINITY] = 0.0  # what add_category_affinity derives for a user without top categories
    index = {item: k for k, item in enumerate(item_df["item_id"])}
    rows = np.array([index[i] for i in cold["item_id"]])
    x = model_rows(ranker.feature_columns, {}, item_columns, rows, [categories[r] for r in rows])
    np.testing.assert_allclose(ranker.predict_margin(x), ranker.predict_margin(cold), atol=1e-6)


def test_columns_outside_the_feature_service_are_skew_and_say_so(world):
    service, *_, ranker, _ = world
    with pytest.raises(FeatureSkewError, match="user_item_covisit"):
        check_columns([*ranker.feature_columns, "user_item_covisit"], service_columns(service), FEATURE_SERVICE)
    with pytest.raises(FeatureSkewError, match="not in the Feast registry"):
        check_columns(ranker.feature_columns, None, "ranker_batch_v1 (in-process)")


def test_online_inputs_are_the_models_function_on_what_serving_reads():
    values = {"user_session_v1__last_item_ids": ["a", "b"], "user_session_v1__last_category": "toys",
              "user_session_v1__last_event_epoch": 1000.0, "user_session_v1__session_events": 3,
              "user_session_v1__session_clicks": 1, "user_features_v1__events_7d": 4}
    neighbours = {"a": ("c1", "c2"), "b": ("c2",), "z": ("c1",)}
    scores = {"a": (4.0, 2.0), "b": (6.0,), "z": (9.0,)}
    batch = np.array([0.5, -0.2, 1.0])
    got = online_inputs(batch, ["c1", "c2", "c3"], ["toys", None, "books"], values, neighbours, scores,
                        np.array([1.0, np.nan, 0.0]), now=1100.0)
    expected = online_features_from_store(
        batch, ["c1", "c2", "c3"], ["toys", "unknown", "books"],
        {"last_item_ids": ["a", "b"], "last_category": "toys", "last_event_epoch": 1000.0, "session_events": 3,
         "session_clicks": 1}, {"a": (["c1", "c2"], [4.0, 2.0]), "b": (["c2"], [6.0])}, np.array([1.0, 0.0, 0.0]),
        1100.0, returning=True)
    np.testing.assert_array_equal(got, expected)
    column = {name: got[:, k] for k, name in enumerate(ONLINE_FEATURES)}
    neighbour_sum = np.array([4.0, 2.0 + 6.0 / 2, 0.0])  # 1/position of the last items
    np.testing.assert_allclose(column["last_item_neighbour_log"], np.log1p(neighbour_sum))
    np.testing.assert_allclose(column["neighbour_share"], neighbour_sum / 5.0)  # relative to the request's best
    np.testing.assert_allclose(column["batch_logit_gap"], batch - 1.0)
    assert column["returning"].tolist() == [1.0] * 3  # user_features_v1 holds a row for the user
    np.testing.assert_allclose(column["batch_logit_returning"], batch)
    assert column["session_active"].tolist() == [1.0, 1.0, 1.0]
    assert session_values({"user_features_v1__events_7d": 4}) is None
    # the stream's session category counts (user_session_v1) become the session's category shares
    shares = online_inputs(batch, ["c1", "c2", "c3"], ["toys", None, "books"],
                           {**values, "user_session_v1__session_categories": ["toys", "books"],
                            "user_session_v1__session_category_counts": [3, 1]}, neighbours, scores, None, now=1100.0)
    assert shares[:, ONLINE_FEATURES.index("session_category_share")].tolist() == [0.75, 0.0, 0.25]
    cold = online_inputs(batch[:1], ["c1"], ["toys"], {}, neighbours, scores, None, now=1100.0)
    # a user with neither a batch profile nor a session: only the batch score (and its gap, 0 for one candidate)
    assert cold[0].tolist() == [0.5] + [0.0] * (len(ONLINE_FEATURES) - 1)


def test_served_online_and_blended_scores_equal_the_models_functions(world):
    model, sanity = train_online(seed=3)
    assert sanity.success, sanity.reason
    served = Ranker(LoadedModel(ONLINE_MODEL, "1", "run", model, list(ONLINE_FEATURES)))
    values = {"user_session_v1__last_item_ids": ["a"], "user_session_v1__last_event_epoch": 1000.0}
    batch = np.array([0.3, 0.3, -1.0])
    x = online_inputs(batch, ["c1", "c2", "c3"], ["t", "t", "t"], values, {"a": ("c1",)}, {"a": (5.0,)}, None,
                      now=1010.0)
    online = served.score(x)
    np.testing.assert_array_equal(online, predict_margin(model, x))
    assert online[0] > online[1]  # co-visited with the session's last item: the online model lifts it
    np.testing.assert_array_equal(blend_scores(batch, online, 0.5), 0.5 * batch + 0.5 * online)
