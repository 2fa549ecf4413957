"""Stream ingest benchmark (DESIGN.md §6): Kafka → online store throughput, and freshness at a fixed rate.

    python benchmarks/stream_ingest.py --events 100000            # throughput: pre-filled topic, drain it
    python benchmarks/stream_ingest.py --rate 5000 --seconds 20   # freshness p50/p99 at a fixed produce rate

Uses the local services of the current settings and a fresh topic per run.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from dataclasses import replace

from pipelines.stream.metrics import FRESHNESS_BUCKETS
from pipelines.stream.processor import ProcessorConfig, StreamProcessor
from pipelines.stream.producer import EventProducer, replay
from tandem.settings import get_settings
from tandem.topics import ensure_topics
from tests.integration.stream.conftest import applied_total, make_catalog, make_events


def _quantile(hist, q: float) -> float:
    """Upper bound of the histogram bucket holding quantile q."""
    samples = {s.labels["le"]: s.value for s in next(iter(hist.collect())).samples if s.name.endswith("_bucket")}
    total = samples["+Inf"]
    for le in [*map(str, FRESHNESS_BUCKETS), "+Inf"]:
        if samples[le] >= q * total:
            return float(le)
    return float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--rate", type=float, default=None, help="produce at this rate while processing (freshness)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-batch", type=int, default=5000)
    args = ap.parse_args()
    settings = replace(get_settings(), topic=f"bench-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    n = int(args.rate * args.seconds) if args.rate else args.events
    events = make_events("bench", n, n_users=args.users, n_items=args.items)
    catalog = make_catalog("bench", args.items)
    processor = StreamProcessor(settings, ProcessorConfig(group_id=f"bench-{uuid.uuid4().hex[:6]}",
                                                          max_batch=args.max_batch), catalog=catalog)
    with EventProducer(settings) as producer:
        if args.rate is None:
            took = replay(producer, events)
            print(f"produced {n:,} events in {took:.1f}s")
            thread = threading.Thread(target=processor.run, daemon=True)
            start = time.monotonic()
            thread.start()
            while applied_total(settings) < n:
                time.sleep(0.05)
            took = time.monotonic() - start
            print(f"processed {n:,} events in {took:.2f}s (incl. startup/group join): {n / took:,.0f} events/s")
            h = processor.metrics.batch_seconds
            busy = next(s.value for s in next(iter(h.collect())).samples if s.name.endswith("_sum"))
            print(f"time inside micro-batches {busy:.2f}s: {n / busy:,.0f} events/s of processing")
        else:
            thread = threading.Thread(target=processor.run, daemon=True)
            thread.start()
            time.sleep(8)  # let it join the group
            took = replay(producer, events, rate=args.rate)
            while applied_total(settings) < n:
                time.sleep(0.05)
            f = processor.metrics.freshness
            print(f"produced {n:,} events at {n / took:,.0f}/s; freshness p50 <= {_quantile(f, 0.5) * 1000:.0f} ms, "
                  f"p99 <= {_quantile(f, 0.99) * 1000:.0f} ms")
    processor.stop()
    thread.join(timeout=30)


if __name__ == "__main__":
    main()
