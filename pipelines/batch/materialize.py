"""tandem's materializer: offline parquet → Feast's Redis online format, whole columns at a time.

What it writes is exactly what `FeatureStore.materialize` writes (same keys, hash fields and
bytes; the layout and value encoding come from pipelines/stream/online_format.py, checked
against Feast's own encoder by the unit tests), but without Feast's per-row Python: per view
it reads only the needed columns with pyarrow, keeps each entity's latest row, encodes each
feature column once, and writes through non-transactional Redis pipelines of `CHUNK` keys.

Semantics kept from Feast 0.67 (feast/infra/offline_stores/contrib/spark_offline_store/spark.py
`pull_latest_from_table_or_query`, feast/infra/online_stores/redis.py `online_write_batch`):

* rows: event_timestamp BETWEEN start AND end (both ends included, as Feast's SQL does);
  per entity the row with the latest event_timestamp, ties broken by the source's created
  timestamp column if it has one (both descending). Rows tied on both are equal to Feast
  (its ROW_NUMBER picks any of them); here the first in read order wins, deterministically.
* newer timestamp wins: a row is not written if the key's stored `_ts:<view>` is the same
  instant or newer. Like Feast, this is an HGET-first pass per chunk (one pipelined round
  trip reads the stored timestamps of the chunk's keys, the second writes the rows that
  are newer), not a Lua script: it matches Feast's check exactly, including its race with
  a concurrent writer between the two round trips.
* key_ttl_seconds of the online store config: each written key gets that EXPIRE.
* afterwards each view's interval is recorded in the registry with
  `registry.apply_materialization` (what `feast materialize` does), so
  `feast materialize-incremental` continues from `end` and serving sees the registry change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from google.protobuf.timestamp_pb2 import Timestamp

from pipelines.stream.online_format import OnlineFormatError, ViewCodec, timestamp_column, view_codec

CHUNK = 2000  # keys per pipelined round trip


@dataclass(frozen=True)
class EncodedView:
    """One view's rows in Feast's Redis layout: key, event time (ns), `_ts` bytes, and each feature's bytes."""

    keys: list[bytes]
    ts_ns: np.ndarray
    ts_bytes: list[bytes]
    columns: list[list[bytes]]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class ViewReport:
    """What materializing one view did."""

    view: str
    rows_read: int  # rows of the offline table in [start, end]
    rows: int  # entities with such a row (what Feast would write)
    written: int
    skipped_not_newer: int  # the stored row was as new or newer
    seconds: float


# ---- pure logic ---------------------------------------------------------------------------------


def latest_per_entity(table: pa.Table, join_key: str, timestamp_field: str,
                      created_timestamp_column: str | None = None) -> pa.Table:
    """Each entity's latest row: max event timestamp, then max created timestamp; first row on a full tie."""
    if table.num_rows == 0:
        return table
    order = [(join_key, "ascending"), (timestamp_field, "descending")]
    if created_timestamp_column:
        order.append((created_timestamp_column, "descending"))
    indices = pc.sort_indices(table, sort_keys=order)  # stable: full ties keep read order
    keys = table.column(join_key).take(indices)
    first = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
    return table.take(indices.filter(pa.array(first)))


def in_interval(table: pa.Table, timestamp_field: str, start: datetime, end: datetime) -> pa.Table:
    """Rows with start <= event timestamp <= end (Feast's BETWEEN)."""
    ts = table.column(timestamp_field)
    lo, hi = pa.scalar(start, type=ts.type), pa.scalar(end, type=ts.type)
    return table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less_equal(ts, hi)))


def encode_view(codec: ViewCodec, table: pa.Table, timestamp_field: str) -> EncodedView:
    """Encode deduplicated rows of one view (one row per entity) into Redis keys and hash values."""
    ts_ns, ts_bytes = timestamp_column(table.column(timestamp_field))
    return EncodedView(keys=codec.redis_keys(table.column(codec.join_key)), ts_ns=ts_ns, ts_bytes=ts_bytes,
                       columns=codec.encode_columns(table))


def stored_ns(stored: bytes | None, cache: dict[bytes, int]) -> int:
    """A stored `_ts:<view>` value as ns since the epoch (0 when absent, as Feast reads it)."""
    if not stored:
        return 0
    ns = cache.get(stored)
    if ns is None:
        ts = Timestamp()
        ts.ParseFromString(stored)
        ns = cache[stored] = ts.seconds * 1_000_000_000 + ts.nanos
    return ns


def is_newer(new_ns: int, old_ns: int) -> bool:
    """Feast's rule: write unless something is stored (non-zero) at the same instant or later."""
    return not (old_ns and new_ns <= old_ns)


# ---- I/O ----------------------------------------------------------------------------------------


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def resp_commands(codec: ViewCodec, rows: EncodedView, lo: int, hi: int) -> tuple[list[bytes], list[bytes]]:
    """Rows lo..hi as Redis protocol: (HGET key `_ts:view` per row, HSET key ts + every feature per row).

    Framing whole columns here is what makes the write fast: redis-py would encode the ~40 arguments of
    every HSET one by one in Python.
    """
    keys = [_bulk(k) for k in rows.keys[lo:hi]]
    ts_field = _bulk(codec.ts_field)
    hget = b"*3\r\n$4\r\nHGET\r\n"
    gets = [b"".join((hget, k, ts_field)) for k in keys]
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 * len(codec.field_keys) + 4)
    stamps = [ts_field + _bulk(t) for t in rows.ts_bytes[lo:hi]]
    columns = [[fk + _bulk(v) for v in col[lo:hi]] for fk, col in
               zip([_bulk(f) for f in codec.field_keys], rows.columns, strict=True)]
    sets = [b"".join((head, *parts)) for parts in zip(keys, stamps, *columns, strict=True)]
    return gets, sets


def _write_resp(client: Any, codec: ViewCodec, rows: EncodedView, chunk: int,
                key_ttl_seconds: int | None) -> tuple[int, int]:
    """write_encoded over one raw connection of a plain redis-py client: pipelined, no transaction."""
    from redis.exceptions import ResponseError

    pool = client.connection_pool
    conn = pool.get_connection()
    ts_cache: dict[bytes, int] = {}
    written = skipped = 0
    try:
        for lo in range(0, len(rows), chunk):
            hi = min(lo + chunk, len(rows))
            gets, sets = resp_commands(codec, rows, lo, hi)
            conn.send_packed_command([b"".join(gets)])
            stored = [conn.read_response() for _ in gets]
            new_ns = rows.ts_ns[lo:hi].tolist()
            out = []
            for i, cmd in enumerate(sets):
                if not is_newer(new_ns[i], stored_ns(stored[i], ts_cache)):
                    skipped += 1
                    continue
                out.append(cmd)
                written += 1
                if key_ttl_seconds:
                    out.append(b"*3\r\n$6\r\nEXPIRE\r\n" + _bulk(rows.keys[lo + i]) + _bulk(b"%d" % key_ttl_seconds))
            if out:
                conn.send_packed_command([b"".join(out)])
                for _ in out:
                    reply = conn.read_response()
                    if isinstance(reply, ResponseError):
                        raise reply
    except BaseException:
        conn.disconnect()  # replies may be left unread: never hand this connection back half-read
        raise
    finally:
        pool.release(conn)
    return written, skipped


def write_encoded(client: Any, codec: ViewCodec, rows: EncodedView, chunk: int = CHUNK,
                  key_ttl_seconds: int | None = None) -> tuple[int, int]:
    """Write encoded rows whose stored timestamp is older (or absent); return (written, skipped).

    A plain redis.Redis client is written through raw protocol frames (`resp_commands`); any other
    client (a cluster, a test double) through its non-transactional pipeline.
    """
    import redis

    if type(client) is redis.Redis:
        return _write_resp(client, codec, rows, chunk, key_ttl_seconds)
    n_fields = len(codec.field_keys)
    args = [b""] * (2 * n_fields + 2)
    args[2::2] = codec.field_keys
    args[0] = codec.ts_field
    ts_cache: dict[bytes, int] = {}
    written = skipped = 0
    for lo in range(0, len(rows), chunk):
        keys = rows.keys[lo:lo + chunk]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, codec.ts_field)
            stored = pipe.execute()
        values = list(zip(*(col[lo:lo + chunk] for col in rows.columns), strict=True)) if n_fields else []
        new_ns = rows.ts_ns[lo:lo + chunk].tolist()
        with client.pipeline(transaction=False) as pipe:
            for i, key in enumerate(keys):
                if not is_newer(new_ns[i], stored_ns(stored[i], ts_cache)):
                    skipped += 1
                    continue
                args[1] = rows.ts_bytes[lo + i]
                if n_fields:
                    args[3::2] = values[i]
                pipe.execute_command("HSET", key, *args)
                if key_ttl_seconds:
                    pipe.expire(key, key_ttl_seconds)
                written += 1
            pipe.execute()
    return written, skipped


def read_offline(path: str, columns: Sequence[str], timestamp_field: str, start: datetime,
                 end: datetime) -> pa.Table:
    """The needed columns of a parquet offline table (file or hive-partitioned directory) in [start, end]."""
    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    missing = [c for c in columns if c not in dataset.schema.names]
    if missing:
        raise OnlineFormatError(f"offline table {path} lacks column(s) {', '.join(missing)}")
    ts_type = dataset.schema.field(timestamp_field).type
    field = ds.field(timestamp_field)
    where = (field >= pa.scalar(start, type=ts_type)) & (field <= pa.scalar(end, type=ts_type))
    return dataset.to_table(columns=list(columns), filter=where)


def _source_path(view: Any) -> str:
    source = view.batch_source
    path = getattr(source, "path", None)
    fmt = getattr(source, "file_format", None)
    fmt_name = fmt if isinstance(fmt, str) or fmt is None else type(fmt).__name__.lower()
    if not path or (fmt_name and "parquet" not in str(fmt_name).lower()):
        raise OnlineFormatError(f"feature view {view.name}: its batch source is not a parquet path; "
                                "use TANDEM_MATERIALIZER=feast")
    if getattr(source, "field_mapping", None):
        raise OnlineFormatError(f"feature view {view.name}: field_mapping is not supported; "
                                "use TANDEM_MATERIALIZER=feast")
    return str(path)


def latest_offline_rows(view: Any, join_key: str, feature_names: Sequence[str], start: datetime,
                        end: datetime) -> tuple[pa.Table, int]:
    """What materializing `view` over [start, end] publishes: each entity's latest row of its offline table
    (join key, event timestamp, created timestamp if any, the features), and the number of rows read."""
    source = view.batch_source
    ts_field, created = source.timestamp_field, source.created_timestamp_column or None
    columns = [join_key, ts_field, *([created] if created else []), *feature_names]
    table = read_offline(_source_path(view), columns, ts_field, start, end)
    table = in_interval(table, ts_field, start, end)  # the scan filter may keep whole row groups
    return latest_per_entity(table, join_key, ts_field, created), table.num_rows


def materialize_view(store: Any, client: Any, view: Any, start: datetime, end: datetime,
                     chunk: int = CHUNK) -> ViewReport:
    """Materialize one registered feature view of `store` into its Redis online store."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    t0 = time.perf_counter()
    config = store.config
    join_keys = [store.get_entity(name).join_key for name in view.entities]
    online_name = compute_versioned_name(view, getattr(config.registry, "enable_online_feature_view_versioning",
                                                       False))
    codec = view_codec(view, join_keys, config.project, config.entity_key_serialization_version, online_name)
    latest, rows_read = latest_offline_rows(view, codec.join_key, codec.feature_names, start, end)
    written, skipped = write_encoded(client, codec, encode_view(codec, latest, view.batch_source.timestamp_field),
                                     chunk, getattr(config.online_store, "key_ttl_seconds", None))
    return ViewReport(view=view.name, rows_read=rows_read, rows=latest.num_rows, written=written,
                      skipped_not_newer=skipped, seconds=time.perf_counter() - t0)


def redis_client(store: Any) -> Any:
    """The Redis client Feast's own online store would use for this store's config."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    if store.config.online_store.type != "redis":
        raise OnlineFormatError(f"online store {store.config.online_store.type!r}: tandem's materializer writes "
                                "Redis only; use TANDEM_MATERIALIZER=feast")
    return RedisOnlineStore()._get_client(store.config.online_store)


def materialize(store: Any, start: datetime, end: datetime, views: Iterable[str] | None = None,
                chunk: int = CHUNK) -> list[ViewReport]:
    """`FeatureStore.materialize(start, end, views)` with tandem's writer; record each interval in the registry.

    `views` defaults to every online feature view in the registry, as Feast's does.
    """
    from feast import utils

    start, end = utils.make_tzaware(start), utils.make_tzaware(end)
    if start > end:
        raise ValueError(f"the given start_date {start} is greater than the given end_date {end}")
    registered = {fv.name: fv for fv in store.list_feature_views()}
    names = list(views) if views is not None else [n for n, fv in registered.items() if fv.online]
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise KeyError(f"feature view(s) {', '.join(unknown)} are not in the registry of project "
                       f"{store.project!r}; registered: {', '.join(sorted(registered))}")
    client = redis_client(store)
    reports = []
    for name in names:
        view = registered[name]
        reports.append(materialize_view(store, client, view, start, end, chunk))
        store.registry.apply_materialization(view, store.project, start, end)
    store._precompute_affected_services(names)  # what Feast's materialize does last (services that precompute)
    return reports
