"""The processor's other outputs: the offline log, the Prometheus endpoint and the online-model examples."""

import socket
import urllib.request
import uuid

import pyarrow.compute as pc

from pipelines.stream.offline_log import read_log
from pipelines.stream.online_format import stream_feature_views
from pipelines.stream.session_features import features_from_log
from tests.integration.stream.conftest import InProcessProcessor, make_catalog, make_events, produce, wait_applied


class RecordingSink:
    wants_examples = True

    def __init__(self):
        self.examples = []

    def emit(self, examples):
        self.examples.extend(examples)

    def flush(self):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_log_metrics_and_examples(stream_settings, feature_store):
    prefix = f"out{uuid.uuid4().hex[:6]}"
    events = make_events(prefix, 600, n_users=8, n_items=12)
    catalog = make_catalog(prefix, 12)
    port = _free_port()
    sink = RecordingSink()
    runner = InProcessProcessor(stream_settings, catalog=catalog, metrics_port=port, max_batch=100)
    runner.processor.sink = sink
    with runner:
        produce(stream_settings, events)
        wait_applied(stream_settings, len(events), timeout=60)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in ("tandem_stream_events_total", "tandem_stream_events_per_second", "tandem_stream_consumer_lag",
                 "tandem_stream_freshness_seconds_bucket", "tandem_stream_dlq_total", "tandem_stream_redis_up"):
        assert name in metrics, f"{name} missing from /metrics"
    # the processor flushes its outbox when it stops: the last logged row per entity is what serving holds
    expected = features_from_log(events, catalog)
    user_view, item_view = stream_feature_views()
    for view, key, want, stamps in ((user_view, "user_id", expected.users, expected.user_timestamps),
                                    (item_view, "item_id", expected.items, expected.item_timestamps)):
        table = read_log(view)
        table = table.filter(pc.starts_with(table.column(key), prefix))
        latest = {}
        for row in table.sort_by([("event_timestamp", "ascending"), ("created", "ascending")]).to_pylist():
            latest[row[key]] = row
        assert set(latest) == set(want)
        for entity, row in latest.items():
            assert row.pop("event_timestamp") == stamps[entity]
            row.pop("created")
            row.pop(key)
            assert row == want[entity], entity
    assert sorted(e.event_id for e in sink.examples) == sorted(e.event_id for e in events)
    firsts = {}
    for example in sink.examples:
        firsts.setdefault(example.user_id, example)
    assert all(example.user_features is None for example in firsts.values())
    assert sum(example.user_features is not None for example in sink.examples) == len(events) - len(firsts)


def test_overlapping_outbox_flushes_lose_no_row(stream_settings):
    """A processor shutting down and a partition's new owner can flush one outbox at the same time; every row
    must still reach the offline log."""
    import json
    import threading
    import time

    import redis

    from pipelines.stream.offline_log import flush_outbox, outbox_row

    client = redis.Redis.from_url(stream_settings.redis_url)
    prefix = f"flush{uuid.uuid4().hex[:6]}"
    key = f"tandem-test:{prefix}:outbox"
    now_us = int(time.time() * 1e6)
    total = 3000
    appended = threading.Event()

    def append():
        for lo in range(0, total, 50):
            client.rpush(key, *[json.dumps(["item", f"{n:012d}", outbox_row(f"{prefix}-{n}", now_us, now_us,
                                                                               [1, 2, 0, 0.5])])
                                for n in range(lo, lo + 50)])
        appended.set()

    def flush():
        while not (appended.is_set() and client.llen(key) == 0):
            flush_outbox(client, key, prefix, max_rows=200)

    threads = [threading.Thread(target=append), *[threading.Thread(target=flush) for _ in range(3)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert client.llen(key) == 0
    _, item_view = stream_feature_views()
    logged = read_log(item_view).column("item_id").to_pylist()
    assert set(logged) >= {f"{prefix}-{n}" for n in range(total)}
    assert sum(1 for e in logged if e.startswith(f"{prefix}-")) == total  # and none twice
