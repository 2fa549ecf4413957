"""No record stops the stream, nothing is lost, nothing counts twice — against real Kafka, Redis and Feast.

* every shape of record that once stopped `tandem stream run` for good, between valid events;
* a property-based fuzz: ten thousand generated hostile and valid records, re-sent duplicates and
  records a producer did not key by user, through a running processor;
* a record that passes validation but breaks the Redis write is set aside, the rest of its batch applied.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from kafka import KafkaConsumer, TopicPartition

from pipelines.stream.producer import EventProducer
from tandem.schema import Event, decode_event
from tests.hostile import generated
from tests.integration.stream.conftest import (
    InProcessProcessor,
    applied_total,
    assert_matches_log,
    make_catalog,
    make_events,
    start_processor,
    write_dataset,
)


def _dlq_records(settings) -> list[dict]:
    consumer = KafkaConsumer(settings.dlq_topic, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=None)
    records = [json.loads(r.value) for r in consumer]
    consumer.close()
    return records


def _topic_end(settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    tps = [TopicPartition(settings.topic, p) for p in range(settings.kafka_partitions)]
    end = sum(consumer.end_offsets(tps).values())
    consumer.close()
    return end


def _wait_drained(settings, timeout: float, procs=()) -> None:
    """Until every record of the topic, re-keyed copies included, is applied (and stays so for a second)."""
    deadline = time.monotonic() + timeout
    settled = 0
    while settled < 2:
        for p in procs:
            assert p.poll() is None, f"processor exited with {p.returncode}"
        assert time.monotonic() < deadline, f"{applied_total(settings)} of {_topic_end(settings)} records applied"
        settled = settled + 1 if applied_total(settings) == _topic_end(settings) else 0
        time.sleep(0.5)


def _hostile_by_hand(user: str) -> dict[str, bytes]:
    """The records that each made the processor exit 1 on every restart, and their kinds."""
    good = Event(event_id="h", user_id=user, item_id="i", event_type="click", ts=datetime.now(UTC)).to_dict()
    text = json.dumps(good)[:-1]
    return {
        "bad_value": json.dumps({**good, "value": 10**401}).encode(),  # 401 digits: float() overflows
        "bad_json": (text + ', "value": ' + "9" * 5000 + "}").encode(),  # past int()'s 4,300 digits
        "bad_timestamp": json.dumps({**good, "ts": "0001-01-01T00:00:00+05:00"}).encode(),
        "bad_timestamp ": json.dumps({**good, "ts": "9999-12-31T23:00:00-05:00"}).encode(),
        "too_deep": (text + ', "session_id": ' + "[" * 5000 + "]" * 5000 + "}").encode(),  # 10 KB, RecursionError
        "bad_id": json.dumps({**good, "user_id": "u\ud800"}).encode(),  # a lone surrogate: Redis cannot encode it
        "bad_id ": json.dumps({**good, "user_id": "u\x7f"}).encode(),
    }


def test_records_that_once_stopped_the_processor_go_to_the_dlq(stream_settings, feature_store, tmp_path):
    prefix = f"hx{uuid.uuid4().hex[:6]}"
    events = make_events(prefix, 300, n_users=3, n_items=10)
    catalog = make_catalog(prefix, 10)
    data = write_dataset(tmp_path / "data", catalog)
    key = events[0].user_id.encode()  # one key: the bad records sit between valid ones of one partition
    bad = _hostile_by_hand(key.decode())
    with EventProducer(stream_settings) as producer:
        for i, event in enumerate(events):
            producer.send(event)
            if i % 40 == 20 and bad:
                producer.send_raw(bad.pop(next(iter(bad))), key=key)
        producer.flush()
    assert not bad
    proc = start_processor(stream_settings, data, tmp_path / "run.log", f"g-{prefix}")
    try:
        _wait_drained(stream_settings, timeout=120, procs=[proc])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    kinds = sorted(r["kind"] for r in _dlq_records(stream_settings))
    assert kinds == sorted(k.strip() for k in _hostile_by_hand("u"))
    assert_matches_log(feature_store, events, catalog)


def test_fuzz_ten_thousand_records_through_a_running_processor(stream_settings, feature_store, tmp_path):
    prefix = f"fz{uuid.uuid4().hex[:6]}"
    cases = generated(10_500, now=datetime.now(UTC) - timedelta(hours=1))
    assert len(cases) >= 10_000
    rng = random.Random(prefix)
    catalog: dict[str, str] = {}
    valid: list[Event] = []
    sends: list[tuple[bytes, bytes | None, str]] = []  # (payload, key, expected kind or "valid")
    for n, (payload, expected) in enumerate(cases):
        if expected == "valid":
            # own ids, so this test's users and items are its own and every event_id is unique
            raw = json.loads(payload)
            raw.update(event_id=f"{prefix}-{n}", user_id=f"{prefix}-u{rng.randrange(300)}",
                       item_id=f"{prefix}-i{rng.randrange(80)}")
            payload = json.dumps(raw).encode()
            event = decode_event(payload)
            valid.append(event)
            catalog[event.item_id] = f"c{sum(map(ord, event.item_id)) % 5}"
            # a producer that does not key by user, or keys by something else, now and then
            key = rng.choice([event.user_id.encode()] * 3 + [None, b"not-the-user"])
            sends.append((payload, key, "valid"))
            if rng.random() < 0.05:  # re-sent byte for byte: counts once
                sends.append((payload, key, "valid"))
        else:
            sends.append((payload, rng.choice([None, b"k"]), expected))
    hostile = [s for s in sends if s[2] != "valid"]
    assert len(hostile) >= 3_000 and len(valid) >= 3_000
    data = write_dataset(tmp_path / "data", catalog)
    located: dict[tuple[int, int], str] = {}
    with EventProducer(stream_settings) as producer:
        futures = [(producer.send_raw(payload, key=key), expected) for payload, key, expected in sends]
        producer.flush()
        for future, expected in futures:
            meta = future.get(timeout=30)
            located[(meta.partition, meta.offset)] = expected
    proc = start_processor(stream_settings, data, tmp_path / "run.log", f"g-{prefix}", "--max-batch", "500")
    try:
        _wait_drained(stream_settings, timeout=300, procs=[proc])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    dlq = _dlq_records(stream_settings)
    got = {(r["partition"], r["offset"]): r["kind"] for r in dlq}
    expected_dlq = {at: kind for at, kind in located.items() if kind != "valid"}
    assert len(dlq) == len(got), "a record went to the DLQ twice"
    wrong = {at: (got.get(at), kind) for at, kind in expected_dlq.items() if got.get(at) != kind}
    assert not wrong, f"{len(wrong)} of {len(expected_dlq)} hostile records not in the DLQ as expected, " \
                      f"e.g. {list(wrong.items())[:5]}"
    assert set(got) == set(expected_dlq), "a valid record went to the DLQ"
    print(f"fuzz: {len(sends)} records sent ({len(valid)} valid, {len(sends) - len(valid) - len(hostile)} re-sent, "
          f"{len(hostile)} hostile: {dict(Counter(k for *_, k in hostile))}); {len(dlq)} in the DLQ; "
          f"{_topic_end(stream_settings) - len(sends)} re-keyed")
    assert _topic_end(stream_settings) > len(sends), "no record needed re-keying: the test lost its point"
    assert_matches_log(feature_store, valid, catalog)


def test_a_record_that_breaks_the_redis_write_is_set_aside(stream_settings, feature_store):
    """A catalogue category that cannot be encoded breaks the write of its item's events (here the only
    events of their user): they go to the DLQ as `unapplicable`; every other event of their micro-batches
    is applied."""
    prefix = f"ua{uuid.uuid4().hex[:6]}"
    events = make_events(prefix, 600, n_users=20, n_items=12)
    catalog = make_catalog(prefix, 12)
    poisoned, victim = f"{prefix}-poison", f"{prefix}-victim"
    set_aside = [Event(event_id=f"{prefix}-p{n}", user_id=victim, item_id=poisoned, event_type="click",
                       ts=events[100 * n].ts) for n in range(6)]
    broken = {**catalog, poisoned: "bad\ud800category"}  # no parquet can hold this; a dict can
    with EventProducer(stream_settings) as producer:
        for n, event in enumerate(events):
            producer.send(event)
            if n % 100 == 0:
                producer.send(set_aside[n // 100])
        producer.flush()
    with InProcessProcessor(stream_settings, catalog=broken, max_batch=200) as processor:
        _wait_drained(stream_settings, timeout=120)
        assert not processor._stop.is_set()
    dlq = _dlq_records(stream_settings)
    assert sorted(r["kind"] for r in dlq) == ["unapplicable"] * len(set_aside)
    assert all("UnicodeEncodeError" in r["reason"] for r in dlq), dlq[0]
    assert {json.loads(r["payload"])["event_id"] for r in dlq} == {e.event_id for e in set_aside}
    assert_matches_log(feature_store, events, catalog)


def test_re_sent_and_unkeyed_events_count_once(stream_settings, feature_store):
    """A producer's byte-identical re-sends count once in item trending as in user features, and events sent
    without a key (so in any partition) still fold into one correct state per user."""
    prefix = f"rk{uuid.uuid4().hex[:6]}"
    events = make_events(prefix, 2_000, n_users=40, n_items=30)
    catalog = make_catalog(prefix, 30)
    rng = random.Random(prefix)
    with EventProducer(stream_settings) as producer:
        for event in events:
            key = None if rng.random() < 0.3 else event.user_id.encode()
            for _ in range(2 if rng.random() < 0.15 else 1):
                producer.send_raw(event.to_json(), key=key)
        producer.flush()
    with InProcessProcessor(stream_settings, catalog=catalog, max_batch=300) as processor:
        _wait_drained(stream_settings, timeout=120)
        rekeyed = processor.metrics.events.labels("rekeyed")._value.get()
    assert _dlq_records(stream_settings) == []
    assert_matches_log(feature_store, events, catalog)
    assert rekeyed > 0, "no event needed re-keying: the test lost its point"
