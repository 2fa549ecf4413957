"""`tandem evaluate --through-stack`: the in-process replay's first queries asked again through the real stack.

The evaluation's replay (models/evaluate.py) claims to be the platform without its network hops.
This runs the platform with them: the evaluation workspace's batch outputs materialized into a Redis
DB of its own, `tandem stream run` consuming a topic of its own, `tandem serve` on a port of its own
reading that DB and the workspace's MLflow — and for each of the first N events after T

1. POST /recommend for the event's user, k, `context.request_time` = the event's time (the server
   runs with TANDEM_SERVE_ALLOW_REQUEST_TIME=1) and `exclude_item_ids` = the items the user saw before;
2. produce the event to the topic, and wait until the processor's applied offset for its partition
   (written in the same Redis transaction as the features) covers it and the user's state holds it;

then compares each served list with the in-process replay's for the same query (models/agreement.py).

Both sides must rank with the same things for the lists to be identical, so: the online model is
frozen — the one the validation replay learned, registered in the workspace MLflow as
`online-ranker@champion`, and the in-process replay of these queries scores with that version loaded
back (no prequential training); the stream runs without an example sink, so nothing retrains or
publishes; serving reads trending on every request (TANDEM_SERVE_TRENDING_REFRESH_S=0) instead of
every 2 s and keeps the item snapshot it started with (TANDEM_SERVE_ITEM_CACHE_TTL_S a day, not 600 s); one
A/B variant, the hybrid at the evaluation's online weight. Nothing here touches the
user's online store, topic, registry or champions: the settings of the stack are the workspace's.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from tandem.settings import PROJECT_ROOT, Settings

EVALUATE_DB = 15  # the Redis DB a through-stack run materializes into (14 when the user's own store is DB 15)
DEFAULT_MAX_QUERIES = 2000
APPLY_TIMEOUT_S = 60.0  # longest wait for the processor to apply one event
READY_TIMEOUT_S = 300.0
# serving keeps the item snapshot it loaded at start for the whole run: a backstop reload would take in items only
# the stream has written (trending) rows for, which the replay's catalogue — the batch outputs — does not hold
ITEM_SNAPSHOT_S = 86_400.0
VALIDATION_MODEL = "learned by the validation replay on [T_val, T)"


class ThroughStackError(RuntimeError):
    """A through-stack run that could not be set up or went wrong; the message says where."""


@dataclass(frozen=True)
class Stack:
    """Where the through-stack run's own services live."""

    settings: Settings  # the stack's settings (what its processes see)
    env: dict[str, str]  # their environment
    group: str  # the stream processor's consumer group


def evaluate_redis_url(redis_url: str) -> str:
    """The user's Redis with a DB number of its own: EVALUATE_DB, or EVALUATE_DB - 1 if the user's store is on it."""
    parsed = urlparse(redis_url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ThroughStackError(f"TANDEM_REDIS_URL={redis_url!r}: expected redis://host:port/db")
    own = (parsed.path.strip("/") or "0")
    db = EVALUATE_DB if own != str(EVALUATE_DB) else EVALUATE_DB - 1
    return urlunparse(parsed._replace(path=f"/{db}"))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stack_for(settings: Settings, workspace: Path, dataset_dir: Path, online_weight: float) -> Stack:
    """The isolated configuration: the workspace's home, offline store, registry and MLflow, a Redis DB, a topic
    (and its DLQ), a consumer group and two ports of its own; request times allowed, trending read per request."""
    from pipelines.batch.evaluation import tracking_uri, workspace_env

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    variants = json.dumps({"hybrid": {"share": 1.0, "online_weight": online_weight}})
    stack = Settings(home=workspace, redis_url=evaluate_redis_url(settings.redis_url),
                     kafka_bootstrap=settings.kafka_bootstrap, kafka_partitions=settings.kafka_partitions,
                     mlflow_uri=tracking_uri(workspace), serve_host="127.0.0.1", serve_port=free_port(),
                     topic=f"{settings.topic}-evaluate-{stamp}", stream_metrics_port=free_port(),
                     api_key=settings.api_key, ab_variants_json=variants, serve_workers=1,
                     serve_allow_request_time=True, trending_refresh_s=0.0, item_cache_ttl_s=ITEM_SNAPSHOT_S)
    # the workspace's paths last: this process's environment already holds the user's (export_feast_environment)
    env = {**os.environ, **stack.feast_environment(), **workspace_env(workspace),
           "TANDEM_FEAST_REDIS": stack.feast_redis, "TANDEM_REDIS_URL": stack.redis_url, "TANDEM_TOPIC": stack.topic,
           "TANDEM_SERVE_HOST": stack.serve_host,
           "TANDEM_SERVE_PORT": str(stack.serve_port), "TANDEM_STREAM_METRICS_PORT": str(stack.stream_metrics_port),
           "TANDEM_AB_VARIANTS": variants, "TANDEM_SERVE_WORKERS": "1", "TANDEM_SERVE_ALLOW_REQUEST_TIME": "1",
           "TANDEM_SERVE_TRENDING_REFRESH_S": "0", "TANDEM_SERVE_ITEM_CACHE_TTL_S": str(ITEM_SNAPSHOT_S),
           "TANDEM_DATA": str(Path(dataset_dir).resolve()),
           "TANDEM_DECISION_LOG": str(workspace / "serving" / "decisions.jsonl")}
    return Stack(stack, env, f"tandem-evaluate-{stamp}")


def _run(name: str, cmd: list[str], env: dict[str, str], timeout: float) -> str:
    try:
        done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ThroughStackError(f"{name} did not finish within {timeout:.0f}s ({' '.join(cmd[2:])})") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise ThroughStackError(f"{name} failed (exit {done.returncode}, {' '.join(cmd[2:])}):\n{tail}")
    return done.stdout


def _register_frozen(model: Any, workspace: Path, tracking: str, learned_on: str) -> Any:
    """Register `model` in the workspace MLflow as online-ranker@champion and load it back as serving will."""
    import mlflow

    from models.online import SanityResult
    from models.ranking import Ranker
    from models.registry import ONLINE_EXPERIMENT, ONLINE_MODEL, load_champion, register_online_ranker

    mlflow.set_tracking_uri(tracking)
    if mlflow.get_experiment_by_name(ONLINE_EXPERIMENT) is None:  # artifacts beside the workspace's others
        mlflow.create_experiment(ONLINE_EXPERIMENT, artifact_location=(workspace / "mlruns").as_uri())
    sanity = SanityResult(True, math.nan, None, 0, f"frozen for tandem evaluate --through-stack: {learned_on}")
    register_online_ranker(model, sanity, data_window={"start": "validation", "end": "T"}, tracking_uri=tracking,
                           examples_seen=0, params={"frozen_for": "through-stack"})
    return Ranker(load_champion(ONLINE_MODEL, tracking))


def _events_by_position(events: Any, epoch: Any) -> Any:
    """The dataset's events in the replay's time order (a stable sort by time, as `encode_events` sorts)."""
    import numpy as np

    return events.iloc[np.argsort(epoch, kind="stable")].reset_index(drop=True)


def _event(query: Any, row: Any) -> Any:
    """The schema event the replay revealed as `query`, with the dataset row's time, value and session."""
    import pandas as pd

    from pipelines.stream.session_features import ts_micros
    from tandem.schema import Event

    if str(row["user_id"]) != query.user_id or str(row["item_id"]) != query.item_id:
        raise ThroughStackError(f"event {query.position} after sorting is ({row['user_id']}, {row['item_id']}), the "
                                f"replay's is ({query.user_id}, {query.item_id}): the orders differ")
    ts = pd.Timestamp(row["ts"]).to_pydatetime()
    if ts_micros(ts) != int(round(query.ts * 1_000_000)):
        raise ThroughStackError(f"event {query.position}: time {ts.isoformat()} is not the replay's {query.ts!r}")
    value = row.get("value")
    session = row.get("session_id")
    return Event(event_id=query.event_id, user_id=query.user_id, item_id=query.item_id,
                 event_type=query.event_type, ts=ts,
                 value=None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
                 session_id=None if session is None or (isinstance(session, float) and math.isnan(session))
                 else str(session))


class Applied:
    """Waits until the stream processor has applied a produced event: its partition's applied offset (stored in
    the same Redis transaction as the features) covers the record, and the user's state holds the event."""

    def __init__(self, stack: Settings):
        import redis

        from pipelines.stream.processor import RedisKeys

        self.redis = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
        self.keys = RedisKeys(stack.topic)

    def wait(self, partition: int, offset: int, user_id: str, event_id: str, alive: Callable[[], None],
             timeout: float = APPLY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        key, pause = self.keys.applied(partition), 0.0005
        while True:
            raw = self.redis.get(key)
            if raw is not None and int(raw) >= offset:
                break
            if time.monotonic() > deadline:
                raise ThroughStackError(f"the stream processor did not apply {event_id} (partition {partition}, "
                                        f"offset {offset}) within {timeout:.0f}s")
            alive()
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        state = self.redis.get(self.keys.user(user_id))  # JSON entries [ts, "event_id", ...]: the id is quoted
        if state is None or json.dumps(event_id).encode() not in state:
            raise ThroughStackError(f"the stream processor moved past {event_id} (partition {partition}, offset "
                                    f"{offset}) without applying it to {user_id}'s state: sent to the DLQ or "
                                    "re-keyed? See its log")


def run_through_stack(settings: Settings, dataset_dir: Path, result: Any, max_queries: int = DEFAULT_MAX_QUERIES,
                      log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None,
                      online_model: Any = None, learned_on: str = VALIDATION_MODEL) -> dict[str, Any]:
    """Ask the real stack the first `max_queries` queries after T of an evaluation `result` (from
    `evaluate_dataset(..., validation_always=True)`) and compare with the in-process replay of the same
    queries under the same frozen online model; return what goes into `details["through_stack"]`.

    The frozen model is the validation replay's unless `online_model` is given (`learned_on` says where from)."""
    from models.agreement import Compared, agreement
    from models.evaluate import EvaluationConfig, replay
    from pipelines.batch.evaluation import _read_timed
    from serving.http_models import MAX_EXCLUDE
    from tandem.services import ServiceError, services

    if max_queries < 1:
        raise ThroughStackError(f"--max-queries: expected a positive integer, got {max_queries!r}")
    if result.outputs is None:
        raise ThroughStackError("the evaluation kept no batch outputs to continue from")
    if online_model is None:
        validation = result.validation
        if validation is None:
            raise ThroughStackError("no online model to freeze: the evaluation ran no validation replay (run it "
                                    "with validation_always=True) and none was given")
        if validation.online_model is None:
            raise ThroughStackError(f"the validation replay learned no online model (fewer than "
                                    f"{validation.details['online_updates']['every']} examples in [T_val, T)): "
                                    "there is no online model to freeze for the comparison")
        online_model = validation.online_model
    started = time.perf_counter()
    workspace = Path(result.outputs.run["workspace"])
    weight = float(result.details["online_weight"])
    k = result.k
    stack = stack_for(settings, workspace, dataset_dir, weight)
    s = stack.settings
    log(f"through the stack: Redis {s.redis_url} (flushed), topic {s.topic}, server port {s.serve_port}, stream "
        f"metrics port {s.stream_metrics_port}, MLflow {s.mlflow_uri}")
    try:
        for svc in services(settings, ["redis", "kafka"]):
            svc.up(report=lambda msg: log(f"  {msg}"))
    except ServiceError as exc:
        raise ThroughStackError(str(exc)) from None
    import redis

    try:
        redis.Redis.from_url(s.redis_url, socket_timeout=5).flushdb()
    except redis.RedisError as exc:
        raise ThroughStackError(f"cannot use {s.redis_url} for the through-stack run: {exc}") from None
    as_of = datetime.fromtimestamp(result.outputs.as_of, tz=UTC)
    _run("materializing the evaluation's batch outputs", [sys.executable, "-m", "tandem", "batch", "materialize",
                                                          "--as-of", as_of.isoformat()], stack.env, 600)
    frozen = _register_frozen(online_model, workspace, s.mlflow_uri, learned_on)
    log(f"  frozen online model: {frozen.name} v{frozen.version} (champion in {s.mlflow_uri})")

    events, items, epoch = _read_timed(dataset_dir)
    queries: list[Any] = []
    config = EvaluationConfig(k=k, online_weight=weight)
    in_process = replay(events, items, result.outputs, config, online_model=frozen, max_queries=max_queries,
                        on_query=queries.append)
    log(f"  in-process replay of the first {len(queries):,} queries with the frozen model: "
        f"{in_process.details['seconds']}s")
    by_position = _events_by_position(events, epoch)
    setup_s = time.perf_counter() - started
    served, counts = _ask_the_stack(stack, queries, by_position, k, MAX_EXCLUDE, frozen, result.outputs, log,
                                    progress)
    compared = [Compared(i, q.user_id, q.item_id, q.hybrid, served[i]) for i, q in enumerate(queries)
                if i in served]
    outcome = agreement(compared, k)
    total_s = time.perf_counter() - started
    return {
        "queries": len(queries), "asked": len(compared), **counts, **outcome.as_dict(),
        "online_model": f"{frozen.name} v{frozen.version}, frozen: {learned_on}",
        "online_weight": weight,
        "in_process_table": in_process.as_json()["rows"],
        "isolation": {"redis": s.redis_url, "topic": s.topic, "dlq": s.dlq_topic, "consumer_group": stack.group,
                      "serve_port": s.serve_port, "stream_metrics_port": s.stream_metrics_port,
                      "mlflow": s.mlflow_uri, "logs": str(s.run_dir)},
        "seconds": {"setup": round(setup_s, 1), "queries": round(total_s - setup_s, 1), "total": round(total_s, 1)},
    }


def _ask_the_stack(stack: Stack, queries: list[Any], by_position: Any, k: int, max_exclude: int, frozen: Any,
                   outputs: Any, log: Callable[[str], None], progress: Callable[[int, int], None] | None
                   ) -> tuple[dict[int, tuple[str, ...]], dict[str, int]]:
    """Start the stream processor and the server in the stack's configuration, then per query: ask (if the replay
    asked and the seen set fits in one request), produce the event, wait until it is applied. Returns the served
    lists by query index and what was not asked."""
    from pipelines.stream.producer import EventProducer
    from tandem.demo import Api, Background, DemoError
    from tandem.topics import ensure_topics

    s = stack.settings
    ensure_topics(s)
    data = stack.env["TANDEM_DATA"]
    tandem = [sys.executable, "-m", "tandem"]
    stream = Background("stream", [*tandem, "stream", "run", "--data", data, "--group", stack.group,
                                   "--linger-ms", "0", "--metrics-port", str(s.stream_metrics_port)],
                        s, stack.env, prefix="through-stack")
    server = Background("server", [*tandem, "serve", "--host", s.serve_host, "--port", str(s.serve_port)], s,
                        stack.env, prefix="through-stack")
    api = Api(s)
    served: dict[int, tuple[str, ...]] = {}
    counts = {"skipped_seen_item": 0, "skipped_exclude_limit": 0}
    try:
        try:
            api.wait_ready(server, READY_TIMEOUT_S)
            stream.check_alive()
        except DemoError as exc:
            raise ThroughStackError(str(exc)) from None
        applied = Applied(s)

        def alive() -> None:
            try:
                stream.check_alive()
            except DemoError as exc:
                raise ThroughStackError(str(exc)) from None

        expected = {"batch": outputs.batch.version if outputs.batch else None, "online": frozen.version}
        with EventProducer(s, linger_ms=0) as producer:
            for i, query in enumerate(queries):
                if not query.hybrid:
                    counts["skipped_seen_item"] += 1  # the replay did not ask either: a miss for every system
                elif len(query.seen) > max_exclude:
                    counts["skipped_exclude_limit"] += 1  # one request cannot exclude them all
                else:
                    served[i] = _recommend(api, query, k, expected)
                event = _event(query, by_position.iloc[query.position])
                future = producer.send(event)
                producer.flush()
                meta = future.get(timeout=30)
                applied.wait(meta.partition, meta.offset, query.user_id, query.event_id, alive)
                if progress and (i + 1) % 100 == 0:
                    progress(i + 1, len(queries))
        if progress:
            progress(len(queries), len(queries))
    finally:
        server.stop()
        stream.stop()
        _drop_topics(s, log)
    return served, counts


def _recommend(api: Any, query: Any, k: int, expected: dict[str, str | None]) -> tuple[str, ...]:
    body = {"user_id": query.user_id, "k": k,
            "context": {"request_time": query.ts, "exclude_item_ids": sorted(query.seen)}}
    status, answer = api.call("POST", "/recommend", body, timeout=30)
    if status != 200:
        raise ThroughStackError(f"POST /recommend for {query.user_id} (query {query.position}) answered {status}: "
                                f"{answer}")
    versions = answer.get("model_versions", {})
    if {"batch": versions.get("batch"), "online": versions.get("online")} != expected:
        raise ThroughStackError(f"the server ranked with batch v{versions.get('batch')} / online "
                                f"v{versions.get('online')}, not the evaluation's v{expected['batch']} / "
                                f"v{expected['online']}")
    if answer.get("degraded"):
        raise ThroughStackError(f"the server answered {query.user_id} degraded ({answer.get('degraded_reasons')}): "
                                "not the ranking the replay measures")
    return tuple(item["item_id"] for item in answer["items"])


def _drop_topics(stack: Settings, log: Callable[[str], None]) -> None:
    """Delete the run's topic and DLQ (best effort: a leftover is named, not fatal). The consumer group's committed
    offsets expire with the broker's offsets retention."""
    try:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, request_timeout_ms=10000)
        try:
            admin.delete_topics([stack.topic, stack.dlq_topic])
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the run's result
        log(f"  could not delete topics {stack.topic} and {stack.dlq_topic}: {exc}")

