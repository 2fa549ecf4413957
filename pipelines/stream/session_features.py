"""Session and trending feature math, as pure functions over events.

The stream processor folds each micro-batch into per-user and per-item state with
these functions; `features_from_log` folds a whole log in one go with the same
functions. Every feature is defined by *event time*, never arrival time, and is a
function of the set of events seen (not of their order), so late and out-of-order
events land where they belong and a crash-and-replay gives what one clean pass gives:

* a user's features are computed as of the user's latest event time L over the events
  with ts in [L - USER_HORIZON, L] (at most USER_MAX_EVENTS of them, the newest),
  de-duplicated by event_id;
* an item's features are computed as of the item's latest event time over one-minute
  buckets covering the last ITEM_WINDOW_MINUTES minutes, each event_id counted once.

The stream de-duplicates item counts through the user's state: an event counts for its item
when it is new to its user's state (`fresh_entries`), so a re-sent event counts once as long as
its user's state still holds it — the user's last USER_HORIZON_S of event time, at most
USER_MAX_EVENTS events, which covers the item window for all but users with more than
USER_MAX_EVENTS events in it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tandem.schema import POSITIVE_EVENT_TYPES, Event

SESSION_GAP_S = 30 * 60  # a gap longer than this starts a new session
USER_HORIZON_S = 4 * 3600  # how far back (event time) user state reaches; sessions are capped at this
USER_MAX_EVENTS = 200  # newest events a user's state keeps; counts saturate here
LAST_ITEMS = 10
SHORT_WINDOW_S = 5 * 60
LONG_WINDOW_S = 60 * 60
ITEM_BUCKET_S = 60
ITEM_WINDOW_MINUTES = 60
ITEM_SHORT_MINUTES = 5
TREND_HALF_LIFE_MINUTES = 15.0
UNKNOWN_CATEGORY = "unknown"
_POSITIVE = frozenset(POSITIVE_EVENT_TYPES)

# (ts in µs since epoch, event_id, item_id, event_type, category): one event as user state keeps it
UserEntry = tuple[int, str, str, str, str]


def ts_micros(ts: datetime) -> int:
    """Event time as integer microseconds since the Unix epoch (exact, no float rounding)."""
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def micros_to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


@dataclass(frozen=True)
class UserState:
    """A user's recent events, ascending by (ts, event_id)."""

    entries: tuple[UserEntry, ...] = ()

    @property
    def latest_us(self) -> int:
        return self.entries[-1][0] if self.entries else 0

    def to_json(self) -> bytes:
        return json.dumps(self.entries, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> UserState:
        if not raw:
            return cls()
        return cls(tuple(tuple(e) for e in json.loads(raw)))  # type: ignore[misc]


@dataclass(frozen=True)
class ItemState:
    """An item's interaction counts per one-minute bucket (events, positive events), as of its latest event."""

    latest_us: int = 0
    buckets: Mapping[int, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps([self.latest_us, sorted([m, e, c] for m, (e, c) in self.buckets.items())],
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> ItemState:
        if not raw:
            return cls()
        latest, buckets = json.loads(raw)
        return cls(latest, {m: (e, c) for m, e, c in buckets})


def user_entry(event: Event, catalog: Mapping[str, str]) -> UserEntry:
    return (ts_micros(event.ts), event.event_id, event.item_id, event.event_type,
            catalog.get(event.item_id, UNKNOWN_CATEGORY))


def fresh_entries(state: UserState | None, entries: Iterable[UserEntry]) -> list[UserEntry]:
    """The entries whose event_id the state does not hold yet, each id once (first occurrence wins)."""
    seen = {e[1] for e in state.entries} if state else set()
    fresh = []
    for entry in entries:
        if entry[1] not in seen:
            seen.add(entry[1])
            fresh.append(entry)
    return fresh


def fold_user(state: UserState | None, entries: Iterable[UserEntry]) -> UserState:
    """Add events to a user's state: de-duplicate by event_id, keep the horizon and the newest USER_MAX_EVENTS."""
    current = list(state.entries) if state else []
    seen = {e[1] for e in current}
    added = False
    for entry in entries:
        if entry[1] not in seen:
            seen.add(entry[1])
            current.append(entry)
            added = True
    if not added:
        return state or UserState()
    current.sort(key=lambda e: (e[0], e[1]))
    floor = current[-1][0] - USER_HORIZON_S * 1_000_000
    kept = [e for e in current[-USER_MAX_EVENTS:] if e[0] >= floor]
    return UserState(tuple(kept))


def user_features(state: UserState) -> dict[str, Any]:
    """The user_session_v1 values for a state (as of the user's latest event)."""
    entries = state.entries
    if not entries:
        raise ValueError("user_features needs at least one event in the state")
    latest = entries[-1][0]
    session_start_idx = len(entries) - 1
    gap_us = SESSION_GAP_S * 1_000_000
    while session_start_idx > 0 and entries[session_start_idx][0] - entries[session_start_idx - 1][0] <= gap_us:
        session_start_idx -= 1
    session = entries[session_start_idx:]
    categories = Counter(e[4] for e in session)
    ranked = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))
    last_items: list[str] = []
    for e in reversed(entries):
        if e[2] not in last_items:
            last_items.append(e[2])
            if len(last_items) == LAST_ITEMS:
                break
    short_floor = latest - SHORT_WINDOW_S * 1_000_000
    long_floor = latest - LONG_WINDOW_S * 1_000_000
    short = [e for e in entries if e[0] > short_floor]
    long = [e for e in entries if e[0] > long_floor]
    return {
        "session_events": len(session),
        "session_clicks": sum(1 for e in session if e[3] in _POSITIVE),
        "session_duration_s": (latest - session[0][0]) / 1e6,
        "last_item_ids": last_items,
        "last_category": entries[-1][4],
        "session_categories": [c for c, _ in ranked],
        "session_category_counts": [n for _, n in ranked],
        "last_event_epoch": latest / 1e6,
        "seconds_since_prev_event": (latest - entries[-2][0]) / 1e6 if len(entries) > 1 else -1.0,
        "events_5m": len(short),
        "clicks_5m": sum(1 for e in short if e[3] in _POSITIVE),
        "events_1h": len(long),
        "clicks_1h": sum(1 for e in long if e[3] in _POSITIVE),
    }


def fold_item(state: ItemState | None, events: Iterable[tuple[int, bool]]) -> ItemState:
    """Add (ts µs, is_positive) interactions to an item's minute buckets; drop buckets older than the window."""
    latest = state.latest_us if state else 0
    buckets = dict(state.buckets) if state else {}
    for ts_us, positive in events:
        latest = max(latest, ts_us)
        floor = latest // (ITEM_BUCKET_S * 1_000_000) - ITEM_WINDOW_MINUTES + 1
        minute = ts_us // (ITEM_BUCKET_S * 1_000_000)
        if minute < floor:
            continue  # older than any window as of the item's latest event: it can never count again
        n, c = buckets.get(minute, (0, 0))
        buckets[minute] = (n + 1, c + (1 if positive else 0))
    floor = latest // (ITEM_BUCKET_S * 1_000_000) - ITEM_WINDOW_MINUTES + 1
    return ItemState(latest, {m: v for m, v in buckets.items() if m >= floor})


def item_features(state: ItemState) -> dict[str, Any]:
    """The item_trending_v1 values for a state (as of the item's latest event)."""
    now_minute = state.latest_us // (ITEM_BUCKET_S * 1_000_000)
    events_1h = clicks_1h = events_5m = 0
    trend = 0.0
    for minute in sorted(state.buckets):  # fixed order: the float sum is reproducible
        n, c = state.buckets[minute]
        age = now_minute - minute
        events_1h += n
        clicks_1h += c
        if age < ITEM_SHORT_MINUTES:
            events_5m += n
        trend += n * 0.5 ** (age / TREND_HALF_LIFE_MINUTES)
    return {"events_5m": events_5m, "events_1h": events_1h, "clicks_1h": clicks_1h, "trend_score": trend}


def item_interaction(event: Event) -> tuple[int, bool]:
    return ts_micros(event.ts), event.event_type in _POSITIVE


def entry_interaction(entry: UserEntry) -> tuple[int, bool]:
    """What an item's trending counts take from one user-state entry (the same as item_interaction)."""
    return entry[0], entry[3] in _POSITIVE


@dataclass
class LogFeatures:
    """Features computed from scratch over a whole log: the reference the stream must reproduce."""

    users: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Any]]
    user_timestamps: dict[str, datetime]
    item_timestamps: dict[str, datetime]


def features_from_log(events: Iterable[Event], catalog: Mapping[str, str] | None = None) -> LogFeatures:
    """Fold every event of a log into user and item state at once, as the batch recomputation does."""
    catalog = catalog or {}
    by_user: dict[str, list[UserEntry]] = {}
    by_item: dict[str, list[tuple[int, bool]]] = {}
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            continue  # a re-sent event counts once, in user and item features alike
        seen.add(event.event_id)
        by_user.setdefault(event.user_id, []).append(user_entry(event, catalog))
        by_item.setdefault(event.item_id, []).append(item_interaction(event))
    users = {u: fold_user(None, entries) for u, entries in by_user.items()}
    items = {i: fold_item(None, entries) for i, entries in by_item.items()}
    return LogFeatures(
        users={u: user_features(s) for u, s in users.items()},
        items={i: item_features(s) for i, s in items.items()},
        user_timestamps={u: micros_to_datetime(s.latest_us) for u, s in users.items()},
        item_timestamps={i: micros_to_datetime(s.latest_us) for i, s in items.items()},
    )
