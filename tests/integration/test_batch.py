"""The batch path against the real Spark, Feast, Redis and Great Expectations.

One batch run over a small fixture dataset feeds every test here (a shared SparkSession,
its own offline directory, registry and Redis database, so nothing collides with a dev run).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from pipelines.batch import feast_repo, offline
from pipelines.batch.run import BatchOptions, run_batch
from tandem.schema import EVENT_SCHEMA
from tandem.settings import PROJECT_ROOT, Settings
from tests.dataset_fixture import write_dataset, write_events
from tests.feature_defects import PLANTED_FAILURES, plant_item_defects

REDIS_DB = 7
README_REDIS_DB = 8
VIEWS = {"user_features_v1": "user_id", "item_features_v1": "item_id"}


def _redis_url(settings: Settings, db: int) -> str:
    host, port = settings.redis_host_port
    return f"redis://{host}:{port}/{db}"


@pytest.fixture(scope="module")
def batch(settings, tmp_path_factory):
    """Run the whole batch path once, in isolation; yield what the tests inspect."""
    root = tmp_path_factory.mktemp("batch")
    now = datetime.now(UTC).replace(microsecond=0)
    dataset = root / "dataset"
    write_dataset(dataset, end=now, days=8, n_sessions=250)
    # a user whose burst of activity comes after one of their positives: the point-in-time probe
    day_x = (now - timedelta(days=3)).date()
    noon = datetime.combine(day_x, datetime.min.time(), UTC) + timedelta(hours=12)
    probe = [{"event_id": "pit-0", "user_id": "u_pit", "item_id": "i1", "event_type": "click", "ts": noon}]
    probe += [{"event_id": f"pit-burst-{k}", "user_id": "u_pit", "item_id": "i2", "event_type": "view",
               "ts": noon + timedelta(hours=6, seconds=k)} for k in range(30)]
    probe.append({"event_id": "pit-next", "user_id": "u_pit", "item_id": "i3", "event_type": "click",
                  "ts": noon + timedelta(days=1)})
    write_events(dataset, probe, name="probe")
    users = pq.read_table(dataset / "users.parquet")
    probe_user = pa.table({"user_id": ["u_pit"], "signup_ts": [noon - timedelta(days=60)]}, schema=users.schema)
    pq.write_table(pa.concat_tables([users, probe_user]), dataset / "users.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TANDEM_OFFLINE_DIR", str(root / "offline"))
        mp.setenv("TANDEM_FEAST_REGISTRY", str(root / "registry.db"))
        mp.setenv("TANDEM_REDIS_URL", _redis_url(settings, REDIS_DB))
        run_settings = Settings()
        for key, value in run_settings.feast_environment().items():
            mp.setenv(key, value)
        redis.Redis.from_url(run_settings.redis_url).flushdb()
        ctx, results = run_batch(run_settings, BatchOptions(dataset_dir=dataset), log=print)
        yield {"ctx": ctx, "results": results, "settings": run_settings, "root": root, "dataset": dataset,
               "noon": noon, "probe_day": day_x}


def _plain(value):
    """Offline (pandas/arrow) and online (Feast) values in one comparable form."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.ndarray | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _assert_online_matches_offline(store, offline_dir_view: Path, view: str, key: str, sample: int = 15):
    latest = offline.latest_rows(offline_dir_view, key)
    keys = sorted(latest.index)[:: max(1, len(latest) // sample)]
    names = feast_repo.feature_names(view)
    online = store.get_online_features(features=[f"{view}:{n}" for n in names],
                                       entity_rows=[{key: k} for k in keys]).to_dict()
    assert online[key] == keys
    for name in names:
        expected = [_plain(latest.at[k, name]) for k in keys]
        got = [_plain(v) for v in online[name]]
        assert got == expected, f"{view}.{name}: online {got} != latest offline {expected}"


def test_batch_run_publishes_the_latest_offline_values_online(batch):
    ctx, results = batch["ctx"], batch["results"]
    assert [r.name for r in results] == ["validate", "features", "apply", "training_set", "materialize"]
    assert ctx.days[-1] == (ctx.as_of - timedelta(microseconds=1)).date()
    for view, key in VIEWS.items():
        table = feast_repo.source_path(view)
        assert table.is_relative_to(batch["root"])
        assert offline.existing_days(table) == set(ctx.days)
        _assert_online_matches_offline(ctx.store, table, view, key)
    latest_users = offline.latest_rows(feast_repo.source_path("user_features_v1"), "user_id")
    # the probe user's 32 events all lie before as_of; nothing after as_of is counted
    assert latest_users.at["u_pit", "events_total"] == 32
    assert set(latest_users["event_timestamp"]) == {pd.Timestamp(ctx.as_of)}


def test_the_candidate_steps_item_neighbours_are_materialized_online(batch):
    """The candidate step writes item_neighbours_v1 (models.jobs.write_offline_tables); materialize publishes it."""
    from models.candidates import ease_matrix, item_neighbours_frame
    from models.jobs import NEIGHBOURS_VIEW, read_dataset
    from models.replay_store import encode_dataset
    from pipelines.batch.run import ONLINE_VIEWS, step_materialize

    ctx = batch["ctx"]
    assert NEIGHBOURS_VIEW in ONLINE_VIEWS
    catalog, log = encode_dataset(*read_dataset(batch["dataset"]))
    as_of = ctx.as_of.timestamp()
    neighbours = item_neighbours_frame(ease_matrix(log.before(as_of), catalog.n_items), catalog,
                                       pd.Timestamp(ctx.as_of))
    assert len(neighbours) > 0
    offline.write_day(NEIGHBOURS_VIEW, neighbours, ctx.as_of.astimezone(UTC).date(), ctx.as_of)
    step_materialize(ctx)
    table = feast_repo.source_path(NEIGHBOURS_VIEW)
    assert table.is_relative_to(batch["root"])
    _assert_online_matches_offline(ctx.store, table, NEIGHBOURS_VIEW, "item_id")


def test_what_the_run_published_reads_back_as_serving_values(batch, tmp_path):
    """The stream's online-learning sink starts from the last run's publication: its as_of, its rows."""
    from models.jobs import NEIGHBOURS_VIEW
    from pipelines.batch.outputs import last_published, read_online_outputs

    ctx = batch["ctx"]
    if not feast_repo.source_path(NEIGHBOURS_VIEW).exists():  # the neighbours test writes them; alone, write them
        test_the_candidate_steps_item_neighbours_are_materialized_online(batch)
    assert last_published() == ctx.as_of
    outputs = read_online_outputs(ctx.as_of, f"sqlite:///{tmp_path / 'mlflow.db'}", require_champion=False)
    assert outputs.batch is None and outputs.as_of == ctx.as_of.timestamp()
    users = pd.read_parquet(feast_repo.source_path("user_features_v1"))
    at_as_of = set(users.loc[users["event_timestamp"] == pd.Timestamp(ctx.as_of), "user_id"])
    assert at_as_of and at_as_of <= set(outputs.users) <= set(users["user_id"])
    assert outputs.items.neighbours and all(i in outputs.item_ids for i in outputs.items.neighbours)


def test_training_set_is_point_in_time_correct(batch):
    ctx = batch["ctx"]
    df = ctx.training_set
    assert list(df.columns[:4]) == ["user_id", "item_id", "event_timestamp", "label"]
    assert df.attrs["feature_service"] == "ranker_batch_v1"
    assert set(df["label"]) == {0, 1} and str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert pd.read_parquet(ctx.training_set_path).shape == df.shape
    probe = df[df["user_id"] == "u_pit"].set_index("item_id")
    # the click at noon on day X sees the snapshot cut at the start of day X, not the burst that evening
    first = probe.loc["i1"]
    assert first["label"] == 1 and first["event_timestamp"] == pd.Timestamp(batch["noon"])
    assert first["user_features_v1__events_total"] == 0
    assert first["user_features_v1__events_1d"] == 0
    # the next day's click sees the burst (and the first click): the value existed by then
    assert probe.loc["i3", "user_features_v1__events_total"] == 31
    # every example carries the latest snapshot at or before its own time, never a later one
    snapshots = offline.read_partitions(feast_repo.source_path("user_features_v1")).to_pandas()
    sample = df[df["user_features_v1__events_total"].notna()].sample(n=min(60, len(df)), random_state=1)
    for row in sample.itertuples():
        mine = snapshots[(snapshots["user_id"] == row.user_id) & (snapshots["event_timestamp"] <= row.event_timestamp)]
        expected = mine.sort_values("event_timestamp").iloc[-1]["events_total"]
        assert row.user_features_v1__events_total == expected, row


def _redis_state(url: str) -> dict:
    client = redis.Redis.from_url(url)
    return {key: client.hgetall(key) for key in client.scan_iter()}


def _tree_state(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*")) if p.is_file()}


def test_planted_defects_fail_the_run_and_publish_nothing(batch, tmp_path):
    from typer.testing import CliRunner

    from tandem.cli import app

    ctx, run_settings = batch["ctx"], batch["settings"]
    dataset = tmp_path / "defective"
    shutil.copytree(batch["dataset"], dataset)
    last_day = ctx.days[-1]
    at = datetime.combine(last_day, datetime.min.time(), UTC) + timedelta(minutes=5)
    good = {"item_id": "i1", "event_type": "click", "value": None, "ts": at, "session_id": None, "user_id": "u1"}
    existing_id = pd.read_parquet(next((dataset / "events" / f"date={last_day}").glob("*.parquet")))["event_id"][0]
    defects = [
        {**good, "event_id": existing_id},                                   # duplicate id
        {**good, "event_id": "d-null", "user_id": None},                     # null user
        {**good, "event_id": "d-future", "ts": datetime.now(UTC) + timedelta(days=30)},  # future
        {**good, "event_id": "d-type-1", "event_type": "like"},              # unknown types
        {**good, "event_id": "d-type-2", "event_type": "share"},
    ]
    loose = pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA])
    part = dataset / "events" / f"date={last_day}"
    pq.write_table(pa.Table.from_pylist(defects, schema=loose), part / "defects.parquet")

    registry = Path(run_settings.feast_registry).read_bytes()
    online = _redis_state(run_settings.redis_url)
    offline_before = _tree_state(run_settings.offline_dir)
    assert online, "the batch run should have put features online"

    # --since: the defects' day is checked whatever the hour (a run as of now computes only today's snapshot,
    # and the fixture's last event day is yesterday when the suite runs just after midnight UTC)
    result = CliRunner().invoke(app, ["batch", "run", "--data", str(dataset), "--since", str(last_day)])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 1, output
    text = " ".join(output.split())
    assert "validation failed; nothing was published" in text
    assert re.search(r"expect_column_values_to_be_unique\(event_id\) failed on 2 of \d+ rows", text), text
    assert re.search(r"expect_column_values_to_not_be_null\(user_id\) failed on 1 of \d+ rows", text), text
    assert re.search(r"expect_column_values_to_be_in_set\(event_type\) failed on 2 of \d+ rows", text), text
    assert re.search(r"expect_column_values_to_be_between\(ts\) failed on 1 of \d+ rows", text), text
    assert Path(run_settings.feast_registry).read_bytes() == registry
    assert _redis_state(run_settings.redis_url) == online
    assert _tree_state(run_settings.offline_dir) == offline_before
    assert (run_settings.home / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()


def _readme_feast_commands() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = re.search(r"<!-- feast-commands:.*?-->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its feast-commands block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_feast_commands_work_from_feature_repo(batch, tmp_path):
    commands = _readme_feast_commands()
    assert commands[0] == "cd feature_repo" and any(c.startswith("feast apply") for c in commands)
    run_settings = batch["settings"]
    url = _redis_url(run_settings, README_REDIS_DB)
    redis.Redis.from_url(url).flushdb()
    registry = tmp_path / "registry.db"
    env = {**os.environ, "TANDEM_REDIS_URL": url, "TANDEM_FEAST_REGISTRY": str(registry),
           # what `source .venv/bin/activate` gives a shell; PYTHONPATH makes `tandem` this checkout's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(PROJECT_ROOT)}
    for key in ("TANDEM_FEAST_REDIS", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        env.pop(key, None)
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"README commands failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert registry.exists()

    from feast import FeatureStore

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TANDEM_FEAST_REGISTRY", str(registry))
        mp.setenv("TANDEM_FEAST_REDIS", Settings(redis_url=url).feast_redis)
        store = FeatureStore(repo_path=str(feast_repo.FEATURE_REPO))
        for view, key in VIEWS.items():
            _assert_online_matches_offline(store, feast_repo.source_path(view), view, key)


def test_rerunning_the_last_day_is_idempotent(batch):
    from pipelines.batch.run import default_steps

    ctx = batch["ctx"]
    tables = {view: feast_repo.source_path(view) for view in VIEWS}
    before = {view: offline.read_partitions(t).to_pandas() for view, t in tables.items()}
    files_before = {view: _tree_state(t) for view, t in tables.items()}
    steps = [s for s in default_steps() if s.name in ("validate", "features")]
    again, _ = run_batch(batch["settings"], BatchOptions(dataset_dir=batch["dataset"], as_of=ctx.as_of), steps=steps,
                         log=lambda _: None)
    assert again.days == [ctx.days[-1]]  # incremental: only the day that holds as_of is redone
    for view, key in VIEWS.items():
        after = offline.read_partitions(tables[view]).to_pandas()
        order = [key, "event_timestamp"]
        pd.testing.assert_frame_equal(after.sort_values(order).reset_index(drop=True),
                                      before[view].sort_values(order).reset_index(drop=True))
        changed = {f.split("/")[0] for f, m in _tree_state(tables[view]).items() if files_before[view].get(f) != m}
        assert changed == {f"date={ctx.days[-1]}"}


def test_examples_are_reproducible(batch):
    from pipelines.batch.training import KEY_COLUMNS, labelled_examples

    ctx = batch["ctx"]
    start, end = (pd.Timestamp(t).to_pydatetime() for t in ctx.training_set.attrs["window"])
    again = labelled_examples(ctx.spark, batch["dataset"], start, end)
    built = ctx.training_set[list(KEY_COLUMNS)]
    pd.testing.assert_frame_equal(again.reset_index(drop=True), built.reset_index(drop=True), check_dtype=False)


def test_feature_checks_on_spark_name_each_defect_and_its_row_count(batch):
    """Feature tables are checked by GX's Spark engine; it must catch what the pandas checks catch."""
    from validation.checkpoints import Validator
    from validation.suites import feature_table_suite

    view = feast_repo.feature_view("item_features_v1")
    table = offline.read_partitions(feast_repo.source_path("item_features_v1")).to_pandas()
    first, second = table.iloc[0].to_dict(), table.iloc[1].to_dict()
    ahead = datetime.now(UTC) + timedelta(days=30)
    spark_rows = batch["ctx"].spark.createDataFrame(pd.DataFrame(plant_item_defects(first, second, ahead)))
    report = Validator(batch["settings"]).run("item_features_defects", spark_rows,
                                              feature_table_suite(view, "item_id"))
    assert report.rows == 3
    failed = {(f.expectation, f.column, f.unexpected_count) for f in report.failures}
    assert failed == PLANTED_FAILURES


def test_the_training_set_carries_the_monotone_tags_through_feasts_registry(batch):
    """The directions come from the applied registry's fields, survive the saved parquet, and bind the ranker."""
    from models.batch_steps import prepare_feast_frame
    from models.train import train_batch_ranker
    from pipelines.batch.training import TRAINING_FEATURE_SERVICE, feature_columns

    ctx = batch["ctx"]
    directions = ctx.training_set.attrs["monotone"]
    assert directions["item_features_v1__events_30d"] == 1 and directions["item_features_v1__popularity_rank_7d"] == -1
    assert not [c for c in directions if c.startswith("user_features_v1__")]
    saved = pd.read_parquet(ctx.training_set_path)
    assert saved.attrs["monotone"] == directions
    store = feast_repo.feature_store(batch["settings"])
    frame, columns = prepare_feast_frame(saved, feature_columns(store, TRAINING_FEATURE_SERVICE))
    ranker = train_batch_ranker(frame, columns, num_boost_round=5)
    constraints = dict(zip(columns, ranker.params["monotone_constraints"].strip("()").split(","), strict=True))
    assert constraints["item_features_v1__events_30d"] == "1"
    assert constraints["item_features_v1__popularity_rank_7d"] == "-1"
    assert constraints["user_features_v1__events_30d"] == "0"


def test_candidate_scores_equal_scoring_feasts_joint_retrieval(batch):
    """score_candidates fetches features once per user and per item; the scores must be what scoring Feast's
    point-in-time join of every (user, item) pair gives."""
    from models.batch_steps import prepare_feast_frame, score_candidates
    from models.train import train_batch_ranker
    from pipelines.batch.training import TRAINING_FEATURE_SERVICE, feature_columns

    ctx = batch["ctx"]
    store = feast_repo.feature_store(batch["settings"])
    frame, columns = prepare_feast_frame(ctx.training_set, feature_columns(store, TRAINING_FEATURE_SERVICE))
    ranker = train_batch_ranker(frame, columns)
    users = sorted(set(ctx.training_set["user_id"]))[:12]
    items = sorted(set(ctx.training_set["item_id"]))[:9] + ["no-such-item"]
    pairs = pd.DataFrame([(u, i) for u in users for i in items], columns=["user_id", "item_id"])
    as_of = pd.Timestamp(ctx.as_of)
    got = score_candidates(store, TRAINING_FEATURE_SERVICE, pairs["user_id"].to_numpy(),
                           pairs["item_id"].to_numpy(), as_of, ranker, chunk_rows=37)
    joint = store.get_historical_features(entity_df=pairs.assign(event_timestamp=as_of),
                                          features=store.get_feature_service(TRAINING_FEATURE_SERVICE),
                                          full_feature_names=True).to_df()
    joint = pairs.merge(joint.drop(columns=["event_timestamp"]), on=["user_id", "item_id"], how="left")
    expected = ranker.predict(prepare_feast_frame(joint, columns)[0])
    assert len(set(np.round(expected, 6))) > 5  # the pairs do differ
    assert np.allclose(got, expected, atol=1e-6)
