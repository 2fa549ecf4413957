"""Online-store and registry state for the serving tests, set up the way the batch, stream and models branches will.

Stand-ins until those land in main (then these switch to their real functions):
* the batch views (user/item features, candidate lists) are main's feature_repo definitions, applied
  and written online here as `tandem batch run` would materialize them (without running Spark);
  `covisit_view` (item co-visitation) is a stand-in no branch produces yet.
* `push_session` pushes user_session_v1 rows through Feast's push source as the stream processor
  will → replace with the stream processor consuming POST /feedback events.
* `register_ranker` trains a small XGBoost model and moves the `champion` alias → models/registry.py.
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
    return CATEGORIES[int(user[1:]) % 2]  # users like cat_a or cat_b; cat_c/cat_d are "new" to everyone


def feature_store(settings: Settings):
    from feast import FeatureStore

    export_feast_environment(settings)
    repo = PROJECT_ROOT / "feature_repo"
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    return FeatureStore(repo_path=str(repo))


def covisit_view(settings: Settings):
    """Items co-visited with each item: serving reads it if present, but no branch produces it yet (stand-in)."""
    import entities
    from feast import FeatureView, Field
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.types import Array, String

    source = SparkSource(name="item_covisit_table", path=str(settings.offline_dir / "item_covisit"),
                         file_format="parquet", timestamp_field="event_timestamp")
    return FeatureView(name="item_covisit_v1", entities=[entities.item], ttl=timedelta(days=30),
                       schema=[Field(name="item_ids", dtype=Array(String))], online=True, source=source,
                       owner="tandem-tests", tags={"path": "batch"})


def _rows(view, key: str, ids: list[str], **columns) -> pd.DataFrame:
    """One row per id for every field of `view`: the given columns, plain defaults for the rest."""
    from feast.types import Array, Float64, Int64, String

    defaults = {Int64: 0, Float64: 0.0, String: "", Array(String): [], Array(Float64): []}
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
    from features.candidates import user_candidates_v1
    from features.item_features import item_features_v1
    from features.stream_features import item_trending_v1, user_session_v1
    from features.user_features import user_features_v1

    covisit = covisit_view(settings)
    store.apply([entities.user, entities.item, ds.user_session_push, ds.item_trending_push, user_session_v1,
                 item_trending_v1, user_features_v1, item_features_v1, user_candidates_v1, covisit])
    ts = ts or datetime.now(UTC) - timedelta(hours=1)
    items = [item_id(i) for i in range(N_ITEMS)]
    users = [user_id(u) for u in range(N_USERS)]
    _forget(settings, store.project, "user_id", users)  # sessions of earlier runs would leak into this one
    _forget(settings, store.project, "item_id", items)
    rng = np.random.default_rng(0)
    frames = {
        "item_features_v1": _rows(item_features_v1, "item_id", items, category=[category_of(i) for i in items],
                                  price=rng.uniform(1, 100, N_ITEMS),
                                  events_30d=[N_ITEMS - int(i[1:]) for i in items]),
        "item_covisit_v1": _rows(covisit, "item_id", items,
                                 item_ids=[[x for x in items_in(category_of(i)) if x != i][:10] for i in items]),
        "user_features_v1": _rows(user_features_v1, "user_id", users, events_30d=rng.integers(0, 50, N_USERS),
                                  top_category=[taste_of(u) for u in users]),
        "user_candidates_v1": _rows(user_candidates_v1, "user_id", users,
                                    candidate_item_ids=[items_in(taste_of(u))[:40] for u in users],
                                    candidate_scores=[list(np.linspace(1, 0, 40)) for _ in users]),
    }
    for name, df in frames.items():
        df["event_timestamp"] = pd.Timestamp(ts)
        store.write_to_online_store(name, df)
    trending = _rows(item_trending_v1, "item_id", items[:20], events_1h=[5] * 20, clicks_1h=[2] * 20,
                     trend_score=np.linspace(2.0, 0.1, 20))
    trending["event_timestamp"] = pd.Timestamp(ts)
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
    """What the stream processor pushes after `clicked` (newest first) in one session."""
    from feast.data_source import PushMode

    ts = ts or datetime.now(UTC)
    row = pd.DataFrame({
        "user_id": [user], "session_events": [len(clicked)], "session_clicks": [len(clicked)],
        "last_item_ids": [clicked], "last_category": [category_of(clicked[0])],
        "last_event_epoch": [ts.timestamp()], "events_1h": [len(clicked)], "clicks_1h": [len(clicked)],
        "event_timestamp": [pd.Timestamp(ts).as_unit("us")]})
    feature_store(settings).push("user_session_push", row, to=PushMode.ONLINE)


BATCH_FEATURES = ["user_features_v1__events_30d", "item_features_v1__events_30d", "item_features_v1__price"]
ONLINE_FEATURES = ["request__item_in_last_category", "request__item_covisited_with_session",
                   "user_session_v1__session_clicks", "item_trending_v1__trend_score", "item_features_v1__events_30d"]


def train_ranker(features: list[str], seed: int = 0, n: int = 400):
    """A small real XGBoost classifier: popularity helps; being in the session's category helps a lot."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = pd.DataFrame({name: rng.uniform(0, 1, n) for name in features})
    if "request__item_in_last_category" in x:
        x["request__item_in_last_category"] = rng.integers(0, 2, n).astype(float)
    logit = 2 * x.get("item_features_v1__events_30d", 0) + 4 * x.get("request__item_in_last_category", 0) - 2
    y = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logit))).astype(int)
    if "item_features_v1__events_30d" in x:
        x["item_features_v1__events_30d"] *= N_ITEMS
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, random_state=seed)
    model.fit(x, y)
    return model


def register_ranker(settings: Settings, name: str, features: list[str], seed: int = 0) -> str:
    """Log and register a new version of `name` and point its `champion` alias at it; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_experiment("tandem-serving-tests")
    model = train_ranker(features, seed)
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(model, name="model", registered_model_name=name,
                                        input_example=pd.DataFrame([np.zeros(len(features))], columns=features))
    client = MlflowClient(settings.mlflow_uri)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "champion", version)
    return version


def wait_until(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
