"""The stream processor behind `tandem stream run`: Kafka consumer group → session/trending features → Redis.

Each poll of the consumer is one micro-batch (bounded by `max_batch` records and by
`max_wait_ms` of broker-side waiting). For a micro-batch the processor

1. drops records at or below the partition's *applied offset* (kept in Redis, see below)
   — they were applied before a crash or by a previous owner of the partition;
2. decodes every record with tandem.schema.decode_event; a bad one goes to the DLQ
   topic with its reason and kind (and never stops the processor). A valid event in a
   partition other than its user's (a producer that did not key by user_id) is re-keyed:
   produced again to its user's partition, where it is applied, so one instance stays the
   only writer of each user's state;
3. folds the valid events into per-user and per-item state with the pure functions of
   session_features.py (event-time semantics, so late and out-of-order events land
   where they belong);
4. writes, in ONE Redis MULTI/EXEC transaction: the new user and item state, the
   features in Feast's online format, the offline-log rows into a per-partition
   outbox, and the partition's new applied offset. The transaction WATCHes the
   applied-offset hash and the item state it read, so a concurrent writer (another
   instance sharing hot items, or a zombie owner of a partition after a rebalance)
   makes it retry or, for a partition applied further by someone else, refuse the
   batch and resume from the stored offset (a fence);
5. commits the Kafka offsets — only after the writes they cover.

Whatever else one record makes a step raise is that record's problem, not the batch's: when a
micro-batch cannot be written for a reason other than an outage, its records are applied one at a
time and the one that fails (while a write without it succeeds) goes to the DLQ as `unapplicable`.

A kill -9 anywhere in this sequence is safe: before EXEC nothing happened; after EXEC
the applied offset says so and the re-delivered records are skipped, so a restart
gives the same features as one clean pass. If Redis is unreachable the processor
stops consuming and retries the same batch with exponential backoff (the consumer
stays in its group; nothing is dropped) until Redis answers again.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from pipelines.stream.examples import ExampleSink, LabelledExample, NullExampleSink
from pipelines.stream.metrics import StreamMetrics
from pipelines.stream.offline_log import flush_outbox, outbox_row
from pipelines.stream.online_format import StreamCodecs, stream_codecs
from pipelines.stream.session_features import (
    ItemState,
    UserState,
    entry_interaction,
    fold_item,
    fold_user,
    fresh_entries,
    item_features,
    user_entry,
    user_features,
)
from tandem.schema import Event, EventError, decode_event
from tandem.settings import Settings

log = logging.getLogger("tandem.stream")

STATE_TTL_S = 7 * 86_400
DLQ_PAYLOAD_LIMIT = 4096
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
# Redis answers these when it cannot take writes for a while (not because of what was written)
_REDIS_BUSY_PREFIXES = ("OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "MISCONF", "NOREPLICAS", "TRYAGAIN",
                        "CLUSTERDOWN")
USER_PARTITION_CACHE = 200_000


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java and kafka-python clients) gives a key."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def redis_busy(exc: BaseException) -> bool:
    """A Redis error that says the server cannot write now (out of memory, read-only, loading, ...)."""
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(_REDIS_BUSY_PREFIXES)


@dataclass(frozen=True)
class Rejected:
    """A record set aside: to the DLQ with its reason and kind."""

    record: Any
    reason: str
    kind: str


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("tandem")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def load_catalog(dataset_dir: Path | None) -> dict[str, str]:
    """item_id → category from a dataset's items.parquet ({} when there is none: categories become 'unknown')."""
    if dataset_dir is None:
        return {}
    path = Path(dataset_dir) / "items.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no item catalogue (expected the dataset layout of pipelines/dataset.py)")
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["item_id", "category"])
    return dict(zip(table.column("item_id").to_pylist(), table.column("category").to_pylist(), strict=True))


@dataclass
class ProcessorConfig:
    group_id: str = "tandem-stream"
    max_batch: int = 5000  # records per micro-batch, at most
    linger_ms: int = 25  # after the first record, keep collecting this long (or until max_batch): a micro-batch
    # the broker answers a fetch as soon as any record is there; this bounds the wait when there is none (idle cost)
    max_wait_ms: int = 100
    session_timeout_ms: int = 10_000  # how soon the group notices a dead instance
    # a rebalance that revoked our partitions and assigned nothing (not even an empty set) for this long is stuck:
    # the consumer is replaced and joins again (seen with kafka-python 3.0 when a join outlives a short poll)
    rebalance_stall_s: float = 30.0
    metrics_port: int | None = None
    commit_interval_s: float = 1.0  # Kafka commits are a convenience (Redis holds the applied offsets): batch them
    offline_flush_s: float = 10.0
    offline_flush_rows: int = 50_000
    redis_backoff_max_s: float = 5.0
    log_every_s: float = 5.0
    cached_users_per_partition: int = 50_000  # user state kept in memory; evicted state is re-read from Redis
    stop_after_idle_s: float | None = None  # for tests and `--until-idle`: stop after this long with no records
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


class FenceConflict(Exception):
    def __init__(self, partitions: dict[int, int]):
        super().__init__(f"partitions applied further by another instance: {partitions}")
        self.partitions = partitions


class RedisKeys:
    """Where the processor's own state lives in Redis (Feast's rows live under Feast's keys)."""

    def __init__(self, topic: str):
        self.base = f"tandem:stream:{topic}"

    def applied(self, partition: int) -> str:
        """The last offset of the partition whose effects are in Redis (one key per partition: WATCHed alone)."""
        return f"{self.base}:applied:{partition}"

    def user(self, user_id: str) -> str:
        return f"{self.base}:user:{user_id}"

    def item(self, item_id: str) -> str:
        return f"{self.base}:item:{item_id}"

    def outbox(self, partition: int) -> str:
        return f"{self.base}:outbox:{partition}"


def applied_total(client: redis.Redis, topic: str, partitions: int) -> int:
    """Records of a topic whose effects are in Redis, summed over its partitions (progress, as tests and
    benchmarks watch it)."""
    keys = RedisKeys(topic)
    return sum(int(v) + 1 for v in client.mget([keys.applied(p) for p in range(partitions)]) if v is not None)


@dataclass
class _Partition:
    applied: int | None = None  # None: not loaded from Redis yet
    users: dict[str, UserState] = field(default_factory=dict)  # cache; this instance is the only writer
    last_flush: float = field(default_factory=time.monotonic)
    outbox_rows: int = 0  # rows this instance added to the partition's outbox since its last flush


class StreamProcessor:
    """One member of the consumer group; run() until stop() or a signal."""

    def __init__(self, settings: Settings, config: ProcessorConfig | None = None,
                 catalog: Mapping[str, str] | None = None, sink: ExampleSink | None = None,
                 codecs: StreamCodecs | None = None) -> None:
        self.settings = settings
        self.config = config or ProcessorConfig()
        self.catalog = catalog or {}
        self.sink = sink or NullExampleSink()
        self.codecs = codecs or stream_codecs()
        self.keys = RedisKeys(settings.topic)
        self.metrics = StreamMetrics()
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.partitions: dict[int, _Partition] = {}
        self._stop = threading.Event()
        self._consumer: Any = None
        self._dlq: Any = None
        self._handled = 0
        self._last_log = time.monotonic()
        self._last_record = time.monotonic()
        self._to_commit: dict[Any, int] = {}
        self._rebalances: queue.SimpleQueue[tuple[str, list[Any]]] = queue.SimpleQueue()
        self._last_commit = time.monotonic()
        self._revoked_at: float | None = None  # when partitions were revoked with no assignment since
        self._user_partition: dict[str, int] = {}
        self._partition_count = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def _connect(self) -> None:
        from kafka import KafkaProducer

        self._consumer = self._new_consumer()
        self._dlq = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=5)

    def _new_consumer(self) -> Any:
        """A consumer subscribed to the topic with our rebalance listener (the topic's partitions known first)."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, group_id=self.config.group_id,
            client_id=self.config.instance, enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.config.max_batch, fetch_max_wait_ms=self.config.max_wait_ms,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=max(500, self.config.session_timeout_ms // 5),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            check_crcs=False,  # kafka-python's CRC32C is pure Python (~60 µs a record); TCP already checksums
        )
        # know the topic's partitions before joining, so the first assignment is not an empty one
        deadline = time.monotonic() + 60
        while not consumer.partitions_for_topic(self.settings.topic):
            if time.monotonic() > deadline:
                consumer.close(autocommit=False)
                raise RuntimeError(f"topic {self.settings.topic!r} has no partitions on "
                                   f"{self.settings.kafka_bootstrap} "
                                   "(create it with `tandem services up` or tandem.topics.ensure_topics)")
            time.sleep(0.2)
        consumer.subscribe([self.settings.topic], listener=_rebalance_listener(self))
        return consumer

    def _check_rebalance_stall(self) -> None:
        """Replace the consumer if a rebalance revoked our partitions and never completed (see rebalance_stall_s).

        Safe at any point: the applied offsets in Redis say where each partition resumes, whoever gets it.
        """
        if self._revoked_at is None or time.monotonic() - self._revoked_at < self.config.rebalance_stall_s:
            return
        log.warning("rebalance did not complete; joining the group again with a new consumer",
                    extra={"fields": {"waited_s": round(time.monotonic() - self._revoked_at, 1)}})
        self.metrics.rebalance_stalls.inc()
        old, self._consumer = self._consumer, None
        try:
            old.close(autocommit=False, timeout_ms=5000)
        except Exception as exc:  # noqa: BLE001 - the old consumer is abandoned either way
            log.warning("closing the stalled consumer failed", extra={"fields": {"error": str(exc)}})
        self.partitions.clear()
        self._to_commit.clear()
        while not self._rebalances.empty():  # callbacks of the abandoned consumer
            self._rebalances.get()
        self._revoked_at = time.monotonic()  # counts again until the new consumer's first assignment
        self._consumer = self._new_consumer()

    def run(self) -> None:
        """Consume until stop(); SIGTERM/SIGINT stop cleanly after the current micro-batch."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port)
        self._connect()
        log.info("stream processor started", extra={"fields": {
            "instance": self.config.instance, "group": self.config.group_id, "topic": self.settings.topic,
            "redis": self.settings.redis_url, "kafka": self.settings.kafka_bootstrap,
            "metrics_port": self.config.metrics_port, "max_batch": self.config.max_batch}})
        try:
            while not self._stop.is_set():
                self._apply_rebalance()
                self._check_rebalance_stall()
                records = self._poll_batch()
                self._apply_rebalance()
                if records:
                    self._last_record = time.monotonic()
                    self.process(records)
                elif (self.config.stop_after_idle_s is not None
                      and time.monotonic() - self._last_record > self.config.stop_after_idle_s):
                    log.info("idle, stopping", extra={"fields": {"idle_s": self.config.stop_after_idle_s}})
                    break
                self._commit()
                self._housekeeping()
        finally:
            self._shutdown()

    def _poll_batch(self) -> dict[Any, list[Any]]:
        """One micro-batch: the records of polls from the first record on, for linger_ms or up to max_batch."""
        batch: dict[Any, list[Any]] = {}
        count = 0
        first = self._consumer.poll(timeout_ms=100, max_records=self.config.max_batch)
        deadline = time.monotonic() + self.config.linger_ms / 1000
        while first:
            for tp, recs in first.items():
                batch.setdefault(tp, []).extend(recs)
                count += len(recs)
            left = deadline - time.monotonic()
            # a rebalance during the poll resets positions to the committed offsets: records fetched after it
            # may repeat ones already in the batch, so the batch ends at the rebalance
            if count >= self.config.max_batch or left <= 0 or not self._rebalances.empty():
                break
            first = self._consumer.poll(timeout_ms=max(1, int(left * 1000)), max_records=self.config.max_batch - count)
        return batch

    def _shutdown(self) -> None:
        try:
            for p in list(self.partitions):
                self._flush_offline(p, force=True)
        except _REDIS_DOWN:
            log.warning("could not flush the offline outbox at shutdown (Redis unreachable); it stays in Redis")
        self.sink.flush()
        if self._consumer is not None:
            self._commit(force=True)
        if self._dlq is not None:
            self._dlq.flush()
            self._dlq.close(timeout=10)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        log.info("stream processor stopped", extra={"fields": {"handled": self._handled}})

    # -- rebalance ---------------------------------------------------------------------------------------------

    # kafka-python calls the rebalance listener on its IO thread: the listener only queues the change and the
    # main loop applies it between micro-batches. A batch of a partition revoked meanwhile is still safe to
    # write: the applied-offset fence refuses it if the new owner got there first.

    def _apply_rebalance(self) -> None:
        while not self._rebalances.empty():
            kind, tps = self._rebalances.get()
            if kind == "assigned":
                self._revoked_at = None
                for tp in tps:
                    self.partitions[tp.partition] = _Partition()  # applied offset and state are read afresh
            else:
                self._revoked_at = self._revoked_at or time.monotonic()
                for tp in tps:
                    self.partitions.pop(tp.partition, None)  # drop cached state: another instance may write it next
                    self._to_commit.pop(tp, None)
            log.info(f"partitions {kind}", extra={"fields": {"partitions": sorted(tp.partition for tp in tps)}})

    # -- one micro-batch ---------------------------------------------------------------------------------------

    def process(self, records: Mapping[Any, Sequence[Any]]) -> None:
        """Apply one poll's records (TopicPartition → ConsumerRecords) exactly once in effect."""
        started = time.monotonic()
        batch: dict[Any, list[Any]] = {}
        replayed = 0
        for tp, recs in records.items():
            part = self.partitions.get(tp.partition)
            if part is None:
                continue  # revoked since the fetch
            if part.applied is None:
                part.applied = self._with_redis(lambda p=tp.partition: self._load_applied(p))
            fresh = in_offset_order([r for r in recs if r.offset > part.applied])
            replayed += len(recs) - len(fresh)
            if fresh:
                batch[tp] = fresh
        if replayed:
            self.metrics.events.labels("replayed").inc(replayed)
        if not batch:
            return
        valid: dict[int, list[tuple[Any, Event]]] = {}
        bad: list[Rejected] = []
        rekeyed: list[tuple[Any, Event, int]] = []
        partitions = self._topic_partitions()
        for tp, recs in batch.items():
            good = valid.setdefault(tp.partition, [])
            for r in recs:
                try:
                    event = decode_event(r.value or b"")
                except EventError as exc:
                    bad.append(Rejected(r, str(exc), exc.kind))
                    continue
                except Exception as exc:  # noqa: BLE001 - whatever a record makes decoding raise is its own problem
                    bad.append(Rejected(r, f"could not be decoded: {type(exc).__name__}: {exc}", "undecodable"))
                    continue
                home = self._home_partition(event.user_id, partitions)
                if home == tp.partition:
                    good.append((r, event))
                else:
                    rekeyed.append((r, event, home))
        if bad or rekeyed:
            self._deliver([self._dlq_message(x) for x in bad] + [self._rekey_message(r, e, home)
                                                                  for r, e, home in rekeyed])
            self._count_rejected(bad)
            if rekeyed:
                self.metrics.events.labels("rekeyed").inc(len(rekeyed))
                log.warning("events not keyed by user re-keyed to their user's partition",
                            extra={"fields": {"count": len(rekeyed), "example_partition": rekeyed[0][0].partition,
                                              "example_offset": rekeyed[0][0].offset}})
        last = {tp.partition: recs[-1].offset for tp, recs in batch.items()}
        applied = self._apply(valid, last)
        done = time.time()
        n_valid = 0
        for p in applied:
            for r, _ in valid[p]:
                self.metrics.freshness.observe(max(0.0, done - r.timestamp / 1000.0))
                n_valid += 1
        for tp, recs in batch.items():
            if tp.partition in applied:
                self._to_commit[tp] = recs[-1].offset + 1
        n = sum(len(recs) for tp, recs in batch.items() if tp.partition in applied)
        self._handled += n
        self.metrics.events.labels("applied").inc(n_valid)
        self.metrics.record_handled(n)
        self.metrics.batch_events.observe(n)
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _topic_partitions(self) -> int:
        """How many partitions the topic has (what the default partitioner hashes keys over)."""
        known = self._consumer.partitions_for_topic(self.settings.topic) if self._consumer is not None else None
        count = len(known) if known else max(self.partitions, default=-1) + 1
        if count != self._partition_count:
            self._partition_count = count
            self._user_partition.clear()
        return count

    def _home_partition(self, user_id: str, partitions: int) -> int:
        home = self._user_partition.get(user_id)
        if home is None:
            if len(self._user_partition) >= USER_PARTITION_CACHE:
                self._user_partition.clear()
            home = self._user_partition[user_id] = partition_for(user_id.encode(), partitions)
        return home

    def _dlq_message(self, rejected: Rejected) -> tuple[str, bytes | None, bytes, int | None]:
        r = rejected.record
        payload = r.value or b""
        doc = {"reason": rejected.reason, "kind": rejected.kind, "topic": r.topic, "partition": r.partition,
               "offset": r.offset, "key": r.key.decode("utf8", "replace") if r.key else None,
               "payload": payload[:DLQ_PAYLOAD_LIMIT].decode("utf8", "replace"), "payload_bytes": len(payload),
               "processor": self.config.instance}
        return self.settings.dlq_topic, r.key, json.dumps(doc).encode(), None

    def _rekey_message(self, record: Any, event: Event, home: int) -> tuple[str, bytes | None, bytes, int | None]:
        # the payload as it came (it decoded to a valid event); a crash before the batch is applied
        # re-sends it, which its event_id makes harmless
        return self.settings.topic, event.user_id.encode(), record.value, home

    def _count_rejected(self, bad: list[Rejected]) -> None:
        for x in bad:
            self.metrics.dlq.labels(x.kind).inc()
            log.warning("event sent to the DLQ", extra={"fields": {
                "partition": x.record.partition, "offset": x.record.offset, "kind": x.kind, "reason": x.reason}})
        if bad:
            self.metrics.events.labels("dlq").inc(len(bad))

    def _deliver(self, messages: list[tuple[str, bytes | None, bytes, int | None]]) -> None:
        """Produce messages and wait until Kafka has every one of them (retrying what failed): they must be
        in the DLQ or re-keyed before the offsets they came from can be applied."""
        delay = 0.1
        pending = messages
        while pending:
            futures = [(m, self._dlq.send(m[0], key=m[1], value=m[2], partition=m[3])) for m in pending]
            try:
                self._dlq.flush(timeout=30)
            except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError: what is not done is retried below
                log.warning("waiting for Kafka to take DLQ/re-keyed records: %s", exc)
            failed = [(m, f) for m, f in futures if not (f.is_done and f.succeeded())]
            pending = [m for m, _ in failed]
            if pending:
                if self._stop.is_set():
                    raise RuntimeError(f"stopping with {len(pending)} DLQ/re-keyed record(s) not delivered; "
                                       "their offsets stay unapplied")
                error = failed[0][1].exception if failed[0][1].is_done else "timed out"
                log.warning("Kafka did not take %d DLQ/re-keyed record(s), retrying: %s", len(pending), error)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _load_applied(self, partition: int) -> int:
        raw = self.redis.get(self.keys.applied(partition))
        return int(raw) if raw is not None else -1

    def _with_redis(self, fn: Any) -> Any:
        """Run fn until Redis answers: exponential backoff, no polling (consumption stops meanwhile)."""
        delay = 0.05
        while True:
            try:
                result = fn()
                if self.metrics.redis_up._value.get() == 0:  # noqa: SLF001 - read back our own gauge
                    log.info("Redis reachable again, catching up")
                self.metrics.redis_up.set(1)
                return result
            except _REDIS_DOWN as exc:
                if self._stop.is_set():
                    raise
                self.metrics.redis_up.set(0)
                self.metrics.redis_retries.inc()
                log.warning("Redis unreachable, waiting", extra={"fields": {"error": str(exc), "retry_in_s": delay}})
                time.sleep(delay)
                delay = min(delay * 2, self.config.redis_backoff_max_s)

    def _apply(self, valid: dict[int, list[tuple[Any, Event]]], last: dict[int, int]) -> set[int]:
        """Write the batch; return the partitions applied (a fenced partition is dropped and re-sought)."""
        pending = dict(last)
        while pending:
            try:
                self._with_redis(lambda: self._transaction(valid, pending))
                return set(pending)
            except FenceConflict as conflict:
                self._fenced(conflict, pending)
            except _REDIS_DOWN:
                raise  # only while stopping: _with_redis waits out an outage otherwise
            except Exception as exc:  # noqa: BLE001 - not an outage: maybe one record; find it and set it aside
                if redis_busy(exc):
                    return self._back_off(pending, exc)
                log.warning("micro-batch could not be written; applying its records one at a time",
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
                try:
                    return self._apply_one_by_one(valid, pending)
                except _REDIS_DOWN:
                    raise
                except Exception as again:  # noqa: BLE001 - not a record's fault: wait and retry the batch
                    return self._back_off(pending, again)
        return set()

    def _fenced(self, conflict: FenceConflict, pending: dict[int, int]) -> None:
        self.metrics.fence_conflicts.inc()
        log.warning("fenced: partition applied further elsewhere, resuming from there",
                    extra={"fields": {"partitions": conflict.partitions}})
        for p, stored in conflict.partitions.items():
            pending.pop(p, None)
            part = self.partitions.get(p)
            if part is not None:
                part.users.clear()
                part.applied = stored
                self._seek(p, stored + 1)

    def _back_off(self, pending: dict[int, int], exc: BaseException) -> set[int]:
        """Nothing of the batch was applied for a reason that is not one record's: consume it again later."""
        self.metrics.redis_retries.inc()
        log.error("micro-batch not applied, retrying it: %s: %s", type(exc).__name__, exc)
        for p in pending:
            part = self.partitions.get(p)
            if part is not None and part.applied is not None:
                part.users.clear()
                self._seek(p, part.applied + 1)
        time.sleep(min(self.config.redis_backoff_max_s, 1.0))
        return set()

    def _apply_one_by_one(self, valid: dict[int, list[tuple[Any, Event]]], pending: dict[int, int]) -> set[int]:
        """Apply each record in its own transaction; one that fails while the same write without it succeeds
        goes to the DLQ as `unapplicable`. Raises when even a write without the record fails."""
        done: set[int] = set()
        for p, last in list(pending.items()):
            try:
                for r, event in valid.get(p, ()):
                    try:
                        self._write_partition(p, [(r, event)], r.offset)
                        continue
                    except (FenceConflict, *_REDIS_DOWN):
                        raise
                    except Exception as exc:  # noqa: BLE001 - is it this record? the same write without it tells
                        self._write_partition(p, [], self.partitions[p].applied)
                        rejected = Rejected(r, f"could not be applied: {type(exc).__name__}: {exc}", "unapplicable")
                    self._deliver([self._dlq_message(rejected)])
                    self._count_rejected([rejected])
                    self._write_partition(p, [], r.offset)
                if self.partitions[p].applied != last:
                    self._write_partition(p, [], last)
                done.add(p)
            except FenceConflict as conflict:
                self._fenced(conflict, pending)
        return done

    def _write_partition(self, partition: int, records: list[tuple[Any, Event]], offset: int | None) -> None:
        """One transaction: these records of one partition, and its applied offset moved to `offset`."""
        self._with_redis(lambda: self._transaction({partition: records}, {partition: offset}))

    def _transaction(self, valid: dict[int, list[tuple[Any, Event]]], last: dict[int, int]) -> None:
        user_codec = self.codecs.user
        by_user: dict[tuple[int, str], list[Event]] = defaultdict(list)
        # an item counts the events that are new to their user's state: a re-sent event counts once
        by_item: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        for p in last:
            for _, event in valid.get(p, ()):
                by_user[(p, event.user_id)].append(event)
        # user state: this instance is the partition's only writer, so cached state is current
        missing = [(p, u) for (p, u) in by_user if u not in self.partitions[p].users]
        if missing:
            raws = self.redis.mget([self.keys.user(u) for _, u in missing])
            for (p, u), raw in zip(missing, raws, strict=True):
                self.partitions[p].users[u] = UserState.from_json(raw)
        new_users: dict[tuple[int, str], UserState] = {}
        examples: list[LabelledExample] = []
        for (p, u), events in by_user.items():
            state = self.partitions[p].users[u]
            entries = [user_entry(e, self.catalog) for e in events]
            fresh = fresh_entries(state, entries)
            if self.sink.wants_examples:
                unseen = {f[1] for f in fresh}
                for e, entry in zip(events, entries, strict=True):
                    if entry[1] not in unseen:
                        continue  # a re-sent event teaches the online model nothing new
                    unseen.discard(entry[1])
                    before = user_features(state) if state.entries else None
                    examples.append(LabelledExample(e.event_id, e.user_id, e.item_id, e.event_type, e.value, e.ts,
                                                    before))
                    state = fold_user(state, [entry])
            else:
                state = fold_user(state, fresh)
            for entry in fresh:
                by_item[entry[2]].append(entry_interaction(entry))
            new_users[(p, u)] = state
        if examples:
            # the online model learns from these; a failing sink must never stop feature ingestion
            try:
                self.sink.emit(examples)
            except Exception as exc:  # noqa: BLE001
                log.error("example sink failed; %d examples skipped: %s", len(examples), exc)
        user_rows = {}
        for (p, u), state in new_users.items():
            feats = user_features(state)
            user_rows[(p, u)] = (feats, [feats[n] for n in user_codec.feature_names])
        item_ids = list(by_item)
        item_keys = [self.keys.item(i) for i in item_ids]
        partitions = list(last)
        applied_keys = [self.keys.applied(p) for p in partitions]
        args = (partitions, applied_keys, item_ids, item_keys, by_item, new_users, user_rows, last)
        while True:
            try:
                self._write(args)
                break
            except WatchError:
                continue  # another instance touched one of our items between read and write: read again
        for (p, u), state in new_users.items():
            cache = self.partitions[p].users
            cache.pop(u, None)  # re-insert: dict order is then least recently written first
            cache[u] = state
        for p in last:
            cache = self.partitions[p].users
            excess = len(cache) - self.config.cached_users_per_partition
            if excess > 0:
                for u in list(itertools.islice(cache, excess + self.config.cached_users_per_partition // 10)):
                    del cache[u]
        for p, off in last.items():
            self.partitions[p].applied = off
        return None

    def _write(self, args: tuple) -> None:
        partitions, applied_keys, item_ids, item_keys, by_item, new_users, user_rows, last = args
        user_codec, item_codec = self.codecs.user, self.codecs.item
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(*applied_keys, *item_keys)
            stored = pipe.mget(applied_keys)
            conflicts = {}
            for p, raw in zip(partitions, stored, strict=True):
                current = int(raw) if raw is not None else -1
                if current != self.partitions[p].applied:
                    conflicts[p] = current
            if conflicts:
                raise FenceConflict(conflicts)
            raws = pipe.mget(item_keys) if item_keys else []
            new_items = {i: fold_item(ItemState.from_json(raw), by_item[i])
                         for i, raw in zip(item_ids, raws, strict=True)}
            pipe.multi()
            created = time.time_ns() // 1000
            outbox: dict[int, list[str]] = defaultdict(list)
            for (p, u), state in new_users.items():
                feats, values = user_rows[(p, u)]
                pipe.set(self.keys.user(u), state.to_json(), ex=STATE_TTL_S)
                pipe.hset(user_codec.redis_key(u), mapping=user_codec.mapping(feats, state.latest_us))
                outbox[p].append(json.dumps(["user", f"{last[p]:012d}-{len(outbox[p]):06d}",
                                             outbox_row(u, state.latest_us, created, values)]))
            first_p = partitions[0]
            for i, key in zip(item_ids, item_keys, strict=True):
                state = new_items[i]
                feats = item_features(state)
                pipe.set(key, state.to_json(), ex=STATE_TTL_S)
                pipe.hset(item_codec.redis_key(i), mapping=item_codec.mapping(feats, state.latest_us))
                # an item row goes to the outbox of the batch's first partition (any one will do)
                outbox[first_p].append(json.dumps(["item", f"{last[first_p]:012d}-{len(outbox[first_p]):06d}",
                                                   outbox_row(i, state.latest_us, created,
                                                              [feats[n] for n in item_codec.feature_names])]))
            for p, rows in outbox.items():
                pipe.rpush(self.keys.outbox(p), *rows)
                self.partitions[p].outbox_rows += len(rows)  # an estimate for when to flush; exact after EXEC
            pipe.mset({key: last[p] for p, key in zip(partitions, applied_keys, strict=True)})
            pipe.execute()

    def _commit(self, force: bool = False) -> None:
        """Commit the offsets of applied records to Kafka, at most every commit_interval_s unless forced."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if not self._to_commit or (not force and time.monotonic() - self._last_commit < self.config.commit_interval_s):
            return
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._to_commit.items()}
        self._to_commit = {}
        self._last_commit = time.monotonic()
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            # harmless: Redis holds the applied offsets, re-delivered records are skipped
            log.warning("offset commit failed", extra={"fields": {"error": str(exc)}})

    def _seek(self, partition: int, offset: int) -> None:
        from kafka.structs import TopicPartition

        tp = TopicPartition(self.settings.topic, partition)
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    # -- periodic ----------------------------------------------------------------------------------------------

    def _flush_offline(self, partition: int, force: bool = False) -> None:
        part = self.partitions.get(partition)
        if part is None:
            return
        now = time.monotonic()
        key = self.keys.outbox(partition)
        if not force and now - part.last_flush < self.config.offline_flush_s \
                and part.outbox_rows < self.config.offline_flush_rows:
            return
        part.last_flush = now
        part.outbox_rows = 0
        while True:
            # at shutdown, wait for a flush another instance has under way: the rows must be on disk when we stop
            moved = flush_outbox(self.redis, key, f"{self.settings.topic}-p{partition}",
                                 max_rows=self.config.offline_flush_rows, wait_s=10.0 if force else 0.0)
            self.metrics.offline_rows.inc(moved)
            if moved < self.config.offline_flush_rows:
                break

    def _housekeeping(self) -> None:
        try:
            for p in list(self.partitions):
                self._flush_offline(p)
        except _REDIS_DOWN:
            pass  # the outbox waits in Redis; the next batch's retry loop reports the outage
        now = time.monotonic()
        if now - self._last_log < self.config.log_every_s:
            return
        self._last_log = now
        lag = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                pos = self._consumer.position(tp) if tp in self._consumer.assignment() else None
                if pos is not None:
                    lag[tp.partition] = max(0, high - pos)
                    self.metrics.lag.labels(str(tp.partition)).set(lag[tp.partition])
        log.info("progress", extra={"fields": {
            "handled": self._handled, "events_per_s": round(self.metrics.events_per_second._value.get(), 1),
            "lag": lag, "partitions": sorted(self.partitions)}})


def in_offset_order(records: Sequence[Any]) -> list[Any]:
    """One partition's records ascending by offset, each offset once (the batch's last offset is then its max)."""
    if all(a.offset < b.offset for a, b in itertools.pairwise(records)):
        return list(records)
    return list({r.offset: r for r in sorted(records, key=lambda r: r.offset)}.values())


def _rebalance_listener(processor: StreamProcessor) -> Any:
    from kafka import ConsumerRebalanceListener

    class _Rebalance(ConsumerRebalanceListener):
        """Bridges kafka-python's rebalance callbacks to the processor."""

        def on_partitions_revoked(self, revoked: Sequence[Any]) -> None:
            processor._rebalances.put(("revoked", list(revoked)))

        def on_partitions_assigned(self, assigned: Sequence[Any]) -> None:
            processor._rebalances.put(("assigned", list(assigned)))

    return _Rebalance()

