"""Candidate generation: seen items never come back, co-visited items do, new users get the popular list."""

import numpy as np
import pandas as pd

from models.candidates import CandidateConfig, covisitation_matrix, generate_candidates, popular_items
from models.features import Catalog, encode_events
from tests.models_data import drifting_log


def _log_from(rows, items):
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts", "session_id"])
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
    catalog = Catalog.from_items(items)
    return catalog, encode_events(ev, catalog)


ITEMS = pd.DataFrame({"item_id": [f"i{i}" for i in range(6)], "category": ["a", "a", "a", "b", "b", "b"]})


def test_seen_items_are_never_candidates():
    events, items = drifting_log(n_users=40, n_items=30, days=6, sessions_per_user=5)
    catalog = Catalog.from_items(items)
    log = encode_events(events, catalog)
    as_of = float(log.ts[-1]) + 1
    cand = generate_candidates(log, catalog, as_of, CandidateConfig(n_covisit=10, n_category=10, n_popular=5))
    for u in range(log.n_users):
        seen = set(log.item[log.user == u].tolist())
        got = set(cand.of(u).tolist())
        assert got, f"user {u} got no candidates"
        assert not (got & seen), f"user {u} got already-seen items {sorted(got & seen)}"


def test_covisited_items_come_first_and_new_users_get_popular():
    rows = []
    # many sessions view i0 and i1 together; u9 has only seen i0
    for s in range(5):
        rows += [(f"u{s}", "i0", "view", f"2025-01-01T0{s}:00:00Z", f"s{s}"),
                 (f"u{s}", "i1", "view", f"2025-01-01T0{s}:01:00Z", f"s{s}"),
                 (f"u{s}", "i4", "view", f"2025-01-01T0{s}:02:00Z", f"t{s}")]
    rows.append(("u9", "i0", "view", "2025-01-02T00:00:00Z", "x"))
    catalog, log = _log_from(rows, ITEMS)
    as_of = float(log.ts[-1]) + 1
    cov = covisitation_matrix(log, catalog.n_items)
    assert cov[0, 1] > 0 and cov[0, 4] == 0  # i4 is always in a different session
    cand = generate_candidates(log, catalog, as_of)
    u9 = log.user_index["u9"]
    assert cand.of(u9)[0] == 1
    assert 0 not in cand.of(u9)
    unknown_user = log.n_users + 5
    assert list(cand.of(unknown_user)) == list(cand.popular)


def test_popular_items_order_and_exclusion():
    pop = np.array([5.0, 1.0, 9.0, 0.0])
    assert list(popular_items(pop, 3)) == [2, 0, 1]
    assert list(popular_items(pop, 3, exclude=np.array([2]))) == [0, 1, 3]


def test_neighbour_lists_give_the_same_covisit_as_the_matrix():
    from models.candidates import item_neighbours_frame
    from models.online import last_item_covisit, last_item_covisit_from_lists
    from models.session import SessionView

    events, items = drifting_log(n_users=30, n_items=24, days=4, sessions_per_user=4)
    catalog = Catalog.from_items(items)
    log = encode_events(events, catalog)
    cov = covisitation_matrix(log, catalog.n_items)
    frame = item_neighbours_frame(cov, catalog, pd.Timestamp("2025-01-01", tz="UTC"), n=catalog.n_items)
    lists = {r.item_id: (r.neighbour_item_ids, r.neighbour_scores) for r in frame.itertuples()}
    view = SessionView(catalog.n_categories, last_items=[3, 7, 1])
    candidates = np.arange(catalog.n_items)
    by_matrix = last_item_covisit(view, candidates, cov)
    by_lists = last_item_covisit_from_lists([str(catalog.item_ids[i]) for i in view.last_items],
                                            [str(i) for i in catalog.item_ids[candidates]], lists)
    assert np.allclose(by_matrix, by_lists) and by_matrix.any()
