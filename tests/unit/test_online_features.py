"""Decoding Feast's Redis layout (values, timestamps) without a Redis."""

from datetime import UTC, datetime

from feast.protos.feast.types.Value_pb2 import StringList, Value
from google.protobuf.timestamp_pb2 import Timestamp

from serving.features import decode_ts, decode_value


def test_values_decode_to_python():
    assert decode_value(Value(int64_val=7).SerializeToString()) == 7
    assert decode_value(Value(double_val=0.5).SerializeToString()) == 0.5
    assert decode_value(Value(string_val="shoes").SerializeToString()) == "shoes"
    assert decode_value(Value(string_list_val=StringList(val=["a", "b"])).SerializeToString()) == ["a", "b"]
    assert decode_value(Value().SerializeToString()) is None
    assert decode_value(None) is None
    assert decode_value(b"\xff\xff not a proto") is None


def test_timestamps_decode_to_epoch_seconds():
    ts = Timestamp()
    ts.FromDatetime(datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=UTC))
    assert decode_ts(ts.SerializeToString()) == datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert decode_ts(None) is None

