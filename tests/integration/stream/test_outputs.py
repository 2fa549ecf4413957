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
