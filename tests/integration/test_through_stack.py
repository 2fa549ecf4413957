"""`tandem evaluate --through-stack` against the suite's own Redis and Kafka: the in-process replay's lists are the
ones the real stack serves (Kafka → `tandem stream run` → Redis → POST /recommend on `tandem serve`)."""

import shutil
import time
from dataclasses import replace

import pytest
import redis

from models.evaluate import EvaluationConfig
from pipelines.batch.evaluation import evaluate_dataset
from pipelines.dataset import read_events
from pipelines.generate import SIZES, generate_dataset
from tandem.through_stack import evaluate_redis_url, run_through_stack
from tests.dataset_fixture import write_events

QUERIES = 160


@pytest.fixture(scope="module")
def first_interactions(tmp_path_factory):
    """A generated dataset keeping each user's first positive event (click, cart, purchase, rating) with each item,
    so every query after T is one the replay asks (an event about an item the user saw before is a miss for every
    system, never asked)."""
    out = tmp_path_factory.mktemp("data") / "first-interactions"
    generate_dataset(replace(SIZES["demo"], n_users=400, n_items=150, n_events=12_000, days=20), out)
    events = read_events(out).to_pandas()
    events = events[events.event_type != "view"].sort_values(["ts", "event_id"]).drop_duplicates(
        ["user_id", "item_id"])
    shutil.rmtree(out / "events")
    rows = events.to_dict("records")
    for row in rows:
        row["ts"] = row["ts"].to_pydatetime()
        row["value"] = None if row["value"] != row["value"] else row["value"]  # NaN → null
    write_events(out, rows)
    return out


def test_the_stack_serves_the_lists_the_in_process_replay_computes(settings, first_interactions):
    """One batch run as of T; the online model the test replay learned is frozen for both sides (the agreement, not
    the quality, is under test here; `tandem evaluate --through-stack` freezes the validation replay's)."""
    result = evaluate_dataset(settings, first_interactions, EvaluationConfig(online_weight=1.0,
                                                                             online_update_every=200))
    assert result.online_model is not None
    own_db = redis.Redis.from_url(settings.redis_url)
    marker = f"through-stack-test-{id(result)}"
    own_db.set(marker, "untouched")
    try:
        stack = run_through_stack(settings, first_interactions, result, QUERIES, online_model=result.online_model,
                                  learned_on="the test replay (prequential, after T)")
        assert own_db.get(marker) == b"untouched"  # the user's own store is not the one flushed
    finally:
        own_db.delete(marker)
    print(f"\nthrough the stack: {stack['identical']} of {stack['asked']} lists identical ({stack['share']:.2%}); "
          f"NDCG@10 {stack['through_stack_ndcg@10']:.4f} vs {stack['in_process_ndcg@10']:.4f} in-process; "
          f"{stack['seconds']}")
    assert stack["queries"] == QUERIES and stack["skipped_seen_item"] == 0
    assert stack["asked"] + stack["skipped_exclude_limit"] == QUERIES and stack["asked"] >= 150
    assert stack["share"] >= 0.99, stack["first_disagreements"]
    assert stack["through_stack_hitrate@10"] == pytest.approx(stack["in_process_hitrate@10"], abs=0.01)
    assert stack["through_stack_ndcg@10"] == pytest.approx(stack["in_process_ndcg@10"], abs=0.01)
    assert stack["isolation"]["redis"] == evaluate_redis_url(settings.redis_url) != settings.redis_url
    assert stack["isolation"]["topic"] != settings.topic and stack["isolation"]["serve_port"] != settings.serve_port
    assert stack["isolation"]["mlflow"].startswith("sqlite:///") and stack["isolation"]["mlflow"] != settings.mlflow_uri
    # the topic and its DLQ are deleted afterwards (the broker deletes asynchronously)
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        deadline = time.monotonic() + 30
        while {stack["isolation"]["topic"], stack["isolation"]["dlq"]} & set(admin.list_topics()):
            assert time.monotonic() < deadline, "the through-stack topics were not deleted"
            time.sleep(0.5)
    finally:
        admin.close()
