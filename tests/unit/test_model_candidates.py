"""Candidate generation: seen items never come back, co-visited items do, new users get the popular list."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from models.candidates import (
    CandidateConfig,
    covisitation_matrix,
    ease_matrix,
    generate_candidates,
    item_neighbours_frame,
    popular_items,
)
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


def test_neighbour_lists_give_the_covisit_of_the_matrix():
    """Co-visitation with the session's last items from the item_neighbours rows equals the rule over the matrix:
    the sum over the last items of their co-visit with the candidate, weighted 1/position."""
    from models.online import last_items_scores_from_lists

    events, items = drifting_log(n_users=30, n_items=24, days=4, sessions_per_user=4)
    catalog = Catalog.from_items(items)
    log = encode_events(events, catalog)
    cov = covisitation_matrix(log, catalog.n_items)
    frame = item_neighbours_frame(cov, catalog, pd.Timestamp("2025-01-01", tz="UTC"), n=catalog.n_items)
    lists = {r.item_id: (r.neighbour_item_ids, r.neighbour_scores) for r in frame.itertuples()}
    last = [3, 7, 1]
    dense = cov.toarray()
    by_matrix = sum(dense[item] / position for position, item in enumerate(last, start=1))
    by_lists = last_items_scores_from_lists([str(catalog.item_ids[i]) for i in last],
                                            [str(i) for i in catalog.item_ids], lists)
    assert np.allclose(by_matrix, by_lists) and by_matrix.any()



_ids = st.sampled_from([f"i{n}" for n in range(12)])


@settings(max_examples=200, deadline=None)
@given(rows=st.dictionaries(_ids, st.tuples(st.lists(_ids, max_size=8),
                                            st.lists(st.floats(-1e6, 1e6), max_size=8))),
       last=st.lists(_ids, max_size=6), catalogue=st.lists(_ids, unique=True, max_size=10))
def test_encoded_neighbour_scores_equal_the_lists(rows, last, catalogue):
    """The evaluation's whole-catalogue scoring gives exactly serving's sums, whatever the rows hold: neighbours
    outside the catalogue, fewer scores than ids, repeated ids, last items without a row."""
    from models.online import encode_neighbour_lists, last_items_scores_encoded, last_items_scores_from_lists

    ids = {item: tuple(pair[0]) for item, pair in rows.items()}
    scores = {item: tuple(pair[1]) for item, pair in rows.items()}
    by_lists = last_items_scores_from_lists(last, catalogue, {i: (list(ids[i]), list(scores[i])) for i in last
                                                              if i in ids})
    encoded = encode_neighbour_lists(ids, scores, catalogue)
    assert np.array_equal(last_items_scores_encoded(last, len(catalogue), encoded), by_lists)


def _brute_force(log, catalog, as_of, config):
    """Each user's list by the documented rule, one user at a time over dense vectors: per source the best
    unseen items by score (ties by lower index), merged in source order without repeats."""
    from models.candidates import history_matrix, popularity, strongest_neighbours

    h = history_matrix(log, log.n_users, catalog.n_items, as_of)
    cov = strongest_neighbours(covisitation_matrix(log.before(as_of), catalog.n_items), config.neighbours)
    pop = popularity(log, catalog.n_items, as_of)
    pop_norm = pop / pop.max()
    lists = {}
    for u in range(log.n_users):
        row = h[u]
        seen = set(row.indices[row.data > 0].tolist())
        if not seen:
            continue
        co = (row @ cov).toarray().ravel()
        share = np.zeros(catalog.n_categories)
        for i, w in zip(row.indices, row.data, strict=True):
            share[catalog.item_category[i]] += w
        share /= share.sum()
        cat = share[catalog.item_category] * pop_norm

        def best(score, n, positive_only, seen=seen):
            pool = [i for i in range(catalog.n_items) if i not in seen and (score[i] > 0 or not positive_only)]
            return sorted(pool, key=lambda i, score=score: (-score[i], i))[:n]

        merged = []
        for part in (best(co, config.n_covisit, True), best(cat, config.n_category, True),
                     best(pop_norm, config.n_popular, False)):
            merged += [i for i in part if i not in merged]
        lists[u] = (merged, [co[i] if co[i] > 0 else 0.0 for i in merged])
    return lists


def test_candidates_match_a_brute_force_over_every_user():
    events, items = drifting_log(n_users=60, n_items=80, days=8, sessions_per_user=6)
    catalog = Catalog.from_items(items)
    log = encode_events(events, catalog)
    as_of = float(np.median(log.ts))  # later events exist and must be ignored
    # several chunks, and fewer neighbours than items co-visit with
    config = CandidateConfig(n_covisit=7, n_category=6, n_popular=5, neighbours=6, chunk_users=13)
    cand = generate_candidates(log, catalog, as_of, config)
    expected = _brute_force(log, catalog, as_of, config)
    assert len(expected) > 30
    for u in range(log.n_users):
        lo, hi = cand.offsets[u], cand.offsets[u + 1]
        if u not in expected:
            assert hi == lo
            continue
        items_u, scores_u = expected[u]
        assert cand.items[lo:hi].tolist() == items_u, u
        assert np.allclose(cand.retrieval_score[lo:hi], scores_u), u
        assert (cand.source[lo:hi] >= 0).all()


def test_candidate_frame_sorts_each_list_by_score_and_cuts_it():
    from types import SimpleNamespace

    from models.candidates import Candidates, candidates_frame

    catalog = Catalog.from_items(ITEMS)
    log = SimpleNamespace(user_ids=np.array(["u0", "u1", "u2"], dtype=object))
    # u0: four candidates with a tie; u1: none; u2: one
    cand = Candidates(offsets=np.array([0, 4, 4, 5]), items=np.array([0, 1, 2, 3, 5]),
                      source=np.zeros(5, dtype=np.int8), retrieval_score=np.zeros(5), popular=np.array([0]))
    scores = np.array([0.2, 0.9, 0.2, 0.5, 0.1])
    frame = candidates_frame(cand, log, catalog, scores, pd.Timestamp("2025-01-01", tz="UTC"), limit=3)
    assert frame["user_id"].tolist() == ["u0", "u2"]
    assert [list(x) for x in frame["candidate_item_ids"]] == [["i1", "i3", "i0"], ["i5"]]
    assert [list(x) for x in frame["candidate_scores"]] == [[0.9, 0.5, 0.2], [0.1]]


def test_strongest_neighbours_keep_each_items_k_best():
    from models.candidates import strongest_neighbours

    dense = np.array([[0, 3, 1, 3, 2], [1, 0, 0, 0, 0], [5, 4, 0, 4, 0], [0, 0, 0, 0, 0], [2, 2, 2, 2, 0]], float)
    kept = strongest_neighbours(sparse.csr_matrix(dense), 2).toarray()
    assert kept.tolist() == [[0, 3, 0, 3, 0], [1, 0, 0, 0, 0], [5, 4, 0, 0, 0], [0, 0, 0, 0, 0], [2, 2, 0, 0, 0]]


def _ease_by_definition(x: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form written out: argmin ‖X − XB‖² + l2‖B‖² with diag(B) = 0."""
    g = x.T @ x + l2 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_ease_weights_are_the_closed_form_positive_part():
    events, items = drifting_log(n_users=40, n_items=30, days=6, sessions_per_user=5)
    catalog = Catalog.from_items(items)
    log = encode_events(events, catalog)
    got = ease_matrix(log, catalog.n_items, l2=5.0).toarray()
    x = np.zeros((log.n_users, catalog.n_items))
    x[log.user, log.item] = 1.0  # repeated interactions count once
    want = _ease_by_definition(x, 5.0)
    assert np.allclose(got, np.where(want > 0, want, 0.0))
    assert (got > 0).sum() > catalog.n_items  # the example has real structure to learn
    assert np.all(np.diag(got) == 0)
    # each row's 3 largest: the same lists item_neighbours_frame writes from the whole matrix
    top = ease_matrix(log, catalog.n_items, l2=5.0, top=3)
    assert np.all((top > 0).sum(axis=1) <= 3) and (top > 0).sum() > 0
    assert top.nnz < (got > 0).sum()
    ts = pd.Timestamp("2025-01-01", tz="UTC")
    assert item_neighbours_frame(top, catalog, ts, 3).equals(item_neighbours_frame(sparse.csr_matrix(got), catalog,
                                                                                   ts, 3))


def test_ease_gives_rows_only_to_the_most_interacted_items():
    rows = [(f"u{u}", f"i{i}", "view", f"2025-01-01T0{u}:0{i}:00Z", f"s{u}")
            for u in range(6) for i in range(6) if i < 3 or (i == 3 and u < 2)]
    catalog, log = _log_from(rows, ITEMS)
    full = ease_matrix(log, catalog.n_items, l2=1.0)
    capped = ease_matrix(log, catalog.n_items, l2=1.0, max_items=3)
    assert set(sparse.find(full)[0]) | set(sparse.find(full)[1]) >= {0, 1, 2}
    kept = set(sparse.find(capped)[0]) | set(sparse.find(capped)[1])
    assert kept and kept <= {0, 1, 2}  # i3 (2 users), i4 and i5 (none) are out
    assert ease_matrix(log.before(float(log.ts.min())), catalog.n_items).nnz == 0  # no events, no weights
