"""The event schema: what is accepted, and that every rejection names the problem."""

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from tandem.schema import (
    EVENT_FIELDS,
    EVENT_SCHEMA,
    MAX_EVENT_BYTES,
    Event,
    EventError,
    conform_events,
    decode_event,
    events_table,
    validate_event,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def good(**overrides):
    raw = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "event_type": "click",
           "value": None, "ts": "2026-10-31T12:00:00Z", "session_id": "s1"}
    raw.update(overrides)
    return raw


def test_valid_event_round_trips_through_json():
    event = validate_event(good(value=3.5, event_type="purchase"), now=NOW)
    assert event.ts == datetime(2026, 10, 31, 12, tzinfo=UTC)
    again = decode_event(event.to_json(), now=NOW)
    assert again == event


def test_optional_fields_may_be_absent():
    raw = good()
    del raw["value"], raw["session_id"]
    event = validate_event(raw, now=NOW)
    assert event.value is None and event.session_id is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (good(event_type="like"), "event_type: 'like' is not one of"),
        (good(user_id=None), "user_id: missing"),
        (good(item_id=42), "item_id: expected a string, got int"),
        (good(ts="yesterday"), "not an ISO-8601 timestamp"),
        (good(ts="2026-10-31T12:00:00"), "has no timezone"),
        (good(ts="1970-01-01T00:00:00Z"), "outside the accepted range"),
        (good(ts="2030-01-01T00:00:00Z"), "outside the accepted range"),
        (good(value="cheap"), "value: expected a number, got str"),
        (good(value=float("nan")), "must be a finite number"),
        (good(value=-1), "must be a finite number >= 0"),
        (good(event_type="rating", value=None), "a rating needs a value"),
        (good(event_type="rating", value=7), "a rating needs a value"),
        ({**good(), "color": "red"}, "unknown field(s) color"),
        (good(event_id="x" * 500), "at most 128 allowed"),
        (good(session_id=""), "session_id: empty string"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_invalid_events_name_the_problem(raw, fragment):
    with pytest.raises(EventError, match=None) as info:
        validate_event(raw, now=NOW)
    assert fragment in str(info.value)


def test_decode_rejects_bad_json_and_oversize_payloads():
    with pytest.raises(EventError, match="not valid JSON"):
        decode_event(b"{not json", now=NOW)
    with pytest.raises(EventError, match="not valid JSON"):
        decode_event(b"\xff\xfe", now=NOW)
    big = json.dumps(good(session_id="s" * (MAX_EVENT_BYTES + 1)))
    with pytest.raises(EventError, match="bytes, at most"):
        decode_event(big, now=NOW)


def test_events_table_has_the_canonical_schema():
    events = [validate_event(good(event_id=f"e{i}"), now=NOW) for i in range(3)]
    table = events_table(events)
    assert table.schema == EVENT_SCHEMA
    assert table.column("event_id").to_pylist() == ["e0", "e1", "e2"]


def test_conform_events_casts_and_names_missing_columns():
    ts = pa.array([datetime(2026, 1, 1, tzinfo=UTC)], type=pa.timestamp("ns", tz="UTC"))
    table = pa.table({"event_id": ["e"], "user_id": ["u"], "item_id": ["i"], "event_type": ["view"],
                      "value": pa.array([None], type=pa.float32()), "ts": ts, "session_id": ["s"], "extra": [1]})
    conformed = conform_events(table)
    assert conformed.schema == EVENT_SCHEMA and conformed.column_names == list(EVENT_FIELDS)
    with pytest.raises(EventError, match="missing column\\(s\\) ts"):
        conform_events(table.drop_columns(["ts"]))


def test_event_dataclass_defaults():
    e = Event("e", "u", "i", "view", NOW - timedelta(hours=1))
    assert e.to_dict()["ts"].endswith("Z")
