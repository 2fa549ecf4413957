"""Malformed input goes to the DLQ with its reason without stopping the processor; a click is visible fast."""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from kafka import KafkaConsumer

from pipelines.stream.producer import EventProducer
from tandem.schema import MAX_EVENT_BYTES, Event
from tests.integration.stream.conftest import (
    InProcessProcessor,
    assert_matches_log,
    make_catalog,
    make_events,
    online_features,
    wait_applied,
)


def _malformed(user_key: bytes) -> dict[str, bytes]:
    now = datetime.now(UTC)
    good = Event(event_id="x", user_id=user_key.decode(), item_id="i", event_type="click", ts=now).to_dict()
    return {
        "bad_json": b'{"event_id": "x", "user_id": ',
        "missing_field": json.dumps({k: v for k, v in good.items() if k != "item_id"}).encode(),
        "wrong_type": json.dumps({**good, "value": "cheap"}).encode(),
        "unknown_event_type": json.dumps({**good, "event_type": "teleport"}).encode(),
        "bad_timestamp": json.dumps({**good, "ts": (now + timedelta(days=400)).isoformat()}).encode(),
        "oversize": json.dumps({**good, "session_id": "s" * (MAX_EVENT_BYTES + 10)}).encode(),
        "unknown_field": json.dumps({**good, "colour": "red"}).encode(),
    }


def test_malformed_events_go_to_dlq_with_reason(stream_settings, feature_store):
    prefix = f"dlq{uuid.uuid4().hex[:6]}"
    events = make_events(prefix, 400, n_users=3, n_items=10)
    catalog = make_catalog(prefix, 10)
    key = events[0].user_id.encode()  # same key: the bad records sit between valid ones in one partition
    bad = _malformed(key)
    with EventProducer(stream_settings) as producer:
        for i, event in enumerate(events):
            producer.send(event)
            if i % 50 == 25 and bad:
                kind = next(iter(bad))
                producer.send_raw(bad.pop(kind), key=key)
        producer.flush()
    assert not bad
    total = 400 + 7
    with InProcessProcessor(stream_settings, catalog=catalog) as processor:
        wait_applied(stream_settings, total, timeout=60)
        assert not processor._stop.is_set()
    dlq = KafkaConsumer(stream_settings.dlq_topic, bootstrap_servers=stream_settings.kafka_bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None)
    records = [json.loads(r.value) for r in dlq]
    dlq.close()
    assert sorted(r["kind"] for r in records) == sorted(_malformed(key))
    reasons = {r["kind"]: r["reason"] for r in records}
    assert "not valid JSON" in reasons["bad_json"]
    assert reasons["missing_field"] == "item_id: missing (required)"
    assert "value: expected a number, got str" in reasons["wrong_type"]
    assert "'teleport' is not one of" in reasons["unknown_event_type"]
    assert "outside the accepted range" in reasons["bad_timestamp"]
    assert f"at most {MAX_EVENT_BYTES} allowed" in reasons["oversize"]
    assert "unknown field(s) colour" in reasons["unknown_field"]
    assert all(r["topic"] == stream_settings.topic and r["offset"] >= 0 and r["key"] == key.decode()
               for r in records)
    assert_matches_log(feature_store, events, catalog)


def test_click_visible_in_feast_within_a_second(stream_settings, feature_store):
    prefix = f"fr{uuid.uuid4().hex[:6]}"
    user = f"{prefix}-u"
    with InProcessProcessor(stream_settings, catalog={}) as processor, EventProducer(stream_settings) as producer:
        # the promise is for a processor at work: wait until one click has gone all the way through (a join, and
        # a rebalance right after it that has to be waited out, are not part of the freshness being measured)
        warm = f"{prefix}-warm"
        producer.send(Event(event_id=f"{prefix}-0", user_id=warm, item_id=f"{prefix}-w", event_type="click",
                            ts=datetime.now(UTC)))
        producer.flush()
        wait_applied(stream_settings, 1, timeout=90)
        deadline = time.monotonic() + 60
        steady_since = time.monotonic()
        while time.monotonic() - steady_since < 2.0:  # and has held every partition for 2 s
            if len(processor.partitions) < stream_settings.kafka_partitions:
                steady_since = time.monotonic()
            assert time.monotonic() < deadline, "the processor did not keep its partitions for 2 s in 60 s"
            time.sleep(0.05)
        for n, item in enumerate((f"{prefix}-a", f"{prefix}-b"), start=1):
            click = Event(event_id=f"{prefix}-{n}", user_id=user, item_id=item, event_type="click",
                          ts=datetime.now(UTC))
            sent = time.monotonic()
            producer.send(click)
            producer.flush()
            while True:
                row = online_features(feature_store, "user_session_v1", "user_id", [user])[user]
                if row["last_item_ids"] and row["last_item_ids"][0] == item:
                    break
                assert time.monotonic() - sent < 1.0, f"click {n} not visible through Feast after 1 s: {row}"
                time.sleep(0.01)
            assert row["session_clicks"] == n
            assert time.monotonic() - sent < 1.0
