"""The stream processor's Prometheus metrics (text format on http://127.0.0.1:<port>/metrics).

| metric | type | meaning |
|---|---|---|
| tandem_stream_events_total{result} | counter | applied, dlq, replayed (applied before), rekeyed (see processor) |
| tandem_stream_events_per_second | gauge | applied + dlq records per second over the last ~5 s |
| tandem_stream_dlq_total{kind} | counter | DLQ records by kind: an EventError kind, undecodable, unapplicable |
| tandem_stream_consumer_lag{partition} | gauge | log-end offset minus the next offset to process |
| tandem_stream_freshness_seconds | histogram | produce time of a record to its features being visible in Redis |
| tandem_stream_batch_seconds / _batch_events | histogram | micro-batch processing time and size |
| tandem_stream_redis_up | gauge | 1 while Redis writes succeed, 0 while the processor waits for Redis |
| tandem_stream_redis_retries_total | counter | failed Redis attempts that were retried |
| tandem_stream_fence_conflicts_total | counter | batches refused: another instance applied the partition further |
| tandem_stream_rebalance_stalls_total | counter | rebalances that never completed (the consumer was replaced) |
| tandem_stream_offline_rows_total | counter | feature rows moved from the outbox into the offline parquet tables |
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

FRESHNESS_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.35,
                     0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


class StreamMetrics:
    """One registry per processor, so several processors (or tests) in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("tandem_stream_events", "Records handled, by result.", ["result"], registry=r)
        self.events_per_second = Gauge("tandem_stream_events_per_second",
                                       "Records handled per second over the last ~5 s.", registry=r)
        self.dlq = Counter("tandem_stream_dlq", "Records sent to the DLQ, by kind.", ["kind"], registry=r)
        self.lag = Gauge("tandem_stream_consumer_lag", "Log-end offset minus next offset to process.",
                         ["partition"], registry=r)
        self.freshness = Histogram("tandem_stream_freshness_seconds",
                                   "Record produce time to features visible in the online store.",
                                   buckets=FRESHNESS_BUCKETS, registry=r)
        self.batch_seconds = Histogram("tandem_stream_batch_seconds", "Micro-batch processing time.", registry=r)
        self.batch_events = Histogram("tandem_stream_batch_events", "Records per micro-batch.",
                                      buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000), registry=r)
        self.redis_up = Gauge("tandem_stream_redis_up", "1 while Redis writes succeed, 0 while waiting.", registry=r)
        self.redis_retries = Counter("tandem_stream_redis_retries", "Failed Redis attempts that were retried.",
                                     registry=r)
        self.fence_conflicts = Counter("tandem_stream_fence_conflicts",
                                       "Batches refused: another instance applied the partition further.", registry=r)
        self.rebalance_stalls = Counter("tandem_stream_rebalance_stalls",
                                        "Rebalances that never completed; the consumer was replaced.", registry=r)
        self.offline_rows = Counter("tandem_stream_offline_rows", "Rows moved into the offline tables.", registry=r)
        self.redis_up.set(1)
        self._window: deque[tuple[float, int]] = deque()

    def record_handled(self, n: int, now: float | None = None) -> None:
        now = now or time.monotonic()
        self._window.append((now, n))
        while self._window and now - self._window[0][0] > 5.0:
            self._window.popleft()
        span = max(now - self._window[0][0], 1.0) if self._window else 1.0
        self.events_per_second.set(sum(k for _, k in self._window) / span)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics on host:port (a background thread)."""
        start_http_server(port, addr=host, registry=self.registry)
