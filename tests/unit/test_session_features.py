"""The stream's feature math: event-time windows, sessions, order independence, idempotence."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.stream.session_features import (
    USER_HORIZON_S,
    USER_MAX_EVENTS,
    ItemState,
    UserState,
    features_from_log,
    fold_item,
    fold_user,
    item_features,
    item_interaction,
    user_entry,
    user_features,
)
from tandem.schema import Event

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CATALOG = {"a": "books", "b": "music", "c": "books"}


def ev(i: int, minutes: float, item: str = "a", etype: str = "view", user: str = "u") -> Event:
    return Event(event_id=f"e{i}", user_id=user, item_id=item, event_type=etype, ts=T0 + timedelta(minutes=minutes))


def fold(events, state=None):
    return fold_user(state, [user_entry(e, CATALOG) for e in events])


def test_session_windows_and_recency():
    events = [ev(0, 0, "a"), ev(1, 10, "b", "click"), ev(2, 50, "c"),  # 40 min gap: new session at 50
              ev(3, 52, "a", "purchase"), ev(4, 54, "b")]
    f = user_features(fold(events))
    assert f["session_events"] == 3 and f["session_clicks"] == 1
    assert f["session_duration_s"] == 240.0
    assert f["last_item_ids"] == ["b", "a", "c"]
    assert f["last_category"] == "music"
    assert f["session_categories"] == ["books", "music"] and f["session_category_counts"] == [2, 1]
    assert f["last_event_epoch"] == (T0 + timedelta(minutes=54)).timestamp()
    assert f["seconds_since_prev_event"] == 120.0
    assert (f["events_5m"], f["clicks_5m"]) == (3, 1)  # 50, 52, 54 are within 5 minutes of 54
    assert (f["events_1h"], f["clicks_1h"]) == (5, 2)


def test_order_of_arrival_does_not_matter_and_late_events_land_by_event_time():
    rng = random.Random(4)
    events = [ev(i, rng.uniform(0, 300), rng.choice("abc"), rng.choice(["view", "click"])) for i in range(300)]
    in_order = user_features(fold(sorted(events, key=lambda e: e.ts)))
    shuffled = events[:]
    rng.shuffle(shuffled)
    state = None
    for chunk in range(0, 300, 17):  # arrival in arbitrary micro-batches
        state = fold(shuffled[chunk:chunk + 17], state)
    assert user_features(state) == in_order


def test_replaying_events_is_idempotent():
    events = [ev(i, i) for i in range(50)]
    once = fold(events)
    assert fold(events[10:30], once) == once
    assert user_features(fold(events, once)) == user_features(once)


def test_state_keeps_only_the_horizon_and_the_newest_events():
    many = [ev(i, i * 0.01) for i in range(USER_MAX_EVENTS + 50)]
    assert len(fold(many).entries) == USER_MAX_EVENTS
    old_and_new = [ev(0, 0), ev(1, USER_HORIZON_S / 60 + 1)]
    assert [e[1] for e in fold(old_and_new).entries] == ["e1"]
    assert user_features(fold(old_and_new))["seconds_since_prev_event"] == -1.0


def test_state_round_trips_through_json():
    state = fold([ev(i, i, "abc"[i % 3]) for i in range(20)])
    assert UserState.from_json(state.to_json()) == state
    items = fold_item(None, [item_interaction(ev(i, i)) for i in range(20)])
    assert ItemState.from_json(items.to_json()) == items


def test_item_trending_windows_decay_and_order_independence():
    events = [ev(i, m, etype="click" if i % 2 else "view") for i, m in enumerate([0, 30, 58, 59, 59.5, 61])]
    f = item_features(fold_item(None, [item_interaction(e) for e in events]))
    # latest is minute 61: buckets 2..61 are the hour, 57..61 the last 5 minutes; minute 0 has dropped out
    assert (f["events_1h"], f["clicks_1h"], f["events_5m"]) == (5, 3, 4)
    assert f["trend_score"] == pytest.approx(0.5 ** (31 / 15) + 0.5 ** (3 / 15) + 2 * 0.5 ** (2 / 15) + 1)
    backwards = fold_item(None, [item_interaction(e) for e in reversed(events)])
    assert item_features(backwards) == f


def test_features_from_log_matches_incremental_folds():
    rng = random.Random(9)
    events = [ev(i, rng.uniform(0, 120), rng.choice("abc"), rng.choice(["view", "click"]), f"u{rng.randrange(4)}")
              for i in range(400)]
    ref = features_from_log(events, CATALOG)
    users: dict = {}
    items: dict = {}
    for start in range(0, 400, 37):
        for e in events[start:start + 37]:
            users[e.user_id] = fold(([e]), users.get(e.user_id))
            items[e.item_id] = fold_item(items.get(e.item_id), [item_interaction(e)])
    assert {u: user_features(s) for u, s in users.items()} == ref.users
    assert {i: item_features(s) for i, s in items.items()} == ref.items
    assert ref.user_timestamps["u0"] == max(e.ts for e in events if e.user_id == "u0")


def test_a_re_sent_event_counts_once_for_its_item_too():
    from pipelines.stream.session_features import entry_interaction, fresh_entries

    events = [ev(i, i, item="a" if i % 2 else "b", etype="click") for i in range(10)]
    state, items = None, {}
    for batch in (events[:6], events[3:], events):  # overlapping re-sends, as a producer's retries make them
        entries = [user_entry(e, CATALOG) for e in batch]
        fresh = fresh_entries(state, entries + entries[:2])  # and duplicates inside one batch
        state = fold_user(state, fresh)
        for entry in fresh:
            items[entry[2]] = fold_item(items.get(entry[2]), [entry_interaction(entry)])
    expected = features_from_log(events + events[:4], CATALOG)
    assert user_features(state) == expected.users["u"]
    assert {i: item_features(s) for i, s in items.items()} == expected.items
    assert expected.items["a"]["events_1h"] == 5  # the reference counts each event_id once as well


def test_entry_interaction_is_item_interaction():
    from pipelines.stream.session_features import entry_interaction

    for e in (ev(1, 3.5, etype="view"), ev(2, 7, etype="purchase")):
        assert entry_interaction(user_entry(e, CATALOG)) == item_interaction(e)
