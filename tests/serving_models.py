"""Real models for the serving tests, trained by models/ code on small data shaped like the batch run's.

* `user_rows` / `item_rows` — one row per user / item with every field of the repo's
  user_features_v1 / item_features_v1 (bare names, as written to the online store).
* `training_frame` — the Feast training set those rows make: `<view>__<feature>` columns of the
  FeatureService (`ranker_batch_v1`), as `get_historical_features(full_feature_names=True)` returns it,
  labelled so that a user's category affinity and an item's popularity matter.
* `train_batch` — `models.batch_steps.prepare_feast_frame` + `models.train.train_batch_ranker`, as
  `tandem batch run`'s train step does; `train_online` — `models.online` partial_fit on examples in
  which co-visitation with the session's last items matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from models.batch_steps import prepare_feast_frame
from models.online import LABEL, ONLINE_FEATURES, new_online_model, partial_fit, sanity_check
from models.rows import service_columns
from models.train import BatchRanker, train_batch_ranker

FEATURE_SERVICE = "ranker_batch_v1"
START = pd.Timestamp("2026-01-01", tz="UTC")


def repo():
    """(feature service, user view, item view) as feature_repo/ defines them."""
    from pipelines.batch.feast_repo import feature_service, feature_view

    return feature_service(FEATURE_SERVICE), feature_view("user_features_v1"), feature_view("item_features_v1")


def _fill(view, key: str, ids: list[str], given: dict, rng: np.random.Generator) -> pd.DataFrame:
    from feast.types import Array, Float64, Int64, String

    df = pd.DataFrame({key: ids})
    n = len(ids)
    for f in view.features:
        if f.name in given:
            df[f.name] = list(given[f.name])
        elif f.dtype == Int64:
            df[f.name] = rng.integers(0, 50, n)
        elif f.dtype == Float64:
            values = rng.uniform(0, 10, n)
            values[rng.random(n) < 0.1] = np.nan  # nullable features are sometimes null
            df[f.name] = values
        elif f.dtype == String:
            df[f.name] = ["x"] * n
        elif f.dtype == Array(String):
            df[f.name] = [[] for _ in range(n)]
        elif f.dtype == Array(Float64):
            df[f.name] = [[] for _ in range(n)]
        else:
            raise AssertionError(f"{view.name}.{f.name}: no test value for {f.dtype}")
    return df


def user_rows(view, users: list[str], taste: Callable[[str], str], other: Callable[[str], str],
              seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return _fill(view, "user_id", users, {
        "top_category": [taste(u) for u in users],
        "top_category_share": [0.8] * len(users),
        "top_categories": [[taste(u), other(u)] for u in users],
        "top_category_shares": [[0.8, 0.2] for _ in users],
    }, rng)


def item_rows(view, items: list[str], category: Callable[[str], str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    n = len(items)
    return _fill(view, "item_id", items, {
        "category": [category(i) for i in items],
        "events_30d": np.arange(n, 0, -1) * 3,  # earlier ids are more popular
        "price": rng.uniform(1, 100, n),
    }, rng)


def training_frame(users: pd.DataFrame, items: pd.DataFrame, user_view: str = "user_features_v1",
                   item_view: str = "item_features_v1", n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """(user, item) pairs with both rows' features under full names, labelled by affinity and popularity."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, len(users), n)
    i = rng.integers(0, len(items), n)
    left = users.iloc[u].reset_index(drop=True)
    right = items.iloc[i].reset_index(drop=True)
    frame = pd.DataFrame({"user_id": left["user_id"], "item_id": right["item_id"],
                          "event_timestamp": START + pd.to_timedelta(np.arange(n) * 60, unit="s"), "label": 0})
    for col in left.columns.drop("user_id"):
        frame[f"{user_view}__{col}"] = left[col]
    for col in right.columns.drop("item_id"):
        frame[f"{item_view}__{col}"] = right[col]
    liked = np.array([c == cats[0] for c, cats in zip(right["category"], left["top_categories"], strict=True)])
    popularity = right["events_30d"].to_numpy() / right["events_30d"].max()
    logit = 4.0 * liked + 2.0 * popularity - 3.0
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def train_batch(frame: pd.DataFrame, service, rounds: int = 40) -> tuple[BatchRanker, pd.DataFrame]:
    """The batch ranker as the batch run trains it, and the prepared frame (derived affinity added); the frame
    carries the service's monotone directions, as `build_training_set`'s does."""
    from pipelines.batch.training import monotone_directions

    frame = frame.copy()
    frame.attrs["monotone"] = monotone_directions(service)
    prepared, columns = prepare_feast_frame(frame, service_columns(service))
    return train_batch_ranker(prepared, columns, num_boost_round=rounds), prepared


def online_examples(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """ONLINE_FEATURES rows: the stronger a candidate is a neighbour of the session's last items, the likelier."""
    rng = np.random.default_rng(seed)
    neighbour = np.where(rng.random(n) < 0.3, rng.uniform(1, 40, n), 0.0)
    batch = rng.normal(0, 1.5, n)
    active = (rng.random(n) < 0.6).astype(float)
    returning = (rng.random(n) < 0.5).astype(float)
    x = pd.DataFrame({"batch_logit": batch, "batch_logit_gap": batch - batch.max(), "returning": returning,
                      "batch_logit_returning": batch * returning, "last_item_neighbour_log": np.log1p(neighbour),
                      "neighbour_share": neighbour / neighbour.max(), "last_item_sequence_log": 0.0,
                      "sequence_share": 0.0, "session_category_share": 0.0,
                      "active_session_category_share": 0.0, "recent_category_share": 0.0,
                      "session_active": active, "trend_log": np.log1p(rng.exponential(0.5, n))})
    logit = -3.0 + 0.5 * neighbour + 0.3 * batch
    x[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x[[*ONLINE_FEATURES, LABEL]]


def train_online(seed: int = 0, steps: int = 5):
    """(model, sanity result on fresh examples): the online ranker after a few partial_fit updates."""
    model = new_online_model(seed=seed)
    for step in range(steps):
        batch = online_examples(seed=seed * 100 + step)
        partial_fit(model, batch[list(ONLINE_FEATURES)], batch[LABEL].to_numpy())
    return model, sanity_check(model, online_examples(seed=seed * 100 + 99))


def categories_of(frame: pd.DataFrame, item_view: str = "item_features_v1") -> Sequence[str]:
    return list(frame[f"{item_view}__category"])


def batch_outputs(events: pd.DataFrame, items: pd.DataFrame, as_of: float):
    """models.replay_store.BatchOutputs for a log, shaped like `tandem batch run --as-of` leaves them: per-user
    batch rows (taste = the user's most frequent category before `as_of`) with a candidate list, per-item rows
    with the EASE neighbours the candidate step computes, and a batch ranker trained on such rows."""
    from models.candidates import ease_matrix, generate_candidates, item_neighbours_frame
    from models.ranking import Ranker, catalogue_columns
    from models.registry import BATCH_MODEL, LoadedModel
    from models.replay_store import BatchOutputs, encode_dataset

    service, user_view, item_view = repo()
    catalog, log = encode_dataset(events, items)
    hist = events[pd.to_datetime(events["ts"], utc=True) < pd.Timestamp(as_of, unit="s", tz="UTC")]
    category = dict(zip(items["item_id"], items["category"], strict=True))
    names = sorted(set(category.values()))
    taste = hist.assign(c=hist["item_id"].map(category)).groupby("user_id")["c"].agg(lambda c: c.mode().iloc[0])
    users = sorted(taste.index)
    user_df = user_rows(user_view, users, lambda u: taste[u], lambda u: names[(names.index(taste[u]) + 1) % len(names)])
    item_ids = [str(i) for i in catalog.item_ids]
    item_df = item_rows(item_view, item_ids, lambda i: category[i])
    ranker, _ = train_batch(training_frame(user_df, item_df), service)
    cand = generate_candidates(log, catalog, as_of)
    user_values = {}
    for row in user_df.to_dict("records"):
        u = row.pop("user_id")
        values = {f"{user_view.name}__{k}": (None if isinstance(v, float) and np.isnan(v) else v)
                  for k, v in row.items()}
        index = log.user_index[u]
        values["user_candidates_v1__candidate_item_ids"] = [item_ids[i] for i in cand.of(index)]
        user_values[u] = values
    neighbours = item_neighbours_frame(ease_matrix(log.before(as_of), catalog.n_items), catalog,
                                       pd.Timestamp(as_of, unit="s", tz="UTC")).set_index("item_id")
    item_values = []
    for row in item_df.to_dict("records"):
        i = row.pop("item_id")
        values = {f"{item_view.name}__{k}": v for k, v in row.items()}
        if i in neighbours.index:
            values["item_neighbours_v1__neighbour_item_ids"] = list(neighbours.at[i, "neighbour_item_ids"])
            values["item_neighbours_v1__neighbour_scores"] = list(neighbours.at[i, "neighbour_scores"])
        item_values.append(values)
    loaded = LoadedModel(BATCH_MODEL, "1", "", ranker, list(ranker.feature_columns),
                         {"feature_service": FEATURE_SERVICE})
    return BatchOutputs(as_of, user_values, item_ids, catalogue_columns(item_ids, item_values), Ranker(loaded))
