"""tandem's materializer against Feast's local engine on the real Redis (and Spark, for Feast's read).

The same small offline tables (every batch view, with nulls, NaN and empty lists) are materialized
by Feast's `local` engine into one Feast project and by tandem's materializer into another, each with
its own registry, in a Redis database of their own; `get_online_features` must answer the same for
both, and the Redis hashes must be identical byte for byte.
"""

from __future__ import annotations

import contextlib
import io
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import yaml

from pipelines.batch import feast_repo
from pipelines.batch.run import ONLINE_VIEWS
from tandem.settings import Settings

REDIS_DB = 9
PROJECTS = {"feast": "tandem_it_mat_feast", "tandem": "tandem_it_mat_tandem"}
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _value(rng: random.Random, type_: pa.DataType, i: int):
    """A value of an Arrow type with the awkward cases mixed in: nulls, NaN, empty and null lists."""
    if rng.random() < 0.15:
        return None
    if pa.types.is_list(type_):
        return [_value(rng, type_.value_type, i) or (0.0 if pa.types.is_floating(type_.value_type) else "")
                for _ in range(rng.choice([0, 0, 1, 3]))]
    if pa.types.is_floating(type_):
        return rng.choice([float("nan"), 0.0, -0.0, rng.uniform(-5, 5)])
    if pa.types.is_integer(type_):
        return rng.choice([0, 1, rng.randint(-10**12, 10**12)])
    return rng.choice(["", "a", f"s{i % 7}", "ü" * 3])


def _write_tables(offline_dir: Path, n: int = 40) -> dict[str, str]:
    """Two days of snapshots per batch view (one entity only on the first day); returns each view's key."""
    rng = random.Random(11)
    keys = {}
    for view in ONLINE_VIEWS:
        schema = feast_repo.arrow_schema(view)
        key = schema.names[0]
        keys[view] = key
        for day, ts in enumerate((T0 - timedelta(days=1), T0)):
            ids = [f"{key[0]}{i}" for i in range(n if day == 0 else n - 1)]
            columns = {key: ids, "event_timestamp": [ts] * len(ids)}
            for f in schema:
                if f.name not in columns:
                    columns[f.name] = [_value(rng, f.type, i) for i in range(len(ids))]
            dest = offline_dir / Path(feast_repo.source_path(view)).name / f"date={ts:%Y-%m-%d}"
            dest.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns, schema=schema), dest / "part-0.parquet")
    return keys


def _store(root: Path, project: str, engine: str):
    """A FeatureStore over feature_repo/ with its own project and registry, `feast apply`-ed."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    config = yaml.safe_load((feast_repo.FEATURE_REPO / "feature_store.yaml").read_text())
    config["project"] = project
    config["registry"] = {**config["registry"], "path": str(root / f"{project}.db")}
    config["batch_engine"] = {"type": engine}
    fs_yaml = root / f"{project}.yaml"
    fs_yaml.write_text(yaml.safe_dump(config))
    feast_repo._forget_repo_modules()
    with feast_repo._in_repo() as repo, contextlib.redirect_stdout(io.StringIO()):
        apply_total(load_repo_config(repo, fs_yaml), repo, skip_source_validation=True)
        return FeatureStore(repo_path=str(repo), fs_yaml_file=fs_yaml)


def _delete_projects(client: redis.Redis) -> None:
    for project in PROJECTS.values():
        keys = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])


def _hashes(client: redis.Redis, project: str) -> dict[bytes, dict[bytes, bytes]]:
    suffix = project.encode()
    return {k[: -len(suffix)]: client.hgetall(k) for k in client.scan_iter(match=b"*" + suffix, count=1000)}


def _comparable(value):
    """NaN (inside lists, where Feast keeps it) as a marker, so equal answers compare equal."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    return value


def _online(store, view: str, key: str, ids: list[str]) -> dict:
    names = feast_repo.feature_names(view)
    answer = store.get_online_features(features=[f"{view}:{n}" for n in names],
                                       entity_rows=[{key: k} for k in ids]).to_dict()
    return {name: _comparable(values) for name, values in answer.items()}


@pytest.fixture
def env(settings, tmp_path, monkeypatch):
    host, port = settings.redis_host_port
    monkeypatch.setenv("TANDEM_OFFLINE_DIR", str(tmp_path / "offline"))
    monkeypatch.setenv("TANDEM_REDIS_URL", f"redis://{host}:{port}/{REDIS_DB}")
    monkeypatch.setenv("TANDEM_FEAST_REGISTRY", str(tmp_path / "unused_registry.db"))
    run_settings = Settings()
    for key, value in run_settings.feast_environment().items():
        monkeypatch.setenv(key, value)
    client = redis.Redis.from_url(run_settings.redis_url)
    _delete_projects(client)
    try:
        yield {"settings": run_settings, "root": tmp_path, "client": client}
    finally:
        _delete_projects(client)
        feast_repo._forget_repo_modules()


def test_tandem_materializer_writes_what_feasts_local_engine_writes(env):
    from pipelines.batch.materialize import materialize

    root, client = env["root"], env["client"]
    keys = _write_tables(root / "offline")
    stores = {name: _store(root, project, "local") for name, project in PROJECTS.items()}
    start, end = T0 - timedelta(days=7), T0
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        stores["feast"].materialize(start_date=start, end_date=end, feature_views=list(ONLINE_VIEWS))
    reports = materialize(stores["tandem"], start, end, list(ONLINE_VIEWS))
    assert {r.view: r.rows for r in reports} == {v: 40 for v in ONLINE_VIEWS}
    assert all(r.written == r.rows for r in reports)

    feast_hashes, tandem_hashes = _hashes(client, PROJECTS["feast"]), _hashes(client, PROJECTS["tandem"])
    assert len(feast_hashes) == 80  # 40 users and 40 items, each holding two views
    assert tandem_hashes == feast_hashes

    for view, key in keys.items():
        ids = [f"{key[0]}{i}" for i in range(40)] + [f"{key[0]}missing"]
        assert _online(stores["tandem"], view, key, ids) == _online(stores["feast"], view, key, ids)

    # the interval is in each project's registry, as `feast materialize` records it
    for store in stores.values():
        fv = store.registry.get_feature_view("user_features_v1", store.project, allow_cache=False)
        assert [(s, e) for s, e in fv.materialization_intervals] == [(start, end)]

    # an older snapshot materialized later must not overwrite the newer row already online
    old_ts = T0 - timedelta(days=3)
    schema = feast_repo.arrow_schema("user_features_v1")
    old = pa.table({n: ([f"u{i}" for i in range(5)] if n == "user_id" else [old_ts] * 5 if n == "event_timestamp"
                        else [None] * 5) for n in schema.names}, schema=schema)
    dest = root / "offline" / "user_features" / f"date={old_ts:%Y-%m-%d}"
    dest.mkdir(parents=True)
    pq.write_table(old, dest / "part-0.parquet")
    window = (old_ts - timedelta(hours=1), old_ts + timedelta(hours=1))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        stores["feast"].materialize(start_date=window[0], end_date=window[1], feature_views=["user_features_v1"])
    (report,) = materialize(stores["tandem"], *window, ["user_features_v1"])
    assert (report.rows, report.written, report.skipped_not_newer) == (5, 0, 5)
    assert _hashes(client, PROJECTS["tandem"]) == tandem_hashes
    assert _hashes(client, PROJECTS["feast"]) == feast_hashes
