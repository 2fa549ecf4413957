"""Stream ingest benchmark (DESIGN.md §6): Kafka → online store throughput, and freshness at a fixed rate.

    python -m benchmarks.stream_ingest --events 200000 --instances 2   # throughput: pre-filled topic, drain it
    python -m benchmarks.stream_ingest --rate 5000 --seconds 20        # freshness p50/p99 at a fixed produce rate

Throughput runs `tandem stream run` subprocesses (one group) and reports the sustained rate between 10 %
and 100 % of the log applied, so process start-up and the group join are not counted.

Uses the local services of the current settings and a fresh topic per run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from pipelines.stream.metrics import FRESHNESS_BUCKETS
from pipelines.stream.producer import EventProducer, replay
from pipelines.stream.synthetic import make_catalog, make_events
from pipelines.stream.synthetic import write_catalog as write_dataset
from tandem.settings import get_settings
from tandem.topics import ensure_topics
from tests.integration.stream.conftest import applied_total


def _quantile(buckets: dict[str, float], q: float) -> float:
    """Upper bound of the histogram bucket holding quantile q (buckets: le → cumulative count)."""
    total = buckets["+Inf"]
    for le in [*map(str, FRESHNESS_BUCKETS), "+Inf"]:
        if buckets[le] >= q * total:
            return float(le)
    return float("inf")


def _start(settings, data, group: str, args, metrics_port: int = 0) -> subprocess.Popen:
    env = {**os.environ, "TANDEM_TOPIC": settings.topic, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "tandem", "stream", "run", "--group", group, "--data", str(data),
                             "--metrics-port", str(metrics_port), "--max-batch", str(args.max_batch)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(Path(tempfile.gettempdir()) / f"{group}.log", "ab"))


def _freshness(settings, producer, events, catalog, args) -> None:
    """One processor subprocess; produce at a fixed rate; read its freshness histogram from /metrics."""
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = write_dataset(Path(tempfile.mkdtemp(prefix="bench-")), catalog)
    proc = _start(settings, data, f"bench-{uuid.uuid4().hex[:6]}", args, metrics_port=port)
    try:
        replay(producer, events[:1])
        while applied_total(settings) < 1:  # started and joined the group
            time.sleep(0.1)
        # serialize first: the load generator must not be what limits a 5k/s run
        payloads = [(e.user_id.encode(), e.to_json()) for e in events[1:]]
        start = time.monotonic()
        for i, (key, value) in enumerate(payloads):
            ahead = start + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            producer.send_raw(value, key=key)
        producer.flush()
        took = time.monotonic() - start
        while applied_total(settings) < len(events):
            time.sleep(0.05)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        buckets = {s.labels["le"]: s.value for fam in text_string_to_metric_families(text)
                   if fam.name == "tandem_stream_freshness_seconds" for s in fam.samples
                   if s.name.endswith("_bucket")}
        print(f"produced {len(events) - 1:,} events at {(len(events) - 1) / took:,.0f}/s; freshness "
              f"p50 <= {_quantile(buckets, 0.5) * 1000:.0f} ms, p99 <= {_quantile(buckets, 0.99) * 1000:.0f} ms "
              f"(histogram bucket bounds); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _throughput(settings, n: int, catalog: dict[str, str], args) -> None:
    data = write_dataset(Path(tempfile.mkdtemp(prefix="bench-")), catalog)
    group = f"bench-{uuid.uuid4().hex[:6]}"
    procs = [_start(settings, data, group, args) for _ in range(args.instances)]
    def cpu_seconds() -> float:  # user + system time of the processors: what they cost, whatever the machine's load
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for p in procs:
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    try:
        start = start_cpu = None
        while (done := applied_total(settings)) < n:
            if start is None and done >= 0.1 * n:
                start, start_cpu = time.monotonic(), cpu_seconds()
            time.sleep(0.02)
        end, end_cpu = time.monotonic(), cpu_seconds()
        if start is None:
            start, start_cpu = end, end_cpu
        print(f"{args.instances} instance(s): {0.9 * n / max(end - start, 1e-9):,.0f} events/s sustained "
              f"(10%→100% of {n:,} events in {end - start:.2f}s); processors used {end_cpu - start_cpu:.2f} "
              f"CPU-s: {0.9 * n / max(end_cpu - start_cpu, 1e-9):,.0f} events per CPU-second; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--rate", type=float, default=None, help="produce at this rate while processing (freshness)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--max-batch", type=int, default=5000)
    ap.add_argument("--instances", type=int, default=1, help="processor subprocesses in the group (throughput)")
    args = ap.parse_args()
    settings = replace(get_settings(), topic=f"bench-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    n = int(args.rate * args.seconds) if args.rate else args.events
    events = make_events("bench", n, n_users=args.users, n_items=args.items)
    catalog = make_catalog("bench", args.items)
    with EventProducer(settings) as producer:
        if args.rate is None:
            took = replay(producer, events)
            print(f"produced {n:,} events in {took:.1f}s")
            _throughput(settings, n, catalog, args)
            return
        _freshness(settings, producer, events, catalog, args)

if __name__ == "__main__":
    main()
