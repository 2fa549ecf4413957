"""Hostile and valid event payloads, generated: one generator for the stream fuzz, the HTTP fuzz and the unit tests.

Each payload is (bytes, expected) where expected is "valid" for a record the schema accepts and an
EventError kind otherwise; the hostile ones are the shapes that broke tandem before (huge integers,
year-1 and year-9999 timestamps with offsets, deep nesting, lone surrogates, control characters, DEL)
and random junk around them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.schema import MAX_EVENT_BYTES, MAX_ID_LENGTH

NOW = datetime(2026, 11, 1, tzinfo=UTC)

_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
_bad_ids = st.one_of(
    st.just(""), st.just("   "), st.just("u\ud800"), st.just("\udfffx"), st.just("a\x7fb"), st.just("a\x00b"),
    st.just("a\x85b"), st.just("x" * (MAX_ID_LENGTH + 1)), st.integers(), st.lists(st.integers(), max_size=2),
    # high surrogates only: a high one followed by a low one would be a valid pair (one astral character)
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDBFF), min_size=1, max_size=3),
)
_bad_values = st.one_of(
    st.just(10**400), st.just(-(10**400)), st.just(10**30), st.just(-1), st.just(1e300), st.just("cheap"),
    st.just(True), st.lists(st.floats(), max_size=2),
)
_bad_ts = st.one_of(
    st.just("0001-01-01T00:00:00+05:00"), st.just("9999-12-31T23:00:00-05:00"), st.just("1970-01-01T00:00:00Z"),
    st.just("2030-01-01T00:00:00Z"), st.just("2026-10-31T12:00:00"), st.just("yesterday"), st.just("9" * 200),
    st.integers(), st.just(""),
)


@st.composite
def valid_events(draw, now: datetime = NOW) -> dict:
    event_type = draw(st.sampled_from(["view", "click", "add_to_cart", "purchase", "rating"]))
    value = (draw(st.floats(0, 5)) if event_type == "rating"
             else draw(st.one_of(st.none(), st.floats(0, 10_000), st.integers(0, 10_000))))
    seconds = draw(st.integers(0, 30 * 86_400))
    raw = {"event_id": draw(_ids), "user_id": draw(_ids), "item_id": draw(_ids), "event_type": event_type,
           "ts": (now - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")}
    if value is not None:
        raw["value"] = value
    if draw(st.booleans()):
        raw["session_id"] = draw(_ids)
    return raw


def _dumps(doc) -> bytes:
    # ensure_ascii keeps lone surrogates as \\udXXX escapes: the bytes are valid UTF-8, the decoded text is not
    return json.dumps(doc, ensure_ascii=True, allow_nan=True).encode()


def _with_raw(base: dict, field: str, raw_json: str) -> bytes:
    """The event with one more field written as raw JSON text (for values json.dumps cannot or should not make)."""
    text = _dumps({k: v for k, v in base.items() if k != field}).decode()
    return (text[:-1] + f', "{field}": {raw_json}}}').encode()


@st.composite
def hostile_payloads(draw, now: datetime = NOW) -> tuple[bytes, str]:
    """(payload, expected kind): one invalid record of a known shape."""
    base = draw(valid_events(now))
    shape = draw(st.sampled_from(["id", "value", "ts", "deep", "bytes", "junk_json", "field", "type", "oversize",
                                  "not_object", "digits"]))
    if shape == "id":
        field = draw(st.sampled_from(["event_id", "user_id", "item_id", "session_id"]))
        base[field] = draw(_bad_ids)
        return _dumps(base), "bad_id" if isinstance(base[field], str) else "wrong_type"
    if shape == "value":
        value = base["value"] = draw(_bad_values)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return _dumps(base), "bad_value" if numeric else "wrong_type"
    if shape == "ts":
        base["ts"] = draw(_bad_ts)
        return _dumps(base), "bad_timestamp" if isinstance(base["ts"], str) else "wrong_type"
    if shape == "deep":
        depth = draw(st.integers(20, 6000))
        return _with_raw(base, "session_id", "[" * depth + "]" * depth), "too_deep"
    if shape == "bytes":
        return draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b'{"a": "\xed\xa0\x80"}'])), "bad_json"
    if shape == "junk_json":
        return draw(st.sampled_from([b"{", b"", b"null,", b'{"event_id": "x", "user_id": ', b"NaN NaN"])), "bad_json"
    if shape == "field":
        base[draw(st.sampled_from(["colour", "\ud800", "Event_ID"]))] = 1
        return _dumps(base), "unknown_field"
    if shape == "type":
        base["event_type"] = draw(st.one_of(st.just("teleport"), st.integers(), st.just(["click"])))
        return _dumps(base), "unknown_event_type"
    if shape == "oversize":
        base["session_id"] = "s" * (MAX_EVENT_BYTES + 1)
        return _dumps(base), "oversize"
    if shape == "not_object":
        doc = draw(st.one_of(st.integers(-(10**6), 10**6), st.lists(st.integers(), max_size=3), st.text(max_size=5)))
        return _dumps(doc), "not_an_object"
    return _with_raw(base, "value", "9" * 5000), "bad_json"  # past Python's 4,300-digit limit on int()


def valid_payloads(now: datetime = NOW):
    return valid_events(now).map(lambda raw: (_dumps(raw), "valid"))


def payloads(now: datetime = NOW):
    """Valid and hostile records, about half each."""
    return st.one_of(valid_payloads(now), hostile_payloads(now))


def generated(n: int, now: datetime = NOW) -> list[tuple[bytes, str]]:
    """n records of `payloads`, the same ones every run (for tests that send them to a running service)."""
    out: list[tuple[bytes, str]] = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(payloads(now))
    def collect(case):
        out.append(case)

    collect()
    return out
