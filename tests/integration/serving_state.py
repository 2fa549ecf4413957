"""Online-store and registry state for the serving tests, set up the way the batch, stream and models stages make it.

* The views are feature_repo/'s (batch, stream, candidate lists, item neighbours) and its feature
  services, applied; batch rows are written online as `tandem batch run` would materialize them
  (without running Spark), with every field of each view filled (tests/serving_models.py).
* `push_session` pushes user_session_v1 rows through Feast's push source as the stream processor does.
* `register_batch` / `register_online` train REAL models with models/ code on a small training set
  of the same rows (`models.jobs.train_and_register_batch`: frame checks, XGBoost, MLflow run with
  its feature service, champion gate; `models.registry.register_online_ranker` after partial_fit
  updates and the sanity check) and point the `champion` alias at the new version.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from serving.features import MATERIALIZATION_KEY
from tandem.settings import PROJECT_ROOT, Settings, export_feast_environment

CATEGORIES = ("cat_a", "cat_b", "cat_c", "cat_d")
N_ITEMS = 200
N_USERS = 60


def item_id(i: int) -> str:
    return f"i{i:04d}"


def category_of(item: str) -> str:
    return CATEGORIES[int(item[1:]) % len(CATEGORIES)]


def items_in(category: str) -> list[str]:
    return [item_id(i) for i in range(N_ITEMS) if category_of(item_id(i)) == category]


def user_id(u: int) -> str:
    return f"u{u:04d}"


def taste_of(user: str) -> str:
    return CATEGORIES[int(user[1:]) % 2]  # users like cat_a or cat_b; cat_c is "new" to everyone


def second_taste_of(user: str) -> str:
    return "cat_d"


def neighbours_of(item: str) -> list[str]:
    """An item's co-visited items (the item_neighbours_v1 row): ten others of its category (co-visit counts 20..11)."""
    return [x for x in items_in(category_of(item)) if x != item][:10]


def all_items() -> list[str]:
    return [item_id(i) for i in range(N_ITEMS)]


def all_users() -> list[str]:
    return [user_id(u) for u in range(N_USERS)]


def batch_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(user_features_v1 rows, item_features_v1 rows): what serving reads online and the batch ranker trains on."""
    from tests.serving_models import item_rows, repo, user_rows

    _, user_view, item_view = repo()
    return (user_rows(user_view, all_users(), taste_of, second_taste_of),
            item_rows(item_view, all_items(), category_of))


def feature_store(settings: Settings):
    from feast import FeatureStore

    export_feast_environment(settings)
    repo = PROJECT_ROOT / "feature_repo"
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return FeatureStore(repo_path=str(repo))


def _rows(view, key: str, ids: list[str], **columns) -> pd.DataFrame:
    """One row per id for every field of `view`: the given columns, plain defaults for the rest."""
    from feast.types import Array, Float64, Int64, String

    defaults = {Int64: 0, Float64: 0.0, String: "", Array(String): [], Array(Float64): [], Array(Int64): []}
    df = pd.DataFrame({key: ids})
    for f in view.features:
        df[f.name] = columns[f.name] if f.name in columns else [defaults.get(f.dtype, None)] * len(ids)
    return df


def apply_and_write(settings: Settings, ts: datetime | None = None) -> None:
    """feast apply the repo's views (batch + stream, as in main), write batch rows online as a materialization
    would, and mark the materialization."""
    import redis
    from feast.data_source import PushMode

    store = feature_store(settings)  # puts feature_repo/ on sys.path for its flat imports
    import data_sources as ds
    import entities
    from feature_services import ranker_batch_v1, ranker_hybrid_v1
    from features.candidates import user_candidates_v1
    from features.item_features import item_features_v1
    from features.item_neighbours import item_neighbours_v1
    from features.stream_features import item_trending_v1, user_session_v1
    from features.user_features import user_features_v1

    store.apply([entities.user, entities.item, ds.user_session_push, ds.item_trending_push, user_session_v1,
                 item_trending_v1, user_features_v1, item_features_v1, user_candidates_v1, item_neighbours_v1,
                 ranker_batch_v1, ranker_hybrid_v1])
    ts = ts or datetime.now(UTC) - timedelta(hours=1)
    items, users = all_items(), all_users()
    _forget(settings, store.project, "user_id", users)  # sessions of earlier runs would leak into this one
    _forget(settings, store.project, "item_id", items)
    user_df, item_df = batch_rows()
    frames = {
        "item_features_v1": item_df,
        "item_neighbours_v1": _rows(item_neighbours_v1, "item_id", items,
                                    neighbour_item_ids=[neighbours_of(i) for i in items],
                                    neighbour_scores=[list(np.linspace(20.0, 11.0, 10)) for _ in items]),
        "user_features_v1": user_df,
        "user_candidates_v1": _rows(user_candidates_v1, "user_id", users,
                                    candidate_item_ids=[items_in(taste_of(u))[:40] for u in users],
                                    candidate_scores=[list(np.linspace(1, 0, 40)) for _ in users]),
    }
    for name, df in frames.items():
        df["event_timestamp"] = pd.Timestamp(ts)
        store.write_to_online_store(name, df)
    trending = _rows(item_trending_v1, "item_id", items[:20], events_1h=[5] * 20, clicks_1h=[2] * 20,
                     trend_score=np.linspace(2.0, 0.1, 20))
    trending["event_timestamp"] = trending["created"] = pd.Timestamp(ts)
    store.push("item_trending_push", trending, to=PushMode.ONLINE)
    redis.Redis.from_url(settings.redis_url).set(MATERIALIZATION_KEY, uuid.uuid4().hex)


def _forget(settings: Settings, project: str, join_key: str, ids: list[str]) -> None:
    import redis
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    keys = [_redis_key(project, EntityKey(join_keys=[join_key], entity_values=[Value(string_val=i)])) for i in ids]
    redis.Redis.from_url(settings.redis_url).delete(*keys)


def push_session(settings: Settings, user: str, clicked: list[str], ts: datetime | None = None) -> None:
    """What the stream processor pushes after `clicked` (newest first) in one session: every user_session_v1 field."""
    from feast.data_source import PushMode

    store = feature_store(settings)
    from features.stream_features import user_session_v1

    ts = ts or datetime.now(UTC)
    categories = sorted({category_of(i) for i in clicked})
    row = _rows(user_session_v1, "user_id", [user], session_events=[len(clicked)], session_clicks=[len(clicked)],
                last_item_ids=[clicked], last_category=[category_of(clicked[0])],
                session_categories=[categories],
                session_category_counts=[[sum(category_of(i) == c for i in clicked) for c in categories]],
                last_event_epoch=[ts.timestamp()], events_1h=[len(clicked)], clicks_1h=[len(clicked)])
    row["event_timestamp"] = row["created"] = [pd.Timestamp(ts).as_unit("us")]  # the push sources log `created`
    store.push("user_session_push", row, to=PushMode.ONLINE)


def register_batch(settings: Settings, seed: int = 0) -> str:
    """Train the batch ranker on a Feast-shaped training set of the online rows, register it as `tandem batch run`
    does, and make it champion (a retrained version must take over even if the gate would keep the old one)."""
    from mlflow import MlflowClient

    from models.batch_steps import prepare_feast_frame, split_by_time
    from models.jobs import train_and_register_batch
    from models.registry import BATCH_MODEL, CHAMPION_ALIAS
    from models.rows import service_columns
    from tests.serving_models import FEATURE_SERVICE, repo, training_frame

    service, _, _ = repo()
    user_df, item_df = batch_rows()
    frame, columns = prepare_feast_frame(training_frame(user_df, item_df, n=1500, seed=seed), service_columns(service))
    train, holdout = split_by_time(frame)
    _, registration = train_and_register_batch(train, holdout, columns, FEATURE_SERVICE, settings.mlflow_uri,
                                               validation={"success": True, "checkpoint": "serving test data"})
    MlflowClient(settings.mlflow_uri).set_registered_model_alias(BATCH_MODEL, CHAMPION_ALIAS, registration.version)
    return str(registration.version)


def register_online(settings: Settings, seed: int = 1) -> str:
    """Update the online ranker by partial_fit, sanity-check it and register it (it becomes champion)."""
    from models.registry import register_online_ranker
    from tests.serving_models import train_online

    model, sanity = train_online(seed=seed)
    assert sanity.success, sanity.reason
    registration = register_online_ranker(model, sanity, data_window={"start": "test", "end": "test"},
                                          tracking_uri=settings.mlflow_uri, examples_seen=20_000)
    return str(registration.version)


def wait_until(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
