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
# a price or any other value above this is a unit mistake or an attack, not a purchase
MAX_VALUE = 1e9
# events older than this or further in the future than MAX_FUTURE are rejected as absurd
EARLIEST_TS = datetime(1995, 1, 1, tzinfo=UTC)
MAX_FUTURE = timedelta(days=1)
MAX_TS_CHARS = 64
# an event is one flat JSON object; anything nested deeper than this is refused before it is parsed
MAX_JSON_DEPTH = 8

# the hot path of the stream validates every id: one regex for every character an id must not hold —
# C0 and C1 control characters, DEL, and lone surrogates (which cannot be encoded as UTF-8)
_FORBIDDEN_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class EventError(ValueError):
    """An input that does not fit the schema; the message says what and why.

    `field` names the offending field (None for the payload as a whole) and `kind` is a short, stable
    label for dashboards and the DLQ (`bad_json`, `too_deep`, `oversize`, `not_an_object`, `unknown_field`,
    `missing_field`, `wrong_type`, `bad_id`, `unknown_event_type`, `bad_value`, `bad_timestamp`).
    """

    def __init__(self, message: str, kind: str = "invalid", field: str | None = None):
        super().__init__(message)
        self.kind = kind
        self.field = field


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


def parse_ts(raw: Any, name: str = "ts") -> datetime:
    """An ISO-8601 string (or an aware datetime) with a timezone as a UTC datetime; EventError otherwise."""
    if isinstance(raw, datetime):
        ts = raw
    elif isinstance(raw, str):
        if len(raw) > MAX_TS_CHARS:
            raise EventError(f"{name}: {len(raw)} characters is not a timestamp "
                             "(expected ISO-8601, e.g. 2026-01-31T12:00:00Z)", "bad_timestamp", name)
        try:
            ts = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise EventError(f"{name}: {raw!r} is not an ISO-8601 timestamp (expected e.g. 2026-01-31T12:00:00Z)",
                             "bad_timestamp", name) from None
    else:
        raise EventError(f"{name}: expected an ISO-8601 string, got {type(raw).__name__}", "wrong_type", name)
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise EventError(f"{name}: {raw!r} has no timezone (expected UTC, e.g. 2026-01-31T12:00:00Z)",
                         "bad_timestamp", name)
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 or 9999-12-31T23:00:00-05:00: no UTC time exists
        raise EventError(f"{name}: {raw!r} is outside the range of representable UTC times",
                         "bad_timestamp", name) from None


def check_id(name: str, raw: Any, required: bool = True) -> str | None:
    """The one rule for ids (event, user, item, session): a non-blank string of at most MAX_ID_LENGTH
    characters, with no control characters and no lone surrogates (so it is valid UTF-8)."""
    if raw is None:
        if required:
            raise EventError(f"{name}: missing (required)", "missing_field", name)
        return None
    if not isinstance(raw, str):
        raise EventError(f"{name}: expected a string, got {type(raw).__name__}", "wrong_type", name)
    if len(raw) > MAX_ID_LENGTH:
        raise EventError(f"{name}: {len(raw)} characters, at most {MAX_ID_LENGTH} allowed", "bad_id", name)
    if not raw.strip():
        raise EventError(f"{name}: empty or blank string", "bad_id", name)
    bad = _FORBIDDEN_ID_CHARS.search(raw)
    if bad:
        what = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise EventError(f"{name}: contains {what} (U+{ord(bad.group()):04X} at position {bad.start()})",
                         "bad_id", name)
    return raw


def check_value(raw: Any, event_type: str | None = None) -> float | None:
    """`value`: absent, or a finite number in [0, MAX_VALUE]; a rating needs one in RATING_RANGE."""
    value = raw
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EventError(f"value: expected a number, got {type(value).__name__}", "wrong_type", "value")
        # float() of a 400-digit integer overflows: compare integers as integers first
        if isinstance(value, int) and not 0 <= value <= MAX_VALUE:
            shown = str(value) if abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
            raise EventError(f"value: {shown} must be a finite number in [0, {MAX_VALUE:g}]", "bad_value", "value")
        value = float(value)
        if not math.isfinite(value) or not 0 <= value <= MAX_VALUE:
            raise EventError(f"value: {value!r} must be a finite number in [0, {MAX_VALUE:g}]", "bad_value", "value")
    if event_type == "rating":
        lo, hi = RATING_RANGE
        if value is None or not lo <= value <= hi:
            raise EventError(f"value: a rating needs a value in [{lo}, {hi}], got {value!r}", "bad_value", "value")
    return value


def validate_event(raw: dict[str, Any], now: datetime | None = None) -> Event:
    """Check one event (as decoded JSON) against the schema; raise EventError naming the problem."""
    if not isinstance(raw, dict):
        raise EventError(f"expected a JSON object, got {type(raw).__name__}", "not_an_object")
    unknown = sorted(set(raw) - set(EVENT_FIELDS))
    if unknown:
        shown = ", ".join(u[:40] for u in unknown[:5])
        raise EventError(f"unknown field(s) {shown}; expected only {', '.join(EVENT_FIELDS)}", "unknown_field")
    for name in REQUIRED_FIELDS:
        if raw.get(name) is None:
            raise EventError(f"{name}: missing (required)", "missing_field", name)
    event_id = check_id("event_id", raw["event_id"])
    user_id = check_id("user_id", raw["user_id"])
    item_id = check_id("item_id", raw["item_id"])
    session_id = check_id("session_id", raw.get("session_id"), required=False)
    event_type = raw["event_type"]
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        shown = repr(event_type)[:40] if isinstance(event_type, str) else type(event_type).__name__
        raise EventError(f"event_type: {shown} is not one of {', '.join(EVENT_TYPES)}", "unknown_event_type",
                         "event_type")
    value = check_value(raw.get("value"), event_type)
    ts = parse_ts(raw["ts"])
    now = now or datetime.now(UTC)
    if ts < EARLIEST_TS or ts > now + MAX_FUTURE:
        raise EventError(f"ts: {format_ts(ts)} is outside the accepted range "
                         f"[{format_ts(EARLIEST_TS)}, now + {MAX_FUTURE}]", "bad_timestamp", "ts")
    return Event(
        event_id=event_id,  # type: ignore[arg-type]
        user_id=user_id,  # type: ignore[arg-type]
        item_id=item_id,  # type: ignore[arg-type]
        event_type=event_type,
        ts=ts,
        value=value,
        session_id=session_id,
    )


def json_depth(text: str) -> int:
    """How deeply arrays/objects nest in a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def decode_json(payload: bytes | str, limit: int = MAX_EVENT_BYTES) -> Any:
    """A JSON payload of at most `limit` bytes and MAX_JSON_DEPTH levels, decoded; EventError otherwise."""
    size = len(payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload)
    if size > limit:
        raise EventError(f"payload is {size} bytes, at most {limit} allowed", "oversize")
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray, memoryview)) else payload
    except UnicodeDecodeError as exc:
        raise EventError(f"not valid JSON: the payload is not UTF-8 ({exc.reason} at byte {exc.start})",
                         "bad_json") from None
    # counting brackets is cheap; the exact scan runs only when there are enough of them to matter
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
        raise EventError(f"not valid JSON for an event: nested deeper than {MAX_JSON_DEPTH} levels", "too_deep")
    try:
        return json.loads(text)
    except RecursionError:
        raise EventError(f"not valid JSON for an event: nested deeper than {MAX_JSON_DEPTH} levels",
                         "too_deep") from None
    except ValueError as exc:  # JSONDecodeError, and the 4,300-digit limit on integers
        raise EventError(f"not valid JSON: {exc}", "bad_json") from None


def lone_surrogate_at(doc: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in decoded JSON that holds a lone surrogate, else None.

    Python's json accepts a "\\ud800" escape; strict parsers (pydantic's among them) refuse the whole body
    without saying where, so the HTTP boundary asks this first to name the field.
    """
    if isinstance(doc, str):
        return path or "body" if _LONE_SURROGATE.search(doc) else None
    if isinstance(doc, dict):
        for key, value in doc.items():
            inner = f"{path}.{key}" if path else str(key)
            if _LONE_SURROGATE.search(key):
                return path or "body"
            found = lone_surrogate_at(value, inner)
            if found:
                return found
    elif isinstance(doc, list):
        for n, value in enumerate(doc):
            found = lone_surrogate_at(value, f"{path}[{n}]")
            if found:
                return found
    return None


# what only a full decode can judge: a lone-surrogate escape, an integer past int()'s 4,300 digits
_JSON_HAZARD = re.compile(rb"\\u[dD][89a-fA-F]|[0-9]{4300}")


def json_needs_checks(payload: bytes) -> bool:
    """False when `decode_json` and `lone_surrogate_at` cannot find anything wrong that a strict JSON parser
    would not name itself: no deep nesting, no lone-surrogate escape, no huge integer (a cheap scan)."""
    return payload.count(b"[") + payload.count(b"{") > MAX_JSON_DEPTH or _JSON_HAZARD.search(payload) is not None


def decode_event(payload: bytes | str, now: datetime | None = None) -> Event:
    """Decode a Kafka/HTTP payload into a valid Event, or raise EventError with the reason."""
    return validate_event(decode_json(payload), now=now)


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
        raise EventError(f"missing column(s) {', '.join(missing)}; expected {', '.join(EVENT_FIELDS)}",
                         "missing_field")
    try:
        return table.select(list(EVENT_FIELDS)).cast(EVENT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise EventError(f"columns do not match the event schema: {exc}", "wrong_type") from None
