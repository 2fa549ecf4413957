"""The stream's encodings: Feast's Redis key/value format, offline log schema, DLQ labels, example sinks."""

import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from pipelines.stream.examples import NullExampleSink, load_example_sink
from pipelines.stream.offline_log import log_schema, rows_to_table
from pipelines.stream.online_format import stream_codecs, stream_feature_views
from tandem.schema import EventError, decode_event


def test_redis_key_and_fields_match_feast():
    codecs = stream_codecs()
    for codec, join_key in ((codecs.user, "user_id"), (codecs.item, "item_id")):
        for entity in ("u1", "ünïcode-42", "x" * 128):
            expected = serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity)]),
                                            entity_key_serialization_version=3) + b"tandem"
            assert codec.redis_key(entity) == expected
    values = {"session_events": 3, "session_clicks": 1, "session_duration_s": 2.5, "last_item_ids": ["a", "b"],
              "last_category": "books", "session_categories": ["books"], "session_category_counts": [3],
              "last_event_epoch": 1.5, "seconds_since_prev_event": -1.0, "events_5m": 1, "clicks_5m": 0,
              "events_1h": 3, "clicks_1h": 1}
    mapping = codecs.user.mapping(values, 1_700_000_000_123_456)
    assert Value.FromString(mapping[_mmh3("user_session_v1:last_item_ids")]).string_list_val.val == ["a", "b"]
    assert Value.FromString(mapping[_mmh3("user_session_v1:session_duration_s")]).double_val == 2.5
    ts = Timestamp.FromString(mapping[b"_ts:user_session_v1"])
    assert (ts.seconds, ts.nanos) == (1_700_000_000, 123_456_000)
    assert len(mapping) == len(values) + 1


def test_offline_schema_is_derived_from_the_views():
    user_view, item_view = stream_feature_views()
    schema = log_schema(user_view)
    assert schema.names == ["user_id", "event_timestamp", *[f.name for f in user_view.features], "created"]
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("last_item_ids").type == pa.list_(pa.string())
    table = rows_to_table(item_view, [["i1", 1_700_000_000_000_000, 1_700_000_000_000_001, [1, 2, 3, 0.5]]])
    assert table.schema == log_schema(item_view)
    assert table.column("events_1h").to_pylist() == [2]


@pytest.mark.parametrize("payload,kind", [
    (b"{nope", "bad_json"),
    (b'{"event_id": "x"}', "missing_field"),
    (b'{"event_id": 1, "user_id": "u", "item_id": "i", "event_type": "view", "ts": "2026-01-01T00:00:00Z"}',
     "wrong_type"),
    (b'{"event_id": "x", "user_id": "u", "item_id": "i", "event_type": "zap", "ts": "2026-01-01T00:00:00Z"}',
     "unknown_event_type"),
    (b'{"event_id": "x", "user_id": "u", "item_id": "i", "event_type": "view", "ts": "1970-01-01T00:00:00Z"}',
     "bad_timestamp"),
    (b" " * 20_000, "oversize"),
])
def test_each_rejection_carries_its_kind(payload, kind):
    with pytest.raises(EventError) as err:
        decode_event(payload)
    assert err.value.kind == kind


class _Recorder:
    wants_examples = True

    def __init__(self):
        self.seen = []

    def emit(self, examples):
        self.seen.extend(examples)

    def flush(self):
        pass


def make_recorder():
    return _Recorder()


def test_example_sink_loading():
    assert isinstance(load_example_sink(None), NullExampleSink)
    sink = load_example_sink("tests.unit.test_stream_formats:make_recorder")
    assert type(sink).__name__ == "_Recorder" and sink.wants_examples
    with pytest.raises(ValueError, match="expected package.module:factory"):
        load_example_sink("nocolon")
    with pytest.raises(ValueError, match="cannot load it"):
        load_example_sink("tests.unit.test_stream_formats:missing")


def test_stream_log_schema_agrees_with_the_batch_placeholder():
    """Whichever stage creates the stream's offline tables first, the files have one schema."""
    from pipelines.batch import feast_repo

    for view in stream_feature_views():
        assert log_schema(view) == feast_repo.arrow_schema(view.name)
