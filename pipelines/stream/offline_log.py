"""The offline side of the stream features: table schemas derived from the feature views, and the log writer.

The stream feature views' batch sources are parquet directories in the offline store
(`$TANDEM_OFFLINE_DIR/user_session`, `/item_trending`). This module is the one place
that knows their schema — the entity join key (string), every feature of the view in
`event_timestamp` (the entity's latest event time), every feature in its Arrow type and `created` (when
the row was written), both timestamp µs UTC since Spark rejects ns — and the
one place that creates them (`ensure_offline_tables`, needed before `feast apply`,
which reads every SparkSource path) and appends to them.

The processor never writes parquet per event: rows wait in a per-partition outbox
list in Redis (written in the same transaction as the online features), and
`flush_outbox` moves them into one parquet file per chunk, named after the chunk's
first row, so a flush repeated after a crash rewrites the same file instead of
adding a duplicate.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView
from feast.types import Array, Float64, Int64, String

from pipelines.stream.online_format import join_keys_of, stream_feature_views

TIMESTAMP_FIELD = "event_timestamp"
CREATED_FIELD = "created"  # when the row was written: orders rows that share an event_timestamp
_ARROW = {Int64: pa.int64(), Float64: pa.float64(), String: pa.string(),
          Array(String): pa.list_(pa.string()), Array(Int64): pa.list_(pa.int64())}


def _arrow_type(dtype: Any) -> pa.DataType:
    for known, arrow in _ARROW.items():
        if dtype == known:
            return arrow
    raise ValueError(f"feature type {dtype} has no Arrow mapping for the offline log")


def log_schema(view: FeatureView) -> pa.Schema:
    """The offline table schema of a stream feature view: join key, event_timestamp, features, created.

    The same layout pipelines/batch/feast_repo.arrow_schema derives for a view, so whichever stage creates a
    table first, the files agree.
    """
    fields = [pa.field(k, pa.string(), nullable=False) for k in join_keys_of(view)]
    fields.append(pa.field(TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC"), nullable=False))
    fields += [pa.field(f.name, _arrow_type(f.dtype)) for f in view.features]
    fields.append(pa.field(CREATED_FIELD, pa.timestamp("us", tz="UTC"), nullable=False))
    return pa.schema(fields)


def table_dir(view: FeatureView) -> Path:
    """Where the view's batch source reads (its SparkSource path)."""
    return Path(view.batch_source.path)


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, coerce_timestamps="us")
    os.replace(tmp, path)


def ensure_offline_tables() -> list[Path]:
    """Create each stream view's offline table (an empty parquet file with its schema) if it has no data.

    `tandem batch run` creates the same tables (pipelines/batch/offline.ensure_table) with the same schema.
    """
    created = []
    for view in stream_feature_views():
        directory = table_dir(view)
        if not any(directory.rglob("*.parquet")):
            _write_atomically(log_schema(view).empty_table(), directory / "part-00000-empty.parquet")
            created.append(directory)
    return created


def outbox_row(entity: str, ts_us: int, created_us: int, values: Sequence[Any]) -> list[Any]:
    """One logged row, as kept in the Redis outbox until it is flushed to parquet."""
    return [entity, ts_us, created_us, list(values)]


def rows_to_table(view: FeatureView, rows: Sequence[list[Any]]) -> pa.Table:
    schema = log_schema(view)
    names = [f.name for f in view.features]
    cols: dict[str, list[Any]] = {name: [] for name in schema.names}
    key = schema.names[0]
    for entity, ts_us, created_us, values in rows:
        cols[key].append(entity)
        cols[TIMESTAMP_FIELD].append(ts_us)
        cols[CREATED_FIELD].append(created_us)
        for name, value in zip(names, values, strict=True):
            cols[name].append(value)
    stamps = (TIMESTAMP_FIELD, CREATED_FIELD)
    arrays = [pa.array(cols[f.name], type=pa.int64()).cast(f.type) if f.name in stamps
              else pa.array(cols[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_chunk(view: FeatureView, chunk_name: str, rows: Sequence[list[Any]]) -> Path | None:
    """Write one outbox chunk of a view's rows as `<table>/stream-<chunk_name>.parquet` (idempotent by name)."""
    if not rows:
        return None
    path = table_dir(view) / f"stream-{chunk_name}.parquet"
    _write_atomically(rows_to_table(view, rows), path)
    return path


FLUSH_LOCK_MS = 30_000  # one flusher per outbox; a crashed flusher's lock lapses after this
# trim the flushed entries only if they are still at the head (nobody else moved them meanwhile)
_TRIM_IF_HEAD = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def flush_outbox(redis_client: Any, outbox_key: str, chunk_prefix: str, max_rows: int = 100_000,
                 wait_s: float = 0.0) -> int:
    """Move up to max_rows rows from a Redis outbox list into parquet; return how many were moved.

    Outbox entries are JSON `[view_kind, chunk_id, row]` with view_kind "user" or "item" and chunk_id
    unique per entry; the file is named after the first entry's chunk_id, and the entries are removed
    only after the files are in place. One flusher at a time per outbox (a lock in Redis): two that
    overlapped (a processor shutting down and the partition's new owner) would both write the file of
    the same first entry and both trim, and the second trim would drop rows no file holds. A flusher
    that finds the lock taken waits up to `wait_s` for it, then moves nothing and returns 0.
    """
    lock, token = f"{outbox_key}:flushing", os.urandom(8).hex()
    deadline = time.monotonic() + wait_s
    while not redis_client.set(lock, token, nx=True, px=FLUSH_LOCK_MS):
        if time.monotonic() >= deadline:
            return 0
        time.sleep(0.05)
    try:
        raw = redis_client.lrange(outbox_key, 0, max_rows - 1)
        if not raw:
            return 0
        user_view, item_view = stream_feature_views()
        entries = [json.loads(r) for r in raw]
        name = f"{chunk_prefix}-{entries[0][1]}"
        write_chunk(user_view, name, [e[2] for e in entries if e[0] == "user"])
        write_chunk(item_view, name, [e[2] for e in entries if e[0] == "item"])
        if not redis_client.eval(_TRIM_IF_HEAD, 1, outbox_key, raw[0], len(raw)):
            return 0  # another flusher (after this one's lock lapsed) moved them; its file stands
        return len(raw)
    finally:
        redis_client.eval(_RELEASE, 1, lock, token)


def read_log(view: FeatureView) -> pa.Table:
    """Everything logged for a view so far (the empty marker file included), as one table."""
    files = sorted(table_dir(view).glob("*.parquet"))
    schema = log_schema(view)
    return pa.concat_tables([pq.read_table(f, schema=schema) for f in files]) if files else schema.empty_table()
