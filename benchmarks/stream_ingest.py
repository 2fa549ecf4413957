"""Stream ingest: Kafka → online store throughput, freshness at a fixed rate, and Feast `push` of the same rows.

* throughput — a topic pre-filled with synthetic events (pipelines/stream/synthetic.py), drained by one
  `tandem stream run` subprocess; the sustained rate is taken between 10 % and 100 % of the log applied
  (process start and the group join are not counted), and its CPU time gives events per CPU-second,
  which depends much less on what else the machine runs;
* freshness — events produced at a fixed rate (5k/s) into a fresh topic while one processor consumes;
  event-to-visible is the processor's `tandem_stream_freshness_seconds` histogram (Kafka record time of
  the event → its Redis transaction committed), read from its /metrics at the end;
* stock — the same events folded into the same feature rows with the same micro-batch size, written with
  Feast's `FeatureStore.push(..., to=PushMode.ONLINE)` through the repo's push sources.

Everything the benchmark writes is removed afterwards: its topics, its Redis rows (bench-prefixed users
and items), the processors' state keys; their offline log goes to a scratch directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.core import BenchContext, Benchmark, BenchResult, Row, cpu_seconds, free_port, peak_rss_mb
from models.monitor import histogram_quantile
from pipelines.stream.producer import EventProducer, replay
from pipelines.stream.synthetic import make_catalog, make_events, write_catalog
from tandem.schema import Event
from tandem.settings import PROJECT_ROOT, Settings
from tandem.topics import ensure_topics

TARGET_RATE = 20_000  # events/s sustained (DESIGN.md §6)
FRESHNESS_RATE = 5_000  # events/s produced while measuring freshness
FRESHNESS_P99_S = 0.100
MAX_BATCH = 5000  # the processor's default micro-batch bound; the stock path pushes the same batches
USERS, ITEMS = 20_000, 5_000


def _processor(settings: Settings, ctx: BenchContext, data: Path, group: str, metrics_port: int = 0,
               log_name: str = "processor") -> subprocess.Popen:
    env = {**os.environ, **settings.feast_environment(), "TANDEM_TOPIC": settings.topic, "PYTHONWARNINGS": "ignore",
           "TANDEM_OFFLINE_DIR": str(ctx.workdir / "offline")}
    log = open(ctx.workdir / f"{log_name}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "tandem", "stream", "run", "--group", group, "--data", str(data),
                             "--metrics-port", str(metrics_port), "--max-batch", str(MAX_BATCH)],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _applied(settings: Settings) -> int:
    import redis

    from pipelines.stream.processor import applied_total

    return applied_total(redis.Redis.from_url(settings.redis_url), settings.topic, settings.kafka_partitions)


def _wait_applied(settings: Settings, n: int, proc: subprocess.Popen, timeout: float, on_tick=None) -> None:
    deadline = time.monotonic() + timeout
    while (done := _applied(settings)) < n:
        if proc.poll() is not None:
            raise RuntimeError(f"the stream processor exited with {proc.returncode} after {done:,} of {n:,} events")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done:,} of {n:,} events applied in {timeout:.0f}s")
        if on_tick:
            on_tick(done)
        time.sleep(0.02)


def measure_throughput(ctx: BenchContext, settings: Settings, events: Sequence[Event], data: Path) -> dict[str, Any]:
    with EventProducer(settings) as producer:
        took = replay(producer, events)
    ctx.say(f"throughput: {len(events):,} events in the topic ({took:.1f}s to produce); draining")
    proc = _processor(settings, ctx, data, f"bench-{uuid.uuid4().hex[:6]}", log_name="throughput")
    n = len(events)
    mark: dict[str, float] = {}

    def tick(done: int) -> None:
        if "t" not in mark and done >= 0.1 * n:
            mark["t"], mark["cpu"] = time.monotonic(), cpu_seconds(proc.pid)

    try:
        _wait_applied(settings, n, proc, timeout=600, on_tick=tick)
        end, end_cpu = time.monotonic(), cpu_seconds(proc.pid)
        rss = peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
    start, start_cpu = mark.get("t", end), mark.get("cpu", end_cpu)
    counted = 0.9 * n
    return {"events": n, "events_per_s": counted / max(end - start, 1e-9), "seconds": end - start,
            "cpu_seconds": end_cpu - start_cpu, "events_per_cpu_s": counted / max(end_cpu - start_cpu, 1e-9),
            "peak_rss_mib": rss}


def measure_freshness(ctx: BenchContext, settings: Settings, events: Sequence[Event], data: Path,
                      rate: float) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    proc = _processor(settings, ctx, data, f"bench-{uuid.uuid4().hex[:6]}", metrics_port=port, log_name="freshness")
    try:
        with EventProducer(settings) as producer:
            replay(producer, events[:1])
            _wait_applied(settings, 1, proc, timeout=120)  # started and joined: the clock starts now
            payloads = [(e.user_id.encode(), e.to_json()) for e in events[1:]]  # serialize before the clock
            ctx.say(f"freshness: producing {len(payloads):,} events at {rate:,.0f}/s")
            start = time.monotonic()
            for i, (key, value) in enumerate(payloads):
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                producer.send_raw(value, key=key)
            producer.flush()
            produced_s = time.monotonic() - start
        _wait_applied(settings, len(events), proc, timeout=300)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        _stop(proc)
    buckets = [(float(s.labels["le"]), s.value) for fam in text_string_to_metric_families(text)
               if fam.name == "tandem_stream_freshness_seconds" for s in fam.samples if s.name.endswith("_bucket")]
    return {"events": len(events) - 1, "produced_per_s": (len(events) - 1) / produced_s,
            "p50_s": histogram_quantile(buckets, 0.5), "p95_s": histogram_quantile(buckets, 0.95),
            "p99_s": histogram_quantile(buckets, 0.99), "histogram": {str(k): v for k, v in buckets}}


def feature_batches(events: Sequence[Event], catalog: dict[str, str], batch: int = MAX_BATCH):
    """The rows the processor writes, micro-batch by micro-batch: (user DataFrame, item DataFrame) per batch."""
    from collections import defaultdict
    from datetime import UTC, datetime

    import pandas as pd

    from pipelines.stream.session_features import (
        ItemState,
        UserState,
        fold_item,
        fold_user,
        item_features,
        item_interaction,
        micros_to_datetime,
        user_entry,
        user_features,
    )

    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    for lo in range(0, len(events), batch):
        chunk = events[lo:lo + batch]
        by_user: dict[str, list] = defaultdict(list)
        by_item: dict[str, list] = defaultdict(list)
        for e in chunk:
            by_user[e.user_id].append(user_entry(e, catalog))
            by_item[e.item_id].append(item_interaction(e))
        now = datetime.now(UTC)
        user_rows, item_rows = [], []
        for u, entries in by_user.items():
            users[u] = state = fold_user(users.get(u), entries)
            user_rows.append({"user_id": u, "event_timestamp": micros_to_datetime(state.latest_us), "created": now,
                              **user_features(state)})
        for i, interactions in by_item.items():
            items[i] = state = fold_item(items.get(i), interactions)
            item_rows.append({"item_id": i, "event_timestamp": micros_to_datetime(state.latest_us), "created": now,
                              **item_features(state)})
        yield len(chunk), pd.DataFrame(user_rows), pd.DataFrame(item_rows)


def measure_stock_push(ctx: BenchContext, settings: Settings, events: Sequence[Event],
                       catalog: dict[str, str]) -> dict[str, Any]:
    from feast.data_source import PushMode

    from pipelines.batch.feast_repo import feature_store

    store = feature_store(settings)
    fold_s = push_s = 0.0
    n = rows = 0
    ctx.say(f"stock: Feast push of the rows of {len(events):,} events, {MAX_BATCH:,}-event micro-batches")
    batches = feature_batches(events, catalog)
    while True:
        t0 = time.perf_counter()
        try:
            count, user_df, item_df = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        store.push("user_session_push", user_df, to=PushMode.ONLINE)
        store.push("item_trending_push", item_df, to=PushMode.ONLINE)
        t2 = time.perf_counter()
        fold_s += t1 - t0
        push_s += t2 - t1
        n += count
        rows += len(user_df) + len(item_df)
    return {"events": n, "rows": rows, "fold_seconds": fold_s, "push_seconds": push_s,
            "events_per_s": n / max(fold_s + push_s, 1e-9), "push_rows_per_s": rows / max(push_s, 1e-9)}


def cleanup(settings: Settings, topics: list[str], events: Sequence[Event]) -> None:
    """Remove what the benchmark wrote: Redis rows of its users/items, processor state keys, its topics."""
    import redis
    from kafka.admin import KafkaAdminClient

    from pipelines.stream.online_format import stream_codecs

    client = redis.Redis.from_url(settings.redis_url)
    codecs = stream_codecs()
    keys = {codecs.user.redis_key(u) for u in {e.user_id for e in events}}
    keys |= {codecs.item.redis_key(i) for i in {e.item_id for e in events}}
    for topic in topics:
        keys |= set(client.scan_iter(match=f"tandem:stream:{topic}:*", count=1000))
    batch = list(keys)
    for lo in range(0, len(batch), 1000):
        client.delete(*batch[lo:lo + 1000])
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.delete_topics([t for topic in topics for t in (topic, f"{topic}.dlq")])
    except Exception:  # noqa: BLE001 - leftover bench topics are harmless; the figures are what matter
        pass
    finally:
        admin.close()


def run(ctx: BenchContext) -> BenchResult:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    n = 60_000 if ctx.quick else 300_000
    seconds = 10 if ctx.quick else 30
    events = make_events(prefix, n, n_users=USERS, n_items=ITEMS, seed=11)
    catalog = make_catalog(prefix, ITEMS)
    data = write_catalog(ctx.workdir / "data", catalog)
    base = ctx.settings
    through = replace(base, topic=f"{prefix}-tp", kafka_partitions=base.kafka_partitions)
    fresh = replace(base, topic=f"{prefix}-fr", kafka_partitions=base.kafka_partitions)
    fresh_events = make_events(f"{prefix}f", int(FRESHNESS_RATE * seconds), n_users=USERS, n_items=ITEMS, seed=12)
    try:
        for s in (through, fresh):
            ensure_topics(s)
        tp = measure_throughput(ctx, through, events, data)
        ctx.say(f"tandem: {tp['events_per_s']:,.0f} events/s")
        stock = measure_stock_push(ctx, base, events[: min(n, 20_000 if ctx.quick else 60_000)], catalog)
        ctx.say(f"stock push: {stock['events_per_s']:,.0f} events/s")
        fr = measure_freshness(ctx, fresh, fresh_events, data, FRESHNESS_RATE)
        ctx.say(f"freshness p50 {fr['p50_s'] * 1000:.0f} ms, p99 {fr['p99_s'] * 1000:.0f} ms")
    finally:
        cleanup(base, [through.topic, fresh.topic], [*events, *fresh_events])
    rows = [
        Row("sustained ingest (1 processor)", "events/s", tp["events_per_s"], stock["events_per_s"],
            tp["events_per_s"] / stock["events_per_s"], "tandem / Feast push", f"≥ {TARGET_RATE:,} events/s",
            tp["events_per_s"] >= TARGET_RATE),
        Row("ingest per CPU-second", "events/CPU-s", tp["events_per_cpu_s"]),
        Row(f"freshness p50 at {FRESHNESS_RATE:,}/s (≤)", "ms", fr["p50_s"] * 1000),
        Row(f"freshness p99 at {FRESHNESS_RATE:,}/s (≤)", "ms", fr["p99_s"] * 1000, target="≤ 100 ms",
            met=fr["p99_s"] <= FRESHNESS_P99_S),
        Row("processor peak RSS", "MiB", tp["peak_rss_mib"]),
    ]
    notes = [
        f"throughput: {tp['events']:,} events, {USERS:,} users, {ITEMS:,} items, 4 partitions, one processor; "
        f"{tp['cpu_seconds']:.1f} CPU-s for 90 % of the log",
        f"stock: Feast push (PushMode.ONLINE) of the same fold's rows for the first {stock['events']:,} events; "
        f"{stock['fold_seconds']:.2f}s folding, {stock['push_seconds']:.2f}s in push "
        f"({stock['push_rows_per_s']:,.0f} rows/s); no Kafka in the stock figure",
        f"freshness: produced {fr['events']:,} events at {fr['produced_per_s']:,.0f}/s from this process; the "
        "quantiles are upper bounds of the processor's histogram buckets (25 ms steps around 100 ms)",
        f"the producer, the processor, Kafka and Redis share {os.cpu_count()} cores",
    ]
    return BenchResult(key="stream_ingest", title="Stream ingest", rows=rows,
                       details={"throughput": tp, "stock_push": stock, "freshness": fr}, notes=notes)


BENCHMARK = Benchmark(key="stream_ingest", title="Stream ingest", run=run)
