"""Feast's Redis online format, derived from the stream feature views, for writing rows directly.

A row of feature view V for entity value x lives in the Redis hash
`serialize_entity_key(x, v3) + project`; field `mmh3("V:feature")` holds the
serialized feast ValueProto and field `_ts:V` the serialized protobuf Timestamp of
the row's event time — exactly what `FeatureStore.get_online_features` reads
(feast/infra/online_stores/redis.py). Writing it ourselves lets the processor batch
every write of a micro-batch into one Redis transaction instead of one Feast
`push` per row.
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

import yaml
from feast import Entity, FeatureView
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.Value_pb2 import Int64List, StringList
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


_ENCODERS: dict[Any, Callable[[Any], bytes]] = {
    Int64: _int64, Float64: _float64, String: _string, Array(String): _string_list, Array(Int64): _int64_list,
}


def _encoder(dtype: Any) -> Callable[[Any], bytes]:
    for known, enc in _ENCODERS.items():
        if dtype == known:
            return enc
    raise OnlineFormatError(f"feature type {dtype} has no direct Redis encoder; supported: "
                            f"{', '.join(str(k) for k in _ENCODERS)}")


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


def view_codec(view: FeatureView, join_keys: list[str], project: str,
               entity_key_serialization_version: int = 3) -> ViewCodec:
    """Derive the Redis layout of a feature view (one string join key) from its definition."""
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
    return ViewCodec(
        name=view.name,
        join_key=join_keys[0],
        feature_names=tuple(f.name for f in features),
        field_keys=tuple(_mmh3(f"{view.name}:{f.name}") for f in features),
        encoders=tuple(_encoder(f.dtype) for f in features),
        ts_field=f"_ts:{view.name}".encode(),
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
