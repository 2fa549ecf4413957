"""Exactly-once in effect, against real Kafka, Redis and Feast: kill -9, a second instance, Redis outages.

Each test replays a log into a fresh topic, disturbs the processor, and then requires the
online features read through Feast to equal a from-scratch recomputation over the whole log.
"""

import json
import random
import time
import uuid

from pipelines.stream.processor import StreamProcessor
from tandem.services import RedisService
from tests.integration.stream.conftest import (
    InProcessProcessor,
    applied_total,
    assert_matches_log,
    kill9,
    make_catalog,
    make_events,
    produce,
    start_processor,
    wait_applied,
    write_dataset,
)

N_EVENTS = 12_000


def _log(prefix, n=N_EVENTS, seed=3):
    return make_events(prefix, n, n_users=150, n_items=120, seed=seed), make_catalog(prefix, 120)


def test_kill9_at_random_points_then_restart(stream_settings, feature_store, tmp_path):
    prefix = f"k9{uuid.uuid4().hex[:6]}"
    events, catalog = _log(prefix)
    data = write_dataset(tmp_path / "data", catalog)
    produce(stream_settings, events)
    group = f"g-{prefix}"
    rng = random.Random(prefix)
    thresholds = sorted(rng.sample(range(N_EVENTS // 10, N_EVENTS * 8 // 10), 3))
    proc = None
    try:
        for i, threshold in enumerate(thresholds):
            proc = start_processor(stream_settings, data, tmp_path / f"run{i}.log", group, "--max-batch", "100")
            wait_applied(stream_settings, threshold, timeout=120, procs=[proc])
            kill9(proc)
            assert applied_total(stream_settings) < N_EVENTS, "killed too late to test anything"
        proc = start_processor(stream_settings, data, tmp_path / "final.log", group, "--max-batch", "100")
        wait_applied(stream_settings, N_EVENTS, timeout=120, procs=[proc])
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    assert_matches_log(feature_store, events, catalog)


def test_written_but_not_committed_is_not_applied_twice(stream_settings, feature_store, monkeypatch):
    """The kill-between-write-and-commit case made deterministic: no Kafka commit ever succeeds."""
    prefix = f"nc{uuid.uuid4().hex[:6]}"
    events, catalog = _log(prefix, n=3000)
    produce(stream_settings, events)
    monkeypatch.setattr(StreamProcessor, "_commit", lambda self, force=False: None)
    group = f"g-{prefix}"
    with InProcessProcessor(stream_settings, catalog=catalog, group_id=group, max_batch=200):
        wait_applied(stream_settings, len(events), timeout=60)
    again = InProcessProcessor(stream_settings, catalog=catalog, group_id=group, max_batch=200)

    def counted(result):  # read through the counter: pytest plugins may make prometheus share values per process
        return again.processor.metrics.events.labels(result)._value.get()

    replayed_before, applied_before = counted("replayed"), counted("applied")
    with again:
        deadline = time.monotonic() + 60
        while counted("replayed") - replayed_before < len(events):
            assert time.monotonic() < deadline, "the second processor never re-read the uncommitted log"
            time.sleep(0.1)
    assert counted("applied") == applied_before, "records applied twice"
    assert_matches_log(feature_store, events, catalog)


def owned_partitions(log_path) -> set[int]:
    """The partitions a processor owns according to its JSON log (the last assignment after the last revoke)."""
    owned: set[int] = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        if doc.get("msg") == "partitions revoked":
            owned -= set(doc["partitions"])
        elif doc.get("msg") == "partitions assigned":
            owned |= set(doc["partitions"])
    return owned


def wait_split(log_a, log_b, partitions: int, procs, timeout: float = 120) -> None:
    """Wait until both processors own a share of the topic's partitions (startup can be slow on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        a, b = owned_partitions(log_a), owned_partitions(log_b)
        if a and b and not a & b and len(a | b) == partitions:
            return
        for p in procs:
            assert p.poll() is None, f"processor exited early with {p.returncode}"
        assert time.monotonic() < deadline, f"the two processors never split the partitions: a={a}, b={b}"
        time.sleep(0.2)


def test_second_instance_takes_over_after_kill9(stream_settings, feature_store, tmp_path):
    prefix = f"two{uuid.uuid4().hex[:6]}"
    events, catalog = _log(prefix)
    data = write_dataset(tmp_path / "data", catalog)
    group = f"g-{prefix}"
    a = start_processor(stream_settings, data, tmp_path / "a.log", group, "--max-batch", "50")
    b = start_processor(stream_settings, data, tmp_path / "b.log", group, "--max-batch", "50")
    try:
        wait_split(tmp_path / "a.log", tmp_path / "b.log", partitions=4, procs=[a, b])
        produce(stream_settings, events)
        wait_applied(stream_settings, N_EVENTS // 4, timeout=120, procs=[a, b])
        kill9(a)
        assert applied_total(stream_settings) < N_EVENTS, "killed too late to test anything"
        wait_applied(stream_settings, N_EVENTS, timeout=120, procs=[b])
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)
    assert "partitions assigned" in (tmp_path / "a.log").read_text()
    b_log = (tmp_path / "b.log").read_text()
    assert b_log.count("partitions assigned") >= 2, "b never took over a's partitions"
    assert_matches_log(feature_store, events, catalog)


def test_redis_outage_mid_stream(settings, stream_settings, feature_store, tmp_path):
    prefix = f"rd{uuid.uuid4().hex[:6]}"
    events, catalog = _log(prefix)
    data = write_dataset(tmp_path / "data", catalog)
    produce(stream_settings, events)
    proc = start_processor(stream_settings, data, tmp_path / "run.log", f"g-{prefix}", "--max-batch", "100")
    redis_service = RedisService(settings)
    try:
        wait_applied(stream_settings, N_EVENTS // 5, timeout=120, procs=[proc])
        redis_service.down()
        time.sleep(4)
        assert proc.poll() is None, "the processor died while Redis was down"
        redis_service.up()
        wait_applied(stream_settings, N_EVENTS, timeout=120, procs=[proc])
    finally:
        redis_service.up()
        proc.terminate()
        proc.wait(timeout=30)
    log = (tmp_path / "run.log").read_text()
    assert "Redis unreachable, waiting" in log
    assert_matches_log(feature_store, events, catalog)
