"""Quick end-to-end: a few events through an in-process processor, read back through Feast."""

from pipelines.stream.session_features import features_from_log
from tests.integration.stream.conftest import (
    InProcessProcessor,
    make_catalog,
    make_events,
    online_features,
    produce,
    wait_applied,
)


def test_events_reach_feast(stream_settings, feature_store):
    events = make_events("smoke", 300, n_users=5, n_items=10)
    catalog = make_catalog("smoke", 10)
    with InProcessProcessor(stream_settings, catalog=catalog):
        produce(stream_settings, events)
        wait_applied(stream_settings, len(events), timeout=60)
    expected = features_from_log(events, catalog)
    got = online_features(feature_store, "user_session_v1", "user_id", sorted(expected.users))
    assert got == expected.users
    got_items = online_features(feature_store, "item_trending_v1", "item_id", sorted(expected.items))
    assert got_items == expected.items


def test_evicting_cached_user_state_changes_nothing(stream_settings, feature_store):
    """With a one-user cache every batch re-reads user state from Redis: the features must not change."""
    from tests.integration.stream.conftest import assert_matches_log

    events = make_events("evict", 500, n_users=12, n_items=10, seed=5)
    catalog = make_catalog("evict", 10)
    with InProcessProcessor(stream_settings, catalog=catalog, max_batch=20, cached_users_per_partition=1) as p:
        produce(stream_settings, events)
        wait_applied(stream_settings, len(events), timeout=60)
        assert all(len(part.users) <= 1 for part in p.partitions.values())
    assert_matches_log(feature_store, events, catalog)
