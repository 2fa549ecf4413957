"""The event schema: what is accepted, and that every rejection names the problem."""

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from tests.hostile import payloads

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
        (good(value=-1), "must be a finite number in [0, 1e+09]"),
        (good(event_type="rating", value=None), "a rating needs a value"),
        (good(event_type="rating", value=7), "a rating needs a value"),
        ({**good(), "color": "red"}, "unknown field(s) color"),
        (good(event_id="x" * 500), "at most 128 allowed"),
        (good(session_id=""), "session_id: empty or blank string"),
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


# -- hostile input: each shape that once stopped the stream or made /feedback answer 500 -------------------------

@pytest.mark.parametrize(("payload", "kind", "fragment"), [
    (json.dumps(good(value=10**400)).encode(), "bad_value", "an integer of 401 digits"),
    (json.dumps(good())[:-1].encode() + b', "value": ' + b"9" * 5000 + b"}", "bad_json", "4300 digits"),
    (json.dumps(good(ts="0001-01-01T00:00:00+05:00")).encode(), "bad_timestamp", "representable"),
    (json.dumps(good(ts="9999-12-31T23:00:00-05:00")).encode(), "bad_timestamp", "representable"),
    (json.dumps(good())[:-1].encode() + b', "session_id": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep",
     "nested deeper"),
    (json.dumps(good(user_id="u\ud800")).encode(), "bad_id", "lone surrogate"),
    (json.dumps(good(user_id="u\x7f")).encode(), "bad_id", "control character"),
    (json.dumps(good(item_id="i\x85")).encode(), "bad_id", "control character"),
    (json.dumps(good(value=1e12)).encode(), "bad_value", "finite number in [0, 1e+09]"),
    (json.dumps(good(ts="2026-10-31T12:00:00Z" + " " * 60)).encode(), "bad_timestamp", "is not a timestamp"),
    (json.dumps(good(event_type=["click"])).encode(), "unknown_event_type", "list is not one of"),
    (b"[1, 2]", "not_an_object", "expected a JSON object"),
])
def test_hostile_records_are_event_errors_with_a_kind(payload, kind, fragment):
    with pytest.raises(EventError) as info:
        decode_event(payload, now=NOW)
    assert info.value.kind == kind
    assert fragment in str(info.value)


def test_an_error_names_its_field():
    with pytest.raises(EventError) as info:
        validate_event(good(session_id="s\ud800"), now=NOW)
    assert info.value.field == "session_id" and str(info.value).startswith("session_id:")


def test_json_depth_ignores_brackets_inside_strings():
    from tandem.schema import json_depth

    assert json_depth('{"a": "[[[[[[[[[[[[", "b": [[1]]}') == 3
    assert json_depth('{"a": "\\"[[[[[[[[[[[[[[[["}') == 1
    event = decode_event(json.dumps(good(item_id="[" * 100)), now=NOW)
    assert event.item_id == "[" * 100


@settings(max_examples=600, deadline=None)
@given(payloads())
def test_any_record_is_an_event_or_an_event_error_of_the_expected_kind(case):
    payload, expected = case
    try:
        event = decode_event(payload, now=NOW)
    except EventError as exc:
        assert expected == exc.kind, (payload[:200], str(exc))
        json.dumps({"reason": str(exc), "kind": exc.kind})  # a DLQ record can always be written
        return
    assert expected == "valid", payload[:200]
    assert decode_event(event.to_json(), now=NOW) == event  # what the stream accepts round-trips
    for text in (event.event_id, event.user_id, event.item_id, event.session_id or ""):
        text.encode("utf-8")  # and every id can be written to Redis


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_event_error(payload):
    try:
        decode_event(payload, now=NOW)
    except EventError:
        pass
