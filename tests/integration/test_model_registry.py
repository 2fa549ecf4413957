"""The models against the real MLflow server: what a run records, the champion gate, loading by alias."""

import json
import os
import uuid

import numpy as np
import pytest

from models.batch_steps import prepare_feast_frame
from models.jobs import train_and_register_batch, update_online_model
from models.online import LABEL, ONLINE_FEATURES, new_online_model, partial_fit, sanity_check
from models.registry import (
    CHAMPION_ALIAS,
    ChampionWatcher,
    RegistryError,
    champion_version,
    load_champion,
    register_batch_ranker,
    register_online_ranker,
)
from models.rows import service_columns
from models.train import check_training_frame, monotone_constraints, time_window, train_batch_ranker
from tests.serving_models import item_rows, repo, training_frame, user_rows

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="module")
def frames():
    """(train, holdout, feature columns): Feast-shaped training sets as `tandem batch run` prepares them."""
    service, user_view, item_view = repo()
    cats = [f"c{n}" for n in range(4)]
    users = user_rows(user_view, [f"u{n}" for n in range(80)], lambda u: cats[int(u[1:]) % 4],
                      lambda u: cats[(int(u[1:]) + 1) % 4])
    items = item_rows(item_view, [f"i{n}" for n in range(40)], lambda i: cats[int(i[1:]) % 4])
    train, columns = prepare_feast_frame(training_frame(users, items, n=2500), service_columns(service))
    holdout, _ = prepare_feast_frame(training_frame(users, items, n=1500, seed=11), service_columns(service))
    return train, holdout, columns


def _name(kind: str) -> str:
    return f"test-{kind}-{uuid.uuid4().hex[:8]}"


def test_a_trained_model_is_registered_with_everything_recorded(settings, frames):
    from mlflow import MlflowClient

    train, holdout, columns = frames
    ranker = train_batch_ranker(train, columns, num_boost_round=40)
    name = _name("batch")
    window = {"train": time_window(train), "holdout": time_window(holdout)}
    validation = check_training_frame(train, columns)
    reg = register_batch_ranker(ranker, holdout, feature_service="ranker_batch_v1", data_window=window,
                                validation=validation, tracking_uri=settings.mlflow_uri, model_name=name)
    assert reg.version == "1" and reg.champion and reg.reason == "first validated version"

    client = MlflowClient(settings.mlflow_uri)
    run = client.get_run(reg.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["feature_service"] == "ranker_batch_v1"
    assert json.loads(params["feature_columns"]) == columns
    assert params["data_window.train_start"] == window["train"]["start"]
    assert params["data_window.holdout_end"] == window["holdout"]["end"]
    assert params["validation.success"] == "True" and tags["validation"] == "passed"
    constraints = "(" + ",".join(str(c) for c in monotone_constraints(columns)) + ")"
    assert params["max_depth"] == "6" and constraints in params["monotone_constraints"] and "1" in constraints
    for key in ("auc", "ndcg_at_10", "recall_at_10", "hitrate_at_10"):
        assert 0.0 < metrics[key] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(reg.run_id)}
    assert {"validation.json", "data_window.json", "features.json"} <= artifacts
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == "1"

    loaded = load_champion(name, settings.mlflow_uri)
    assert loaded.version == "1" and loaded.feature_columns == columns
    assert np.allclose(loaded.model.predict(holdout), ranker.predict(holdout), atol=1e-6)


def test_a_worse_candidate_does_not_take_the_alias_and_a_better_one_does(settings, frames):
    train, holdout, columns = frames
    name = _name("batch")
    window = {"train": time_window(train), "holdout": time_window(holdout)}
    ok = {"success": True}
    good = train_batch_ranker(train, columns, num_boost_round=40)
    # trained on inverted labels: it ranks the held-out interactions last
    worse = train_batch_ranker(train.assign(label=1 - train["label"]), columns, num_boost_round=40)
    first = register_batch_ranker(good, holdout, feature_service="ranker_batch_v1", data_window=window,
                                  validation=ok, tracking_uri=settings.mlflow_uri, model_name=name)
    second = register_batch_ranker(worse, holdout, feature_service="ranker_batch_v1", data_window=window,
                                   validation=ok, tracking_uri=settings.mlflow_uri, model_name=name)
    assert first.champion and not second.champion
    assert second.metrics["ndcg@10"] < second.champion_metrics["ndcg@10"]
    assert "does not beat champion v1" in second.reason
    assert champion_version(name, settings.mlflow_uri) == "1"
    assert load_champion(name, settings.mlflow_uri).version == "1"

    # a better model that failed validation stays out too
    better = train_batch_ranker(train, columns, num_boost_round=120)
    failed = register_batch_ranker(better, holdout, feature_service="ranker_batch_v1", data_window=window,
                                   validation={"success": False, "failures": ["ranges"]},
                                   tracking_uri=settings.mlflow_uri, model_name=name)
    assert not failed.champion and failed.reason.startswith("validation failed")


def test_serving_watcher_picks_up_a_new_champion(settings, frames):
    train, holdout, columns = frames
    name = _name("batch")
    window = {"train": time_window(train), "holdout": time_window(holdout)}
    weak = train_batch_ranker(train, columns, num_boost_round=1, params={"max_depth": 1})
    strong = train_batch_ranker(train, columns, num_boost_round=60)
    watcher = ChampionWatcher(name, settings.mlflow_uri, poll_s=0.0)
    assert watcher.get() is None
    register_batch_ranker(weak, holdout, feature_service="ranker_batch_v1", data_window=window,
                          validation={"success": True}, tracking_uri=settings.mlflow_uri, model_name=name)
    assert watcher.get().version == "1"
    reg = register_batch_ranker(strong, holdout, feature_service="ranker_batch_v1", data_window=window,
                                validation={"success": True}, tracking_uri=settings.mlflow_uri, model_name=name)
    assert reg.champion, reg.reason
    assert watcher.get().version == "2"
    with pytest.raises(RegistryError, match="has no 'champion' version"):
        load_champion(_name("missing"), settings.mlflow_uri)


def test_train_and_register_is_the_thin_call_for_the_batch_path(settings, frames):
    train, holdout, columns = frames
    name = _name("batch")
    ranker, reg = train_and_register_batch(train, holdout, columns, "ranker_batch_v1",
                                           settings.mlflow_uri, validation={"success": True, "suite": "gx"},
                                           model_name=name)
    assert reg.version == "1" and reg.champion and reg.metrics["auc"] > 0.5
    assert ranker.feature_columns == columns


def _online_examples(n, seed):
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(ONLINE_FEATURES))), columns=list(ONLINE_FEATURES))
    x[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-2 * x["session_category_share"]))).astype(int)
    x["event_timestamp"] = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
    return x


def test_online_updates_that_pass_the_sanity_check_become_versions(settings):
    name = _name("online")
    model = partial_fit(new_online_model(), _online_examples(1000, 1), _online_examples(1000, 1)[LABEL])
    recent = _online_examples(500, 2)
    passed = register_online_ranker(model, sanity_check(model, recent), data_window={"start": "a", "end": "b"},
                                    tracking_uri=settings.mlflow_uri, examples_seen=1000, model_name=name)
    assert passed.version == "1" and passed.champion
    bad = partial_fit(new_online_model(), _online_examples(1000, 3).assign(label=lambda d: 1 - d[LABEL]),
                      1 - _online_examples(1000, 3)[LABEL])
    failed = register_online_ranker(bad, sanity_check(bad, recent, champion=model),
                                    data_window={"start": "a", "end": "b"}, tracking_uri=settings.mlflow_uri,
                                    examples_seen=1000, model_name=name)
    assert failed.version is None and not failed.champion
    loaded = load_champion(name, settings.mlflow_uri)
    assert loaded.version == "1" and loaded.feature_columns == list(ONLINE_FEATURES)


def test_update_online_model_continues_the_champion(settings):
    name = _name("online")
    result = update_online_model(_online_examples(3000, 5), settings.mlflow_uri, publish_every=1000, model_name=name)
    assert result.examples == 3000 and result.updates == 3
    # prequential: each later micro-batch checks the model trained on the ones before it
    assert [r.version for r in result.registrations] == ["1", "2"]
    assert champion_version(name, settings.mlflow_uri) == "2"
    again = update_online_model(_online_examples(2000, 6), settings.mlflow_uri, publish_every=1000, model_name=name)
    assert [r.previous_champion for r in again.registrations] == ["2"]
    assert again.registrations[0].metrics["champion_sanity_auc"] > 0.5  # checked against the champion it continued


def _feast_shaped_training_set(n_users=80, n_rows=2400, seed=4):
    """A frame shaped like pipelines/batch build_training_set's: "<view>__<feature>" columns, lists, strings."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    cats = ["books", "toys", "games", "music"]
    users = rng.integers(0, n_users, n_rows)
    top = {u: list(rng.permutation(cats)[:2]) for u in range(n_users)}
    share = {u: [0.6, 0.3] for u in range(n_users)}
    item_cat = rng.choice(cats, n_rows)
    in_top = np.array([c in top[u] for u, c in zip(users, item_cat, strict=True)])
    label = (rng.random(n_rows) < np.where(in_top, 0.45, 0.08)).astype("int64")
    return pd.DataFrame({
        "user_id": [f"u{u}" for u in users], "item_id": [f"i{k}" for k in rng.integers(0, 300, n_rows)],
        "event_timestamp": pd.date_range("2025-01-01", periods=n_rows, freq="min", tz="UTC").astype(
            "datetime64[us, UTC]"),
        "label": label,
        "user_features_v1__events_7d": rng.integers(0, 30, n_rows),
        "user_features_v1__top_category": [top[u][0] for u in users],
        "user_features_v1__top_categories": [top[u] for u in users],
        "user_features_v1__top_category_shares": [share[u] for u in users],
        "item_features_v1__events_7d": rng.integers(0, 50, n_rows),
        "item_features_v1__category": item_cat,
        "item_features_v1__price": rng.uniform(1, 50, n_rows),
    })


def test_train_batch_from_a_saved_feast_training_set(settings, tmp_path):
    from models.batch_steps import CATEGORY_AFFINITY
    from models.jobs import latest_training_set, train_batch_from_training_set

    root = tmp_path / "offline" / "training_sets" / "ranker_batch_v1"
    root.mkdir(parents=True)
    _feast_shaped_training_set(seed=1).to_parquet(root / "as_of=20250101T000000Z.parquet")
    frame = _feast_shaped_training_set(seed=4)
    frame.attrs["monotone"] = {"item_features_v1__events_7d": 1}  # what build_training_set hands on
    frame.to_parquet(root / "as_of=20250102T000000Z.parquet")
    path = latest_training_set(tmp_path / "offline")
    assert path.name == "as_of=20250102T000000Z.parquet"
    ranker, reg = train_batch_from_training_set(path, settings.mlflow_uri, model_name=_name("batch"))
    assert reg.champion and reg.metrics["auc"] > 0.65
    assert ranker.feature_columns == ["user_features_v1__events_7d", "item_features_v1__events_7d",
                                      "item_features_v1__price", CATEGORY_AFFINITY]
    assert ranker.params["monotone_constraints"] == "(0,1,0,1)"  # the saved set's directions, and the affinity
    # behavioural: more affinity for the item's category never lowers its score
    from models.batch_steps import add_category_affinity

    rows = add_category_affinity(frame).head(300)
    raised = rows.assign(**{CATEGORY_AFFINITY: np.minimum(rows[CATEGORY_AFFINITY] + 0.3, 1.0)})
    assert (ranker.predict(raised) >= ranker.predict(rows) - 1e-9).all()
    assert (ranker.predict(raised) > ranker.predict(rows) + 1e-6).any()
