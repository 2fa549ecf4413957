"""The event schema, defined once.

The generator, the MovieLens adapter, the Spark jobs, the stream processor, the
GX suites and the HTTP API all derive what they need from here: the pyarrow
schema for parquet, the field list, the allowed event types and the checks an
incoming event must pass.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
# events that say "the user wanted this item"; views are exposure, not intent
POSITIVE_EVENT_TYPES: tuple[str, ...] = ("click", "add_to_cart", "purchase", "rating")

TS_TYPE = pa.timestamp("us", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=True),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("session_id", pa.string(), nullable=True),
    ]
)
EVENT_FIELDS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in EVENT_SCHEMA if not f.nullable)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=True),
        pa.field("created_ts", TS_TYPE, nullable=False),
        pa.field("title", pa.string(), nullable=True),
    ]
)

USER_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("signup_ts", TS_TYPE, nullable=False),
    ]
)

MAX_ID_LENGTH = 128
MAX_EVENT_BYTES = 16 * 1024
RATING_RANGE = (0.0, 5.0)
# events older than this or further in the future than MAX_FUTURE are rejected as absurd
EARLIEST_TS = datetime(1995, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)


_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")  # a regex: the stream validates every event, this is its hot path


class EventError(ValueError):
    """An event that does not fit the schema; the message says what and why."""


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: datetime
    value: float | None = None
    session_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ts"] = format_ts(self.ts)
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_ts(raw: Any) -> datetime:
    if isinstance(raw, datetime):
        ts = raw
    elif isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise EventError(f"ts: {raw!r} is not an ISO-8601 timestamp (expected e.g. 2026-01-31T12:00:00Z)") from None
    else:
        raise EventError(f"ts: expected an ISO-8601 string, got {type(raw).__name__}")
    if ts.tzinfo is None:
        raise EventError(f"ts: {raw!r} has no timezone (expected UTC, e.g. 2026-01-31T12:00:00Z)")
    return ts.astimezone(UTC)


def _check_id(name: str, raw: Any, required: bool) -> str | None:
    if raw is None:
        if required:
            raise EventError(f"{name}: missing (required)")
        return None
    if not isinstance(raw, str):
        raise EventError(f"{name}: expected a string, got {type(raw).__name__}")
    if not raw.strip():
        raise EventError(f"{name}: empty string")
    if len(raw) > MAX_ID_LENGTH:
        raise EventError(f"{name}: {len(raw)} characters, at most {MAX_ID_LENGTH} allowed")
    if _CONTROL_CHARS.search(raw):
        raise EventError(f"{name}: contains control characters")
    return raw


def validate_event(raw: dict[str, Any], now: datetime | None = None) -> Event:
    """Check one event (as decoded JSON) against the schema; raise EventError naming the problem."""
    if not isinstance(raw, dict):
        raise EventError(f"expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(EVENT_FIELDS))
    if unknown:
        raise EventError(f"unknown field(s) {', '.join(unknown)}; expected only {', '.join(EVENT_FIELDS)}")
    for name in REQUIRED_FIELDS:
        if raw.get(name) is None:
            raise EventError(f"{name}: missing (required)")
    event_id = _check_id("event_id", raw["event_id"], True)
    user_id = _check_id("user_id", raw["user_id"], True)
    item_id = _check_id("item_id", raw["item_id"], True)
    session_id = _check_id("session_id", raw.get("session_id"), False)
    event_type = raw["event_type"]
    if event_type not in EVENT_TYPES:
        raise EventError(f"event_type: {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
    value = raw.get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EventError(f"value: expected a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise EventError(f"value: {value!r} must be a finite number >= 0")
    if event_type == "rating":
        lo, hi = RATING_RANGE
        if value is None or not lo <= value <= hi:
            raise EventError(f"value: a rating needs a value in [{lo}, {hi}], got {value!r}")
    ts = _parse_ts(raw["ts"])
    now = now or datetime.now(UTC)
    if ts < EARLIEST_TS or ts > now + MAX_FUTURE:
        raise EventError(f"ts: {format_ts(ts)} is outside the accepted range "
                         f"[{format_ts(EARLIEST_TS)}, now + {MAX_FUTURE}]")
    return Event(
        event_id=event_id,  # type: ignore[arg-type]
        user_id=user_id,  # type: ignore[arg-type]
        item_id=item_id,  # type: ignore[arg-type]
        event_type=event_type,
        ts=ts,
        value=value,
        session_id=session_id,
    )


def decode_event(payload: bytes | str, now: datetime | None = None) -> Event:
    """Decode a Kafka/HTTP payload into a valid Event, or raise EventError with the reason."""
    size = len(payload.encode() if isinstance(payload, str) else payload)
    if size > MAX_EVENT_BYTES:
        raise EventError(f"payload is {size} bytes, at most {MAX_EVENT_BYTES} allowed")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    return validate_event(raw, now=now)


def events_table(events: list[Event]) -> pa.Table:
    """A list of events as an Arrow table with the canonical schema."""
    cols: dict[str, list[Any]] = {name: [] for name in EVENT_FIELDS}
    for e in events:
        for name in EVENT_FIELDS:
            cols[name].append(getattr(e, name))
    return pa.table(cols, schema=EVENT_SCHEMA)


def conform_events(table: pa.Table) -> pa.Table:
    """Cast a table to the canonical event schema, or raise EventError naming the mismatch."""
    missing = [n for n in EVENT_FIELDS if n not in table.column_names]
    if missing:
        raise EventError(f"missing column(s) {', '.join(missing)}; expected {', '.join(EVENT_FIELDS)}")
    try:
        return table.select(list(EVENT_FIELDS)).cast(EVENT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise EventError(f"columns do not match the event schema: {exc}") from None
