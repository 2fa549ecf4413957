"""tandem's materializer writes exactly what Feast writes: checked against Feast's own encoder, no services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.type_map import python_values_to_proto_values
from feast.types import Array, Float64, Int64, String
from feast.utils import _convert_arrow_to_proto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from pipelines.batch.materialize import (
    encode_view,
    in_interval,
    is_newer,
    latest_per_entity,
    stored_ns,
    write_encoded,
)
from pipelines.stream.online_format import column_encoder, timestamp_column, view_codec

T0 = datetime(2025, 2, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

COLUMNS = [
    (Int64, pa.array([1, None, 0, -5, 2**60 + 1, 127, 128], pa.int64())),
    (Int64, pa.array([1, 0, -5, 2**60 + 1, 300, 300, 1], pa.int64())),
    (Int64, pa.array([None, None], pa.int64())),
    (Float64, pa.array([1.5, None, float("nan"), 0.0, -0.0, float("inf"), 1e-300], pa.float64())),
    (Float64, pa.array([None, None], pa.float64())),
    (String, pa.array(["a", None, "", "é" * 200, "a", "x" * 130], pa.string())),
    (Array(String), pa.array([["a", "b"], None, [], ["", "x"], ["a", None], ["y" * 200] * 3], pa.list_(pa.string()))),
    (Array(String), pa.array([[], []], pa.list_(pa.string()))),
    (Array(Float64), pa.array([[1.0, 2.0], None, [], [float("nan")], [1.0, None], [0.5] * 20],
                              pa.list_(pa.float64()))),
    (Array(Int64), pa.array([[1, 2], None, [], [-1]], pa.list_(pa.int64()))),
]


def feast_bytes(array: pa.Array, dtype) -> list[bytes]:
    """What Feast's materialization stores for each value of a column (feast/utils.py _columns_to_proto_values)."""
    values = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), dtype.to_value_type())
    return [v.SerializeToString() for v in values]


@pytest.mark.parametrize(("dtype", "array"), COLUMNS, ids=[f"{d}-{i}" for i, (d, _) in enumerate(COLUMNS)])
def test_column_encoding_matches_feast_byte_for_byte(dtype, array):
    encode = column_encoder(dtype)
    assert encode(array) == feast_bytes(array, dtype)
    sliced = array.slice(1)  # offsets into shared buffers, as after a filter or take
    assert encode(sliced) == feast_bytes(sliced, dtype)
    chunked = pa.chunked_array([array.slice(0, 1), array.slice(1)])
    assert encode(chunked) == feast_bytes(array, dtype)


def test_nulls_nan_and_empty_lists_follow_feasts_rules():
    assert column_encoder(Float64)(pa.array([None, float("nan")], pa.float64())) == [b"", b""]
    assert column_encoder(Int64)(pa.array([None], pa.int64())) == [b""]
    assert column_encoder(Array(String))(pa.array([None, []], pa.list_(pa.string()))) == [b"", b"b\x00"]
    assert column_encoder(Array(Float64))(pa.array([None, []], pa.list_(pa.float64()))) == [b"", b"z\x00"]


def _view() -> tuple[FeatureView, Entity]:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(name="src", path="/nonexistent.parquet", timestamp_field="event_timestamp",
                        created_timestamp_column="created")
    view = FeatureView(name="all_types_v1", entities=[user], ttl=timedelta(days=1), source=source, schema=[
        Field(name="user_id", dtype=String), Field(name="n", dtype=Int64), Field(name="x", dtype=Float64),
        Field(name="s", dtype=String), Field(name="ss", dtype=Array(String)), Field(name="xs", dtype=Array(Float64)),
    ])
    return view, user


def _rows() -> pa.Table:
    return pa.table({
        "user_id": ["u1", "ü2", "u3", "u" * 200],
        "event_timestamp": pa.array([T0, T0 + timedelta(microseconds=1), T0 - timedelta(days=400), T0], TS),
        "created": pa.array([T0] * 4, TS),
        "n": pa.array([1, None, 3, 4], pa.int64()),
        "x": [0.5, float("nan"), None, -0.0],
        "s": ["a", None, "", "b"],
        "ss": pa.array([["a"], [], None, ["b", "c"]], pa.list_(pa.string())),
        "xs": pa.array([[1.0], [], None, [2.0, 3.0]], pa.list_(pa.float64())),
    })


def test_whole_rows_match_feasts_redis_write():
    """Keys, hash fields and values as feast/infra/online_stores/redis.py online_write_batch builds them."""
    view, user = _view()
    codec = view_codec(view, ["user_id"], "proj")
    table = _rows()
    rows = encode_view(codec, table, "event_timestamp")
    feast_rows = _convert_arrow_to_proto(table, view, {"user_id": ValueType.STRING})
    assert len(rows) == len(feast_rows)
    for i, (entity_key, values, ts, _) in enumerate(feast_rows):
        assert rows.keys[i] == _redis_key("proj", entity_key, entity_key_serialization_version=3)
        want = {_mmh3(f"all_types_v1:{name}"): v.SerializeToString() for name, v in values.items()}
        stamp = Timestamp()
        stamp.FromDatetime(ts)
        want[b"_ts:all_types_v1"] = stamp.SerializeToString()
        got = dict(zip(codec.field_keys, (col[i] for col in rows.columns), strict=True))
        got[codec.ts_field] = rows.ts_bytes[i]
        assert got == want
        assert rows.ts_ns[i] == stamp.seconds * 1_000_000_000 + stamp.nanos


def test_timestamps_are_whole_microseconds_like_feast():
    ns = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="UTC"))
    ts_ns, ts_bytes = timestamp_column(ns)
    assert ts_ns.tolist() == [1_700_000_000_123_456_000]
    assert ts_bytes == [Timestamp(seconds=1_700_000_000, nanos=123_456_000).SerializeToString()]


def test_latest_row_per_entity_by_event_time_then_created():
    table = pa.table({
        "k": ["a", "a", "a", "b", "b", "c", "c"],
        "event_timestamp": pa.array([T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1), T0, T0, T0, T0], TS),
        "created": pa.array([T0, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0, T0, T0], TS),
        "v": [1, 2, 3, 4, 5, 6, 7],
    })
    latest = latest_per_entity(table, "k", "event_timestamp", "created")
    assert dict(zip(latest.column("k").to_pylist(), latest.column("v").to_pylist(), strict=True)) == \
        {"a": 3, "b": 4, "c": 6}  # full tie (c): the first row read
    no_created = latest_per_entity(table.drop_columns(["created"]), "k", "event_timestamp")
    assert dict(zip(no_created.column("k").to_pylist(), no_created.column("v").to_pylist(), strict=True)) == \
        {"a": 2, "b": 4, "c": 6}
    assert latest_per_entity(table.slice(0, 0), "k", "event_timestamp").num_rows == 0


def test_interval_includes_both_ends_like_feasts_between():
    table = pa.table({"event_timestamp": pa.array([T0 - timedelta(microseconds=1), T0, T0 + timedelta(days=1),
                                                   T0 + timedelta(days=1, microseconds=1)], TS)})
    kept = in_interval(table, "event_timestamp", T0, T0 + timedelta(days=1))
    assert kept.column("event_timestamp").to_pylist() == [T0, T0 + timedelta(days=1)]


def test_newer_timestamp_wins_rule():
    assert is_newer(2, 0) and is_newer(2, 1)
    assert not is_newer(2, 2) and not is_newer(1, 2)
    cache: dict[bytes, int] = {}
    assert stored_ns(None, cache) == 0 and stored_ns(b"", cache) == 0
    assert stored_ns(Timestamp(seconds=3, nanos=4).SerializeToString(), cache) == 3_000_000_004


class FakePipeline:
    """Just enough of a redis-py pipeline over a dict of hashes."""

    def __init__(self, data: dict[bytes, dict[bytes, bytes]]):
        self.data, self.ops = data, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def hget(self, key, field):
        self.ops.append(lambda: self.data.get(key, {}).get(field))

    def execute_command(self, name, key, *args):
        assert name == "HSET"

        def hset():
            self.data.setdefault(key, {}).update(dict(zip(args[::2], args[1::2], strict=True)))
        self.ops.append(hset)

    def expire(self, key, seconds):
        self.ops.append(lambda: None)

    def execute(self):
        out = [op() for op in self.ops]
        self.ops = []
        return out


class FakeRedis:
    def __init__(self):
        self.data: dict[bytes, dict[bytes, bytes]] = {}

    def pipeline(self, transaction=True):
        assert transaction is False
        return FakePipeline(self.data)


def test_an_older_row_never_overwrites_a_newer_one():
    view, _ = _view()
    codec = view_codec(view, ["user_id"], "proj")
    client = FakeRedis()
    table = _rows()
    assert write_encoded(client, codec, encode_view(codec, table, "event_timestamp"), chunk=3) == (4, 0)
    before = {k: dict(v) for k, v in client.data.items()}
    stamps = [T0 - timedelta(days=1), T0, T0 - timedelta(days=500), T0]
    older = table.set_column(1, "event_timestamp", pa.array(stamps, TS))
    older = older.set_column(3, "n", pa.array([9, 9, 9, 9], pa.int64()))
    # rows 0-2 are older than what is stored, row 3 is the same instant: none is written
    assert write_encoded(client, codec, encode_view(codec, older, "event_timestamp"), chunk=3) == (0, 4)
    assert client.data == before
    newer = older.set_column(1, "event_timestamp", pa.array([T0 + timedelta(days=1)] * 4, TS))
    assert write_encoded(client, codec, encode_view(codec, newer, "event_timestamp")) == (4, 0)
    n_field = codec.field_keys[codec.feature_names.index("n")]
    assert {h[n_field] for h in client.data.values()} == {column_encoder(Int64)(pa.array([9]))[0]}
    assert np.all([h[codec.ts_field] == timestamp_column(pa.array([T0 + timedelta(days=1)], TS))[1][0]
                   for h in client.data.values()])


def test_raw_protocol_frames_carry_the_same_commands_as_the_pipeline_path():
    import hiredis

    from pipelines.batch.materialize import resp_commands

    view, _ = _view()
    codec = view_codec(view, ["user_id"], "proj")
    rows = encode_view(codec, _rows(), "event_timestamp")
    gets, sets = resp_commands(codec, rows, 1, 4)
    reader = hiredis.Reader()
    reader.feed(b"".join(gets + sets))
    commands = []
    while (cmd := reader.gets()) is not False:
        commands.append(cmd)
    assert commands[:3] == [[b"HGET", k, codec.ts_field] for k in rows.keys[1:4]]
    for i, cmd in enumerate(commands[3:], start=1):
        fields = [codec.ts_field, rows.ts_bytes[i]]
        for fk, col in zip(codec.field_keys, rows.columns, strict=True):
            fields += [fk, col[i]]
        assert cmd == [b"HSET", rows.keys[i], *fields]
