"""Feast's Redis online format, derived from feature views, for writing rows directly.

A row of feature view V for entity value x lives in the Redis hash
`serialize_entity_key(x, v3) + project`; field `mmh3("V:feature")` holds the
serialized feast ValueProto and field `_ts:V` the serialized protobuf Timestamp of
the row's event time — exactly what `FeatureStore.get_online_features` reads
(feast/infra/online_stores/redis.py). Writing it ourselves lets the processor batch
every write of a micro-batch into one Redis transaction instead of one Feast
`push` per row, and lets the batch materializer (pipelines/batch/materialize.py) encode
whole Arrow columns at once instead of one ValueProto per value.

Column encoding follows what Feast's materialization writes (feast/utils.py
`_convert_arrow_to_proto` → feast/type_map.py `python_values_to_proto_values`), byte for
byte, including its null rules: a null (or NaN) scalar and a null list are the empty
ValueProto (b""), an empty list is a set-but-empty list field, a null element of a float
list becomes NaN and of a string list "", and an Int64 column that holds nulls goes through
float64 (as numpy does for Feast), so values beyond 2**53 lose the same bits. The unit tests
check every dtype against Feast's own encoder.
"""

from __future__ import annotations

import importlib
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from feast import Entity, FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from tandem.settings import PROJECT_ROOT

FEATURE_REPO = PROJECT_ROOT / "feature_repo"


class OnlineFormatError(ValueError):
    """A feature view or value that the direct Redis writer cannot encode."""


def _int64(v: Any) -> bytes:
    return ValueProto(int64_val=int(v)).SerializeToString()


def _float64(v: Any) -> bytes:
    return ValueProto(double_val=float(v)).SerializeToString()


def _string(v: Any) -> bytes:
    return ValueProto(string_val=str(v)).SerializeToString()


def _string_list(v: Any) -> bytes:
    return ValueProto(string_list_val=StringList(val=list(v))).SerializeToString()


def _int64_list(v: Any) -> bytes:
    return ValueProto(int64_list_val=Int64List(val=[int(x) for x in v])).SerializeToString()


def _float64_list(v: Any) -> bytes:
    return ValueProto(double_list_val=DoubleList(val=[float(x) for x in v])).SerializeToString()


_ENCODERS: dict[Any, Callable[[Any], bytes]] = {
    Int64: _int64, Float64: _float64, String: _string, Array(String): _string_list, Array(Int64): _int64_list,
    Array(Float64): _float64_list,
}


def _encoder(dtype: Any) -> Callable[[Any], bytes]:
    for known, enc in _ENCODERS.items():
        if dtype == known:
            return enc
    raise OnlineFormatError(f"feature type {dtype} has no direct Redis encoder; supported: "
                            f"{', '.join(str(k) for k in _ENCODERS)}")


# ---- whole columns -------------------------------------------------------------------------------
# Wire format of the ValueProto fields used below (feast/protos/feast/types/Value.proto):
# string_val = 3 (tag 0x12), double_val = 6 (0x29, fixed64), string_list_val = 12 (0x62),
# double_list_val = 15 (0x7a); StringList/DoubleList hold `repeated ... val = 1` (0x0a; doubles packed).
_DOUBLE_TAG = 0x29
_STRING_LIST_TAG = b"\x62"
_DOUBLE_LIST_TAG = b"\x7a"
_LIST_VAL_TAG = b"\x0a"
NULL_VALUE = b""  # an empty ValueProto: what Feast stores for a missing value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = tuple(_varint(n) for n in range(1 << 14))


def _len_prefix(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < len(_SMALL_VARINTS) else _varint(n)


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _by_unique(values: np.ndarray, valid: np.ndarray, encode: Callable[[Any], bytes]) -> list[bytes]:
    """Encode each distinct valid value once (feature columns repeat a lot), then spread the results."""
    out = [NULL_VALUE] * len(values)
    if not valid.any():
        return out
    idx = np.flatnonzero(valid)
    uniques, inverse = np.unique(values[idx], return_inverse=True)
    encoded = [encode(u) for u in uniques.tolist()]
    for i, j in zip(idx.tolist(), inverse.tolist(), strict=True):
        out[i] = encoded[j]
    return out


def _int64_column(array: pa.Array) -> list[bytes]:
    if array.null_count:  # numpy turns an int column with nulls into float64; Feast then int()s it back
        floats = array.to_numpy(zero_copy_only=False).astype(np.float64)
        valid = ~np.isnan(floats)
        return _by_unique(np.where(valid, floats, 0).astype(np.int64), valid, _int64)
    values = array.to_numpy(zero_copy_only=False).astype(np.int64)
    return _by_unique(values, np.ones(len(values), dtype=bool), _int64)


def _float64_column(array: pa.Array) -> list[bytes]:
    values = np.ascontiguousarray(array.to_numpy(zero_copy_only=False), dtype="<f8")
    n = len(values)
    buf = np.empty((n, 9), dtype=np.uint8)
    buf[:, 0] = _DOUBLE_TAG
    buf[:, 1:] = values.view(np.uint8).reshape(n, 8)
    raw = buf.tobytes()
    out = [raw[i:i + 9] for i in range(0, 9 * n, 9)]
    for i in np.flatnonzero(np.isnan(values)).tolist():  # Feast stores NaN as missing, like null
        out[i] = NULL_VALUE
    return out


def _string_column(array: pa.Array) -> list[bytes]:
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    values = array.fill_null("").to_numpy(zero_copy_only=False)
    return _by_unique(values, valid, _string)


def _string_list_column(array: pa.Array) -> list[bytes]:
    offsets = array.offsets.to_numpy()
    items = array.values.fill_null("").to_pylist()  # Feast writes a null element as ""
    cache: dict[str, bytes] = {}
    elements = []
    for s in items:
        e = cache.get(s)
        if e is None:
            raw = s.encode("utf8")
            e = cache[s] = _LIST_VAL_TAG + _len_prefix(len(raw)) + raw
        elements.append(e)
    valid = array.is_valid().to_numpy(zero_copy_only=False).tolist()
    out = []
    for i, ok in enumerate(valid):
        if not ok:
            out.append(NULL_VALUE)
            continue
        inner = b"".join(elements[offsets[i]:offsets[i + 1]])
        out.append(_STRING_LIST_TAG + _len_prefix(len(inner)) + inner)
    return out


def _float64_list_column(array: pa.Array) -> list[bytes]:
    offsets = (array.offsets.to_numpy().astype(np.int64) * 8).tolist()
    values = array.values.to_numpy(zero_copy_only=False)  # a null element becomes NaN, as in Feast
    raw = np.ascontiguousarray(values, dtype="<f8").tobytes()
    valid = array.is_valid().to_numpy(zero_copy_only=False).tolist()
    out = []
    for i, ok in enumerate(valid):
        if not ok:
            out.append(NULL_VALUE)
            continue
        payload = raw[offsets[i]:offsets[i + 1]]
        inner = _LIST_VAL_TAG + _len_prefix(len(payload)) + payload if payload else b""
        out.append(_DOUBLE_LIST_TAG + _len_prefix(len(inner)) + inner)
    return out


def _generic_column(encode: Callable[[Any], bytes]) -> Callable[[pa.Array], list[bytes]]:
    def column(array: pa.Array) -> list[bytes]:
        return [NULL_VALUE if v is None else encode(v) for v in array.to_pylist()]
    return column


_COLUMN_ENCODERS: dict[Any, Callable[[pa.Array], list[bytes]]] = {
    Int64: _int64_column, Float64: _float64_column, String: _string_column,
    Array(String): _string_list_column, Array(Float64): _float64_list_column,
    Array(Int64): _generic_column(_int64_list),
}


def column_encoder(dtype: Any) -> Callable[[pa.Array | pa.ChunkedArray], list[bytes]]:
    """A function from an Arrow column of `dtype` to each row's serialized ValueProto, as Feast writes it."""
    for known, enc in _COLUMN_ENCODERS.items():
        if dtype == known:
            return lambda array, enc=enc: enc(_plain(array))
    raise OnlineFormatError(f"feature type {dtype} has no column encoder; supported: "
                            f"{', '.join(str(k) for k in _COLUMN_ENCODERS)}")


def timestamp_column(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, list[bytes]]:
    """(event time in ns since the epoch, the `_ts:<view>` field bytes) per row of a timestamp column.

    Feast converts event times through Python datetimes, i.e. to whole microseconds.
    """
    array = _plain(array)
    if not pa.types.is_timestamp(array.type):
        raise OnlineFormatError(f"event timestamp column has type {array.type}, not a timestamp")
    if array.null_count:
        raise OnlineFormatError("event timestamp column holds nulls")
    us = pc.cast(array, pa.timestamp("us", tz=array.type.tz), safe=False).cast(pa.int64()).to_numpy()
    uniques, inverse = np.unique(us, return_inverse=True)
    encoded = [timestamp_bytes(u) for u in uniques.tolist()]
    return us * 1000, [encoded[j] for j in inverse.tolist()]


def timestamp_bytes(ts_us: int) -> bytes:
    """The `_ts:<view>` field: a protobuf Timestamp of the row's event time."""
    return Timestamp(seconds=ts_us // 1_000_000, nanos=(ts_us % 1_000_000) * 1000).SerializeToString()


@dataclass(frozen=True)
class ViewCodec:
    """Encodes rows of one single-entity feature view into Feast's Redis hash layout."""

    name: str
    join_key: str
    feature_names: tuple[str, ...]
    field_keys: tuple[bytes, ...]
    encoders: tuple[Callable[[Any], bytes], ...]
    column_encoders: tuple[Callable[[pa.Array | pa.ChunkedArray], list[bytes]], ...]
    ts_field: bytes
    key_prefix: bytes
    project_suffix: bytes

    def redis_key(self, entity_value: str) -> bytes:
        raw = entity_value.encode("utf8")
        return b"".join((self.key_prefix, struct.pack("<I", len(raw)), raw, self.project_suffix))

    def mapping(self, values: Mapping[str, Any], ts_us: int) -> dict[bytes, bytes]:
        """The hash fields of one row: every feature plus the `_ts` field."""
        parts = zip(self.feature_names, self.field_keys, self.encoders, strict=True)
        out = {key: enc(values[name]) for name, key, enc in parts}
        out[self.ts_field] = timestamp_bytes(ts_us)
        return out

    def redis_keys(self, entity_values: pa.Array | pa.ChunkedArray) -> list[bytes]:
        """The Redis key of every row of a (non-null, string) join-key column."""
        array = _plain(entity_values)
        if array.null_count:
            raise OnlineFormatError(f"{self.name}: join key {self.join_key} holds nulls")
        head, tail, pack = self.key_prefix, self.project_suffix, struct.Struct("<I").pack
        out = []
        for v in array.to_pylist():
            raw = v.encode("utf8")
            out.append(b"".join((head, pack(len(raw)), raw, tail)))
        return out

    def encode_columns(self, table: pa.Table) -> list[list[bytes]]:
        """Every feature column of `table` encoded, in `feature_names` order (a missing column is an error)."""
        missing = [n for n in self.feature_names if n not in table.column_names]
        if missing:
            raise OnlineFormatError(f"{self.name}: rows lack feature column(s) {', '.join(missing)}")
        return [enc(table.column(name)) for name, enc in zip(self.feature_names, self.column_encoders, strict=True)]


def view_codec(view: FeatureView, join_keys: list[str], project: str,
               entity_key_serialization_version: int = 3, online_name: str | None = None) -> ViewCodec:
    """Derive the Redis layout of a feature view (one string join key) from its definition.

    `online_name` is the name Feast's Redis store files the view under (feast's
    compute_versioned_name: the view's name unless online feature-view versioning is on).
    """
    if entity_key_serialization_version != 3:
        raise OnlineFormatError(f"entity_key_serialization_version {entity_key_serialization_version}: only 3 is "
                                "supported by the direct writer (set it in feature_store.yaml)")
    if len(join_keys) != 1:
        raise OnlineFormatError(f"feature view {view.name} has join keys {join_keys}; the direct writer needs one")
    jk = join_keys[0].encode("utf8")
    # v3 layout: <n keys> <type STRING> <len> key ... <value type STRING> <len> value (see key_encoding_utils)
    prefix = struct.pack("<I", 1) + struct.pack("<I", ValueType.STRING.value) + struct.pack("<I", len(jk)) + jk \
        + struct.pack("<I", ValueType.STRING.value)
    features = list(view.features)
    name = online_name or view.name
    return ViewCodec(
        name=name,
        join_key=join_keys[0],
        feature_names=tuple(f.name for f in features),
        field_keys=tuple(_mmh3(f"{name}:{f.name}") for f in features),
        encoders=tuple(_encoder(f.dtype) for f in features),
        column_encoders=tuple(column_encoder(f.dtype) for f in features),
        ts_field=f"_ts:{name}".encode(),
        key_prefix=prefix,
        project_suffix=project.encode("utf8"),
    )


@lru_cache(maxsize=1)
def stream_feature_views() -> tuple[FeatureView, FeatureView]:
    """(user_session_v1, item_trending_v1), imported from feature_repo/features/stream_features.py."""
    repo = str(FEATURE_REPO)
    if repo not in sys.path:
        sys.path.insert(0, repo)  # the repo's modules import each other as top-level modules, as `feast apply` does
    module = importlib.import_module("features.stream_features")
    return module.user_session_v1, module.item_trending_v1


def join_keys_of(view: FeatureView) -> list[str]:
    """A view's join keys, from the Entity objects in feature_repo/entities.py (before `feast apply`)."""
    stream_feature_views()
    entities = {e.name: e for e in vars(importlib.import_module("entities")).values() if isinstance(e, Entity)}
    try:
        return [entities[name].join_key for name in view.entities]
    except KeyError as exc:
        raise OnlineFormatError(f"feature view {view.name}: entity {exc} is not defined in entities.py") from None


def feast_project(repo: Path = FEATURE_REPO) -> tuple[str, int]:
    """(project, entity_key_serialization_version) from feature_store.yaml."""
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    return config["project"], int(config.get("entity_key_serialization_version", 3))


@dataclass(frozen=True)
class StreamCodecs:
    user: ViewCodec
    item: ViewCodec


def stream_codecs() -> StreamCodecs:
    project, version = feast_project()
    user_view, item_view = stream_feature_views()
    return StreamCodecs(view_codec(user_view, join_keys_of(user_view), project, version),
                        view_codec(item_view, join_keys_of(item_view), project, version))
