"""Fixtures for the stream tests: the applied Feast repo, a fresh topic per test, synthetic events, processors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from pipelines.stream.offline_log import ensure_offline_tables
from pipelines.stream.online_format import FEATURE_REPO, stream_feature_views
from pipelines.stream.processor import ProcessorConfig, StreamProcessor
from pipelines.stream.processor import applied_total as stream_applied_total
from pipelines.stream.producer import EventProducer
from pipelines.stream.synthetic import make_catalog, make_events, write_catalog  # noqa: F401 - used by the tests
from tandem.schema import Event
from tandem.settings import PROJECT_ROOT, export_feast_environment
from tandem.topics import ensure_topics


@pytest.fixture(scope="session")
def feature_store(settings):
    """A FeatureStore over feature_repo, applied once (skipped when the registry already has these views)."""
    from feast import FeatureStore

    from pipelines.batch import feast_repo, offline

    export_feast_environment(settings)
    ensure_offline_tables()
    for view in feast_repo.repo_contents().feature_views:  # `feast apply` reads every view's table
        offline.ensure_table(view.name)
    store = FeatureStore(repo_path=str(FEATURE_REPO))
    def shape(view):
        return [f.name for f in view.features], view.batch_source.created_timestamp_column

    wanted = {v.name: shape(v) for v in stream_feature_views()}
    try:
        have = {name: shape(store.get_feature_view(name)) for name in wanted}
    except Exception:  # noqa: BLE001 - not applied yet (feast raises several kinds)
        have = {}
    if have != wanted:
        env = {**os.environ, **settings.feast_environment()}
        done = subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=FEATURE_REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"feast apply failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        store = FeatureStore(repo_path=str(FEATURE_REPO))
    return store


@pytest.fixture
def stream_settings(settings):
    """Settings with a fresh interactions topic (and DLQ) of 4 partitions for this test."""
    s = replace(settings, topic=f"it-{uuid.uuid4().hex[:10]}", kafka_partitions=4)
    ensure_topics(s)
    return s


def produce(settings, events: list[Event]) -> None:
    with EventProducer(settings) as producer:
        for e in events:
            producer.send(e)
        producer.flush()


def applied_total(settings) -> int:
    """Records whose effects are in Redis, summed over the topic's partitions."""
    return stream_applied_total(redis.Redis.from_url(settings.redis_url), settings.topic, settings.kafka_partitions)


def wait_applied(settings, total: int, timeout: float, procs: list[subprocess.Popen] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while applied_total(settings) < total:
        for p in procs or []:
            assert p.poll() is None, f"processor exited early with {p.returncode}"
        assert time.monotonic() < deadline, f"only {applied_total(settings)} of {total} records applied in {timeout}s"
        time.sleep(0.1)


class InProcessProcessor:
    """A StreamProcessor on a thread, for tests that do not kill it."""

    def __init__(self, settings, catalog=None, **config):
        config.setdefault("group_id", f"g-{uuid.uuid4().hex[:8]}")
        config.setdefault("session_timeout_ms", 6000)
        self.processor = StreamProcessor(settings, ProcessorConfig(**config), catalog=catalog)
        self.thread = threading.Thread(target=self.processor.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.processor

    def __exit__(self, *exc):
        self.processor.stop()
        self.thread.join(timeout=30)


def start_processor(settings, data_dir: Path, log_path: Path, group: str, *extra: str) -> subprocess.Popen:
    """`tandem stream run` as a subprocess (so it can be kill -9'd), logging JSON lines to log_path."""
    env = {**os.environ, "TANDEM_TOPIC": settings.topic, "PYTHONWARNINGS": "ignore"}
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "tandem", "stream", "run", "--group", group, "--data",
                             str(data_dir), "--metrics-port", "0", "--session-timeout-ms", "6000", *extra],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def online_features(store, view: str, join_key: str, ids: list[str]) -> dict[str, dict]:
    """get_online_features for every id of one stream view, as {id: {feature: value}}."""
    names = [f.name for f in store.get_feature_view(view).features]
    rows = store.get_online_features(features=[f"{view}:{n}" for n in names],
                                     entity_rows=[{join_key: i} for i in ids]).to_dict()
    return {i: {n: rows[n][k] for n in names} for k, i in enumerate(rows[join_key])}


def assert_matches_log(store, events: list[Event], catalog: dict[str, str]) -> None:
    """Online features (read through Feast) equal a from-scratch recomputation over the whole log."""
    from pipelines.stream.session_features import features_from_log

    expected = features_from_log(events, catalog)
    users = online_features(store, "user_session_v1", "user_id", sorted(expected.users))
    items = online_features(store, "item_trending_v1", "item_id", sorted(expected.items))
    wrong_users = {u: (users[u], expected.users[u]) for u in expected.users if users[u] != expected.users[u]}
    wrong_items = {i: (items[i], expected.items[i]) for i in expected.items if items[i] != expected.items[i]}
    assert not wrong_users, f"{len(wrong_users)} users differ, e.g. {next(iter(wrong_users.items()))}"
    assert not wrong_items, f"{len(wrong_items)} items differ, e.g. {next(iter(wrong_items.items()))}"


write_dataset = write_catalog  # the tests' name for it
