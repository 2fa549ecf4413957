"""Producing events into Kafka: the replayer behind `tandem stream replay`, and the producer under `POST /feedback`.

Every event goes to the interactions topic as the schema's JSON (tandem.schema.Event.to_json),
keyed by user_id so one user's events stay in one partition, in order. The producer is
idempotent (no duplicates on retry) and waits for all in-sync replicas. A send that still fails
after the client's retries is never silent: `flush()` raises DeliveryError naming how many events
were not delivered and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from tandem.schema import Event, conform_events
from tandem.settings import Settings


class DeliveryError(RuntimeError):
    """Some events were not written to Kafka (the broker refused them or the delivery timed out)."""


class EventProducer:
    """A Kafka producer of schema events; use as a context manager or call close()."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        from kafka import KafkaProducer

        config: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap, "acks": "all",
                                  "enable_idempotence": True, "linger_ms": 5, "batch_size": 256 * 1024,
                                  "compression_type": None, "max_in_flight_requests_per_connection": 5}
        config.update(overrides)
        self.topic = settings.topic
        self._producer = KafkaProducer(**config)
        self._lock = threading.Lock()
        self._failed = 0
        self._first_error: BaseException | None = None

    def _on_error(self, exc: BaseException) -> None:  # kafka-python calls this on its IO thread
        with self._lock:
            self._failed += 1
            self._first_error = self._first_error or exc

    def send(self, event: Event) -> Any:
        """Queue one event (returns kafka-python's future); call flush() to wait for delivery."""
        return self.send_raw(event.to_json(), key=event.user_id.encode())

    def send_raw(self, payload: bytes, key: bytes | None = None) -> Any:
        """Queue bytes as they are (also used to test how the processor handles malformed input)."""
        future = self._producer.send(self.topic, key=key, value=payload)
        future.add_errback(self._on_error)
        return future

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until every queued event is delivered; DeliveryError if any was not (since the last flush)."""
        self._producer.flush(timeout=timeout)
        with self._lock:
            failed, error, self._failed, self._first_error = self._failed, self._first_error, 0, None
        if failed:
            raise DeliveryError(f"{failed} event(s) were not delivered to topic {self.topic!r}: {error}")

    def partitions(self) -> set[int]:
        """The topic's partitions (fetches its metadata if needed, waiting at most max_block_ms)."""
        return self._producer.partitions_for(self.topic)

    def close(self, timeout: float = 30) -> None:
        """Deliver what is queued within `timeout` seconds; 0 drops whatever is still queued."""
        self._producer.close(timeout=timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def events_from_table(table: pa.Table) -> list[Event]:
    """Rows of an event table (any column order) as Events, sorted by event time (then event_id)."""
    table = conform_events(table).sort_by([("ts", "ascending"), ("event_id", "ascending")])
    return [Event(**row) for row in table.to_pylist()]


def load_dataset_events(dataset_dir: Path) -> list[Event]:
    """A dataset directory's events in event-time order."""
    from pipelines.dataset import read_events

    return events_from_table(read_events(dataset_dir))


def replay(producer: EventProducer, events: Sequence[Event], rate: float | None = None,
           progress: Callable[[int], None] | None = None, clock: Callable[[], float] = time.monotonic) -> float:
    """Produce events in the given (event-time) order at `rate` events/s (None: as fast as possible).

    Returns the seconds it took, delivery included.
    """
    start = clock()
    for i, event in enumerate(events):
        if rate:
            ahead = start + i / rate - clock()
            if ahead > 0:
                time.sleep(ahead)
        producer.send(event)
        if progress and i % 1000 == 0:
            progress(i)
    producer.flush(timeout=None)
    if progress:
        progress(len(events))
    return clock() - start


def produce_events(settings: Settings, events: Iterable[Event]) -> int:
    """Produce events and wait for delivery (a few events from a script or a notebook)."""
    n = 0
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
            n += 1
        producer.flush()
    return n
