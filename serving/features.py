"""Online features for serving, read straight from Feast's Redis layout.

* User features (every user-keyed feature view: batch profile, stream session, precomputed
  candidates) are read fresh on every request: one HMGET on the user's Feast hash.
* Item features change only when the batch path materializes, so the whole catalog is cached
  in-process and reloaded when materialization happens: the Feast registry file changes (Feast
  records each materialization there), or the marker key `MATERIALIZATION_KEY` changes (for
  registries that are not local files), or every TANDEM_SERVE_ITEM_CACHE_TTL_S (600 s) as a backstop
  (a reload also takes in items only the stream has written rows for). Trending
  scores (written by the stream) are re-read in the background every TANDEM_SERVE_TRENDING_REFRESH_S
  (2 s); at 0 each request reads them itself instead, so an answer reflects every event applied before it.
* Redis unreachable: requests answer from the last item snapshot (also kept on disk, so a
  restart during an outage still serves) and a bounded cache of recently served users; a
  short circuit breaker keeps the outage from adding a timeout to every request.

Which views exist comes from the Feast registry; only the fields serving must interpret are
named (models/ranking.py `CONTRACT`), in one place, shared with the ranking.
"""

from __future__ import annotations

import logging
import pickle
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key_prefix
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from models.ranking import CONTRACT, Contract, catalogue_columns, trending_top
from models.rows import service_columns
from tandem.settings import Settings, export_feast_environment

log = logging.getLogger("tandem.serving.features")

# set by the batch path after `feast materialize` (any new value): serving reloads its item cache then
MATERIALIZATION_KEY = b"tandem:online:materialized_at"
REFRESH_TICK_S = 1.0
REDIS_RETRY_AFTER_S = 0.5
USER_CACHE_SIZE = 50_000
SCAN_CHUNK = 500


class OnlineStoreUnavailable(RuntimeError):
    """Redis could not be reached; the caller falls back to the local cache."""


@dataclass(frozen=True)
class ViewSchema:
    name: str
    join_key: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class UserRecord:
    """One user's row across all user-keyed views, decoded."""

    values: dict[str, Any]  # full name view__field → python value
    updated_epoch: float | None
    found: bool


@dataclass
class ItemSnapshot:
    """The item catalog with its batch features, as of one materialization."""

    version: str
    item_ids: list[str]
    index: dict[str, int]
    columns: dict[str, np.ndarray]  # numeric item features by full name, aligned with item_ids
    categories: list[str | None]
    neighbours: dict[str, tuple[str, ...]]  # item → its EASE neighbours, strongest first
    updated_epoch: float | None  # event time of the newest item row
    source: str = "redis"  # or "disk" when loaded from the local cache during an outage
    neighbour_scores: dict[str, tuple[float, ...]] = field(default_factory=dict)  # aligned with `neighbours`
    sequence: dict[str, tuple[str, ...]] = field(default_factory=dict)  # item → its sequence neighbours
    sequence_scores: dict[str, tuple[float, ...]] = field(default_factory=dict)  # aligned with `sequence`

    @classmethod
    def empty(cls) -> ItemSnapshot:
        return cls("empty", [], {}, {}, [], {}, None, "empty")


@dataclass
class TrendingSnapshot:
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # aligned with the item snapshot it was read for
    top: list[str] = field(default_factory=list)
    for_version: str = ""


def decode_value(raw: bytes | None) -> Any:
    """A Feast ValueProto as a python value (None when absent, null or not a ValueProto)."""
    if raw is None:
        return None
    v = Value()
    try:
        v.ParseFromString(raw)
    except DecodeError:
        return None
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    value = getattr(v, kind)
    if kind.endswith("_list_val"):
        return list(value.val)
    if kind == "bytes_val":
        return None
    return value


def decode_ts(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    ts = Timestamp()
    try:
        ts.ParseFromString(raw)
    except DecodeError:
        return None
    return ts.seconds + ts.nanos / 1e9


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for b in raw:
        if bytes([b]) in (b"*", b"?", b"[", b"]", b"\\"):
            out += b"\\"
        out.append(b)
    return bytes(out)


class OnlineFeatures:
    """Reads users fresh, items from an in-process snapshot; falls back to local caches when Redis is down."""

    def __init__(self, settings: Settings, contract: Contract = CONTRACT):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.settings = settings
        self.contract = contract
        host, port = settings.redis_host_port
        db = int(urlparse(settings.redis_url).path.strip("/") or 0)
        # fail fast (no retries, short timeouts): the fallback answers instead of the client waiting
        self.redis = redis.Redis(host=host, port=port, db=db, socket_timeout=0.25, socket_connect_timeout=0.1,
                                 retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.cache_file = settings.serving_cache_dir / "items.pickle"
        self.project = self._project()
        self.user_views: list[ViewSchema] = []
        self.item_views: list[ViewSchema] = []
        self.trending_fields: tuple[str, ...] = ()
        self.services: dict[str, tuple[str, ...]] = {}  # feature service → its <view>__<feature> columns
        self._user_layout: tuple[list[bytes], list[str]] = ([], [])  # swapped as one, never edited in place
        self.items = ItemSnapshot.empty()
        self.trending = TrendingSnapshot()
        self._users: OrderedDict[str, UserRecord] = OrderedDict()
        self._users_lock = threading.Lock()
        self._down_until = 0.0
        self._marker: bytes | None = None
        self._registry_path: Path | None = None
        self._registry_mtime: float | None = None
        self._items_loaded_at = 0.0
        self._trending_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_items_changed: list[Callable[[ItemSnapshot], None]] = []

    # ---- setup -------------------------------------------------------------------------------

    def _project(self) -> str:
        import yaml

        config = yaml.safe_load((self.settings.feature_repo / "feature_store.yaml").read_text())
        return str(config["project"])

    def load_schema(self) -> None:
        """Which feature views exist, from the Feast registry, split into user- and item-keyed."""
        from feast import FeatureStore

        export_feast_environment(self.settings)
        store = FeatureStore(repo_path=str(self.settings.feature_repo))
        registry = Path(str(store.config.registry.path))
        self._registry_path = registry if registry.is_absolute() else self.settings.feature_repo / registry
        self._registry_mtime = self._registry_stamp()
        views = [ViewSchema(fv.name, fv.entity_columns[0].name if fv.entity_columns else "",
                            tuple(f.name for f in fv.features)) for fv in store.list_feature_views()]
        c = self.contract
        self.user_views = [v for v in views if v.join_key == c.user_key]
        self.item_views = [v for v in views if v.join_key == c.item_key and v.name != c.trending_view]
        trending = [v for v in views if v.name == c.trending_view]
        self.trending_fields = trending[0].fields if trending else ()
        self._user_layout = self._hash_fields(self.user_views)
        self.services = {fs.name: tuple(service_columns(fs)) for fs in store.list_feature_services()}
        log.info("online schema: user views %s, item views %s", [v.name for v in self.user_views],
                 [v.name for v in self.item_views])

    def _registry_stamp(self) -> float | None:
        try:
            return self._registry_path.stat().st_mtime if self._registry_path else None
        except OSError:
            return None

    @staticmethod
    def _hash_fields(views: list[ViewSchema]) -> tuple[list[bytes], list[str]]:
        fields: list[bytes] = []
        names: list[str] = []
        for v in views:
            for f in v.fields:
                fields.append(_mmh3(f"{v.name}:{f}"))
                names.append(f"{v.name}__{f}")
            fields.append(f"_ts:{v.name}".encode())
            names.append(f"_ts:{v.name}")
        return fields, names

    def _key(self, join_key: str, entity_id: str) -> bytes:
        return _redis_key(self.project, EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity_id)]))

    def start(self) -> OnlineFeatures:
        """Load the schema and the item snapshot (from Redis, else the disk cache) and start refreshing."""
        try:
            self.load_schema()
        except Exception as exc:  # a missing/unreadable registry must not stop serving popular items
            log.warning("could not read the Feast registry (%s); serving from the local cache only", exc)
        try:
            self.reload_items()
        except OnlineStoreUnavailable:
            self._load_disk_cache()
        self._thread = threading.Thread(target=self._refresh_loop, name="online-features-refresh", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    # ---- Redis access with a circuit breaker -------------------------------------------------

    @property
    def reachable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _call(self, fn: Callable[[], Any]) -> Any:
        import redis

        if not self.reachable:
            raise OnlineStoreUnavailable("Redis marked down, retrying shortly")
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._down_until = time.monotonic() + REDIS_RETRY_AFTER_S
            raise OnlineStoreUnavailable(str(exc)) from exc

    # ---- users: fresh per request ------------------------------------------------------------

    def read_user(self, user_id: str) -> UserRecord:
        """All user-keyed features of one user in one round trip; raises OnlineStoreUnavailable."""
        fields, names = self._user_layout
        if not fields:
            return UserRecord({}, None, False)
        key = self._key(self.contract.user_key, user_id)
        raw = self._call(lambda: self.redis.hmget(key, fields))
        values: dict[str, Any] = {}
        updated: float | None = None
        found = False
        for name, blob in zip(names, raw, strict=True):
            if blob is None:
                continue
            found = True
            if name.startswith("_ts:"):
                ts = decode_ts(blob)
                if ts is not None and (updated is None or ts > updated):
                    updated = ts
            else:
                values[name] = decode_value(blob)
        record = UserRecord(values, updated, found)
        if found:
            with self._users_lock:
                self._users[user_id] = record
                self._users.move_to_end(user_id)
                if len(self._users) > USER_CACHE_SIZE:
                    self._users.popitem(last=False)
        return record

    def cached_user(self, user_id: str) -> UserRecord | None:
        """The last record read for this user (used while Redis is unreachable)."""
        with self._users_lock:
            return self._users.get(user_id)

    # ---- items: snapshot per materialization -------------------------------------------------

    def _scan_item_keys(self) -> list[tuple[bytes, str]]:
        prefix = serialize_entity_key_prefix([self.contract.item_key])
        pattern = _glob_escape(prefix) + b"*" + _glob_escape(self.project.encode())
        suffix = len(self.project.encode())
        out = []
        for key in self._call(lambda: list(self.redis.scan_iter(match=pattern, count=2000))):
            try:
                ek = deserialize_entity_key(key[:-suffix])
            except (struct.error, ValueError, IndexError):
                continue
            if list(ek.join_keys) == [self.contract.item_key]:
                out.append((key, ek.entity_values[0].string_val))
        out.sort(key=lambda kv: kv[1])
        return out

    def _hmget_many(self, keys: list[bytes], fields: list[bytes]) -> list[list[bytes | None]]:
        rows: list[list[bytes | None]] = []
        for i in range(0, len(keys), SCAN_CHUNK):
            chunk = keys[i:i + SCAN_CHUNK]

            def run(chunk: list[bytes] = chunk) -> list:
                pipe = self.redis.pipeline(transaction=False)
                for k in chunk:
                    pipe.hmget(k, fields)
                return pipe.execute()

            rows.extend(self._call(run))
        return rows

    def reload_items(self) -> ItemSnapshot:
        """Read the whole item catalog with its batch features; raises OnlineStoreUnavailable."""
        marker = self._call(lambda: self.redis.get(MATERIALIZATION_KEY))
        keyed = self._scan_item_keys()
        fields, names = self._hash_fields(self.item_views)
        rows = self._hmget_many([k for k, _ in keyed], fields) if fields else [[] for _ in keyed]
        item_ids = [item for _, item in keyed]
        decoded: list[dict[str, Any]] = []
        updated: float | None = None
        for row in rows:
            values: dict[str, Any] = {}
            for name, blob in zip(names, row, strict=True):
                if blob is None:
                    continue
                if name.startswith("_ts:"):
                    ts = decode_ts(blob)
                    updated = ts if updated is None or (ts is not None and ts > updated) else updated
                else:
                    values[name] = decode_value(blob)
            decoded.append(values)
        cols = catalogue_columns(item_ids, decoded, self.contract)
        snapshot = ItemSnapshot(
            version=f"{(marker or b'-').decode(errors='replace')}/{time.time():.3f}",
            item_ids=item_ids, index={item: i for i, item in enumerate(item_ids)},
            columns=cols.columns, categories=cols.categories, neighbours=cols.neighbours, updated_epoch=updated,
            neighbour_scores=cols.neighbour_scores, sequence=cols.sequence, sequence_scores=cols.sequence_scores)
        self.items = snapshot
        self._marker = marker
        self._items_loaded_at = time.monotonic()
        self.refresh_trending()
        self._save_disk_cache(snapshot)
        for callback in self.on_items_changed:
            callback(snapshot)
        log.info("item snapshot %s: %d items, %d numeric features", snapshot.version, len(item_ids), len(cols.columns))
        return snapshot

    def refresh_trending(self) -> TrendingSnapshot:
        """Re-read the stream's trending features for the catalog, keep the top items; return what was read."""
        snapshot = self.items
        self._trending_at = time.monotonic()
        if not self.trending_fields or not snapshot.item_ids:
            self.trending = TrendingSnapshot(for_version=snapshot.version)
            return self.trending
        view = ViewSchema(self.contract.trending_view, self.contract.item_key, self.trending_fields)
        fields, names = self._hash_fields([view])
        keys = [self._key(self.contract.item_key, item) for item in snapshot.item_ids]
        rows = self._hmget_many(keys, fields)
        columns = {name: np.full(len(keys), np.nan) for name in names if not name.startswith("_ts:")}
        for i, row in enumerate(rows):
            for name, blob in zip(names, row, strict=True):
                if blob is not None and name in columns and (x := _as_float(decode_value(blob))) is not None:
                    columns[name][i] = x
        score = columns.get(f"{self.contract.trending_view}__{self.contract.trend_score}")
        top = trending_top(snapshot.item_ids, score)
        self.trending = TrendingSnapshot(columns=columns, top=top, for_version=snapshot.version)
        return self.trending

    def item_columns(self, fresh_trending: bool = False) -> tuple[ItemSnapshot, dict[str, np.ndarray], list[str]]:
        """The current item snapshot, its numeric columns (batch + trending) and the trending top list.

        `fresh_trending`: read trending from Redis now (what this call returns, whatever the refresher does
        meanwhile); if Redis does not answer, the last values read."""
        snapshot, trending = self.items, self.trending
        if fresh_trending:
            try:
                trending = self.refresh_trending()
            except OnlineStoreUnavailable:
                pass
        if trending.for_version != snapshot.version:
            return snapshot, snapshot.columns, []
        return snapshot, {**snapshot.columns, **trending.columns}, trending.top

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_TICK_S):
            try:
                marker = self._call(lambda: self.redis.get(MATERIALIZATION_KEY))
                stale = time.monotonic() - self._items_loaded_at > self.settings.item_cache_ttl_s
                # `feast materialize` and `feast apply` rewrite the registry: a file registry's mtime says so
                registry_moved = self._registry_stamp() != self._registry_mtime
                if marker != self._marker or registry_moved or stale or self.items.source != "redis":
                    self.load_schema()  # a materialization may come with newly applied views
                    self.reload_items()
                elif 0 < self.settings.trending_refresh_s <= time.monotonic() - self._trending_at:
                    self.refresh_trending()  # at 0 every request reads trending itself
            except OnlineStoreUnavailable:
                pass
            except Exception:  # the refresher must outlive any one bad read
                log.exception("refreshing online features failed")

    # ---- local cache on disk for outages -----------------------------------------------------

    def _save_disk_cache(self, snapshot: ItemSnapshot) -> None:
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps((snapshot, self.trending.top), protocol=pickle.HIGHEST_PROTOCOL))
            tmp.replace(self.cache_file)
        except OSError as exc:
            log.warning("could not write the serving cache %s: %s", self.cache_file, exc)

    def _load_disk_cache(self) -> None:
        path: Path = self.cache_file
        if not path.exists():
            log.warning("Redis unreachable and no local cache at %s: serving empty lists until it returns", path)
            return
        snapshot, top = pickle.loads(path.read_bytes())  # written by this service only, under TANDEM_HOME
        # a cache written before a field was added lacks it: rebuild through the constructor (defaults fill in)
        known = {f.name for f in fields(ItemSnapshot)}
        snapshot = ItemSnapshot(**{k: v for k, v in vars(snapshot).items() if k in known})
        snapshot.source = "disk"
        self.items = snapshot
        self.trending = TrendingSnapshot(top=list(top), for_version=snapshot.version)
        for callback in self.on_items_changed:
            callback(snapshot)
        log.warning("Redis unreachable: serving item snapshot %s from %s", snapshot.version, path)
