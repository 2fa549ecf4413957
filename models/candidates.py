"""Candidate generation, computed in batch: what each user's precomputed list is made of.

For each user the list merges, in this order and without duplicates:

1. co-visitation — items that shared sessions with the items of the user's history (recent history
   weighs more, half-life HISTORY_HALF_LIFE_DAYS), each history item bringing its strongest neighbours;
2. category-popular — the most popular items of the categories the user interacts with, weighted
   by the user's share of each category;
3. global popular — the fallback, and the whole list of a user with no history.

Items the user has already interacted with are never candidates. Everything here is pure numpy
and scipy.sparse over dense indices (models/features.py); users are processed in chunks, and a
chunk's memory is its users' co-visited items plus bounded pools, never users × items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from models.features import SECONDS_PER_DAY, Catalog, EventLog

HISTORY_HALF_LIFE_DAYS = 7.0
MAX_SESSION_ITEMS = 50  # longer sessions are trimmed to their last items: bounds the pairs each session adds


def covisitation_matrix(log: EventLog, n_items: int) -> sparse.csr_matrix:
    """Item×item co-visitation: sessions two items share, cosine-normalized, zero diagonal."""
    if len(log) == 0:
        return sparse.csr_matrix((n_items, n_items))
    pairs = pd.DataFrame({"s": log.session, "i": log.item}).drop_duplicates()
    # keep each session's last items only, so one very long session cannot dominate
    pairs = pairs.groupby("s", sort=False).tail(MAX_SESSION_ITEMS)
    s_codes, s_index = pd.factorize(pairs["s"])
    b = sparse.csr_matrix((np.ones(len(pairs)), (s_codes, pairs["i"].to_numpy())), shape=(len(s_index), n_items))
    c = (b.T @ b).tocsr()
    counts = np.asarray(c.diagonal(), dtype=float)
    c.setdiag(0.0)
    c.eliminate_zeros()
    norm = np.sqrt(np.maximum(counts, 1.0))
    d = sparse.diags(1.0 / norm)
    return (d @ c @ d).tocsr()


# item_sequence_neighbours_v1: co-occurrence in users' event sequences, chosen on the validation splits of MovieLens
# 100k and the demo data over windows of 5/10/20 events, decay 0.8^(d-1) vs 1/d, cosine vs neighbour-only
# normalization and the weight of what precedes an item (1, 0.5, 0)
SEQUENCE_WINDOW = 20
SEQUENCE_DECAY = 0.8
SEQUENCE_REVERSE = 0.5
SEQUENCE_BETA = 0.5


def sequence_neighbours_matrix(log: EventLog, n_items: int, window: int = SEQUENCE_WINDOW,
                               decay: float = SEQUENCE_DECAY, reverse: float = SEQUENCE_REVERSE,
                               beta: float = SEQUENCE_BETA) -> sparse.csr_matrix:
    """Item×item co-occurrence in each user's time-ordered events, zero diagonal.

    Two events of a user at most `window` positions apart are a pair weighted `decay ** (d - 1)` by their
    distance d. Row i scores what follows i at that weight and what precedes it at `reverse` times it; then
    score(i, j) = c(i, j) / n_j ** beta, n the items' event counts (so a popular neighbour needs more
    co-occurrence). One sparse pass per distance, each adding at most len(log) pairs.
    """
    if len(log) == 0:
        return sparse.csr_matrix((n_items, n_items))
    order = np.lexsort((np.arange(len(log)), log.user))  # per user, in time order (the log is sorted by time)
    user, item = log.user[order], np.asarray(log.item, dtype=np.int64)[order]
    c = sparse.csr_matrix((n_items, n_items))
    for d in range(1, min(window, len(item) - 1) + 1):
        same = (user[d:] == user[:-d]) & (item[d:] != item[:-d])
        if not same.any():
            continue
        a, b = item[:-d][same], item[d:][same]  # b follows a
        weight = np.full(len(a), float(decay) ** (d - 1))
        c = c + sparse.csr_matrix((weight, (a, b)), shape=(n_items, n_items))
        if reverse:
            c = c + sparse.csr_matrix((reverse * weight, (b, a)), shape=(n_items, n_items))
    c = c.tocsr()
    c.setdiag(0.0)
    c.eliminate_zeros()
    counts = np.maximum(np.bincount(log.item, minlength=n_items).astype(float), 1.0)
    return (c @ sparse.diags(counts ** -beta)).tocsr()


# item_neighbours_v1: EASE item-item weights, chosen on the validation splits of MovieLens 100k and the demo data
# (hybrid NDCG@10 there over λ 200–3000 with 30 neighbours per item and λ 250/500/1000 with 100; cosine co-visitation
# before: 0.1034 and 0.0854, λ 500 with 100 neighbours: 0.1080 and 0.0893)
EASE_L2 = 500.0
# the most interacted items that get an EASE row: the inverse is dense, items² float64 (9,928 items of 2M events:
# 48 s on two cores, 3.3 GB peak); less interacted items have no item_neighbours_v1 row (their sequence neighbours
# remain)
EASE_MAX_ITEMS = 10_000


def ease_matrix(log: EventLog, n_items: int, l2: float = EASE_L2, max_items: int = EASE_MAX_ITEMS,
                top: int | None = None) -> sparse.csr_matrix:
    """EASE item×item weights (Steck, "Embarrassingly Shallow Autoencoders", 2019) of the users' interactions.

    B = I − P·diag(1/diag(P)) with P = (XᵀX + l2·I)⁻¹ and X the binary user×item matrix of `log`, so row i
    holds how much having interacted with i says for each other item j (a user's score for j is Σ_i x_i B_ij).
    Only the `max_items` most interacted items take part (ties by lower index); the diagonal is zero and only
    positive weights are kept, as neighbour lists carry them — with `top`, only each row's `top` largest, picked
    from the dense rows (a sparse copy of every positive weight of 10,000 items would take gigabytes).
    """
    if len(log) == 0:
        return sparse.csr_matrix((n_items, n_items))
    counts = np.bincount(log.item, minlength=n_items)
    kept = np.flatnonzero(counts > 0)
    if len(kept) > max_items:
        kept = np.sort(kept[np.argsort(-counts[kept], kind="stable")[:max_items]])
    position = np.full(n_items, -1, dtype=np.int64)
    position[kept] = np.arange(len(kept))
    pairs = pd.DataFrame({"u": log.user, "i": position[np.asarray(log.item, dtype=np.int64)]})
    pairs = pairs[pairs["i"] >= 0].drop_duplicates()
    x = sparse.csr_matrix((np.ones(len(pairs)), (pairs["u"].to_numpy(), pairs["i"].to_numpy())),
                          shape=(int(log.user.max()) + 1, len(kept)))
    p = (x.T @ x).toarray()
    p[np.diag_indices_from(p)] += l2
    p = np.linalg.inv(p)
    p /= -np.diag(p)[None, :]  # B_ij = −P_ij / P_jj, in place: one dense matrix at a time
    p[np.diag_indices_from(p)] = 0.0
    if top is not None and 0 < top < len(kept) - 1:
        cols = np.argpartition(-p, top - 1, axis=1)[:, :top].ravel()
        rows = np.repeat(np.arange(len(kept)), top)
        positive = p[rows, cols] > 0
        rows, cols = rows[positive], cols[positive]
    else:
        rows, cols = np.nonzero(p > 0)
    return sparse.csr_matrix((p[rows, cols], (kept[rows], kept[cols])), shape=(n_items, n_items))


def history_matrix(log: EventLog, n_users: int, n_items: int, as_of: float,
                   half_life_days: float = HISTORY_HALF_LIFE_DAYS) -> sparse.csr_matrix:
    """User×item recency-weighted interaction weights (any event type) of the events before `as_of`."""
    hist = log.before(as_of)
    weight = np.power(0.5, (as_of - hist.ts) / (half_life_days * SECONDS_PER_DAY))
    return sparse.csr_matrix((weight, (hist.user, hist.item)), shape=(n_users, n_items))


def popularity(log: EventLog, n_items: int, as_of: float, half_life_days: float = HISTORY_HALF_LIFE_DAYS
               ) -> np.ndarray:
    """Recency-weighted interaction count per item before `as_of`."""
    hist = log.before(as_of)
    weight = np.power(0.5, (as_of - hist.ts) / (half_life_days * SECONDS_PER_DAY))
    return np.bincount(hist.item, weights=weight, minlength=n_items)


def popular_items(item_popularity: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """The n most popular item indices, most popular first, skipping `exclude`."""
    score = np.asarray(item_popularity, dtype=float).copy()
    if exclude is not None and len(exclude):
        score[np.asarray(exclude, dtype=np.int64)] = -np.inf
    n = min(n, int(np.isfinite(score).sum()))
    top = np.argpartition(-score, n - 1)[:n] if 0 < n < len(score) else np.arange(len(score))[:n]
    return top[np.argsort(-score[top], kind="stable")]


@dataclass
class CandidateConfig:
    n_covisit: int = 60
    n_category: int = 60
    n_popular: int = 30
    neighbours: int = 100  # each history item contributes its strongest co-visited items only
    chunk_users: int = 2_000

    @property
    def max_candidates(self) -> int:
        return self.n_covisit + self.n_category + self.n_popular


@dataclass
class Candidates:
    """Each user's candidate item indices (user u's are items[offsets[u]:offsets[u+1]]) with source and score."""

    offsets: np.ndarray  # (n_users + 1,)
    items: np.ndarray
    source: np.ndarray  # 0 co-visitation, 1 category-popular, 2 global popular
    retrieval_score: np.ndarray  # the co-visitation score of the item for that user (0 for other sources)
    popular: np.ndarray  # the global popular list (new users' candidates), most popular first

    SOURCES = ("covisit", "category", "popular")

    def of(self, user: int) -> np.ndarray:
        """Candidate item indices of a user index; users with no history (or unknown) get the popular list."""
        if 0 <= user < len(self.offsets) - 1:
            lo, hi = self.offsets[user], self.offsets[user + 1]
            if hi > lo:
                return self.items[lo:hi]
        return self.popular

    def covisit_of(self, user: int) -> np.ndarray:
        if 0 <= user < len(self.offsets) - 1:
            lo, hi = self.offsets[user], self.offsets[user + 1]
            if hi > lo:
                return self.retrieval_score[lo:hi]
        return np.zeros(len(self.popular))


def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for each n in lengths, concatenated: [2, 3] -> [0, 1, 0, 1, 2]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(total, dtype=np.int64) - starts


def _top_per_row(row: np.ndarray, item: np.ndarray, score: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Of (row, item, score) entries, each row's n best: highest score first, ties by lower item index.
    Returns the kept entries' positions (sorted by row, then rank) and their rank within the row."""
    if len(row) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # first drop what cannot make a row's n best (below its n-th highest score), so the sort below is small
    survivors = _at_least_nth_best(row, score, n)
    row_s, item_s, score_s = row[survivors], item[survivors], score[survivors]
    order = np.lexsort((item_s, -score_s, row_s))
    ranks = _ragged_arange(np.bincount(row_s[order], minlength=int(row_s.max()) + 1))
    keep = ranks < n
    return survivors[order[keep]], ranks[keep]


def _at_least_nth_best(row: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Positions of the entries whose score is at least their row's n-th highest (all of a row with ≤ n)."""
    order = np.argsort(row, kind="stable")  # a no-op permutation when entries come grouped by row
    counts = np.bincount(row, minlength=int(row.max()) + 1)
    starts = np.cumsum(counts) - counts
    keep = np.ones(len(row), dtype=bool)
    grouped = score[order]
    for r in np.flatnonzero(counts > n):
        seg = grouped[starts[r]:starts[r] + counts[r]]
        keep[order[starts[r]:starts[r] + counts[r]]] = seg >= np.partition(seg, counts[r] - n)[counts[r] - n]
    return np.flatnonzero(keep)


def strongest_neighbours(covisit: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Each item's k strongest co-visited items (ties by lower index), the rest dropped.

    What keeps a user's co-visitation pool small: on 10M events an unpruned matrix gives each
    user ~36k scored items (popular items co-occur with most of the catalogue)."""
    m = covisit.tocoo()
    if m.nnz == 0:
        return covisit.tocsr()
    keep, _ = _top_per_row(m.row.astype(np.int64), m.col.astype(np.int64), m.data, k)
    return sparse.csr_matrix((m.data[keep], (m.row[keep], m.col[keep])), shape=covisit.shape)


def _sorted_by_popularity(items: np.ndarray, pop: np.ndarray) -> np.ndarray:
    """`items` ordered most popular first, ties by lower index."""
    return items[np.lexsort((items, -pop[items]))]


def _pools(start: np.ndarray, length: np.ndarray, ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slices ranked[start[k]:start[k] + length[k]], concatenated: (k of each element, the element)."""
    length = np.asarray(length, dtype=np.int64)
    owner = np.repeat(np.arange(len(length)), length)
    return owner, ranked[start[owner] + _ragged_arange(length)]


def _contains(sorted_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Which of `codes` are in `sorted_codes` (sorted, unique)."""
    if len(sorted_codes) == 0:
        return np.zeros(len(codes), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
    return sorted_codes[at] == codes


def _lookup(codes: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """values[codes == w] for each wanted code w (codes unique), 0 where absent."""
    if len(codes) == 0:
        return np.zeros(len(wanted))
    order = np.argsort(codes)
    at = np.minimum(np.searchsorted(codes[order], wanted), len(codes) - 1)
    hit = codes[order][at] == wanted
    return np.where(hit, values[order][at], 0.0)


def generate_candidates(log: EventLog, catalog: Catalog, as_of: float, config: CandidateConfig | None = None,
                        covisit: sparse.csr_matrix | None = None) -> Candidates:
    """Candidate lists for every user of `log` from the events before `as_of`, seen items excluded.

    Sparse throughout: a chunk of users costs its history's co-visited items and a bounded pool per
    category and source, never users × catalogue, so 500k users over 50k items fit in memory.
    Within a source, items rank by score, ties by lower item index.
    """
    config = config or CandidateConfig()
    n_users, n_items, n_cats = log.n_users, catalog.n_items, catalog.n_categories
    hist = log.before(as_of)
    covisit = covisit if covisit is not None else covisitation_matrix(hist, n_items)
    neighbours = strongest_neighbours(covisit, config.neighbours)
    h = history_matrix(log, n_users, n_items, as_of)
    pop = popularity(log, n_items, as_of)
    pop_norm = pop / pop.max() if pop.max() > 0 else pop
    item_category = np.asarray(catalog.item_category, dtype=np.int64)
    onehot = sparse.csr_matrix((np.ones(n_items), (np.arange(n_items), item_category)), shape=(n_items, n_cats))
    global_popular = popular_items(pop, config.max_candidates)
    # every item, most popular first (the popular source scores pop + 1e-12: every unseen item qualifies)
    by_popularity = _sorted_by_popularity(np.arange(n_items, dtype=np.int64), pop_norm)
    # per category, its items with popularity > 0, most popular first (a category score of 0 never qualifies)
    in_category = _sorted_by_popularity(np.flatnonzero(pop_norm > 0), pop_norm)
    in_category = in_category[np.argsort(item_category[in_category], kind="stable")]
    category_start = np.searchsorted(item_category[in_category], np.arange(n_cats))
    category_len = np.bincount(item_category[in_category], minlength=n_cats)
    counts = np.zeros(n_users, dtype=np.int64)
    items_out, source_out, score_out = [], [], []
    for lo in range(0, n_users, config.chunk_users):
        hi = min(lo + config.chunk_users, n_users)
        h_chunk = h[lo:hi]
        seen = h_chunk.tocoo()
        positive = seen.data > 0
        seen_row, seen_item = seen.row[positive].astype(np.int64), seen.col[positive].astype(np.int64)
        seen_codes = np.unique(seen_row * n_items + seen_item)
        users = np.unique(seen_row)  # users with history; the others get no list (serving uses the popular one)
        if len(users) == 0:
            continue

        # 1. co-visitation: positive scores of unseen items
        co = (h_chunk @ neighbours).tocoo()
        co_row, co_item, co_score = co.row.astype(np.int64), co.col.astype(np.int64), co.data
        ok = (co_score > 0) & ~_contains(seen_codes, co_row * n_items + co_item)
        co_row, co_item, co_score = co_row[ok], co_item[ok], co_score[ok]
        keep, rank = _top_per_row(co_row, co_item, co_score, config.n_covisit)
        picks = [(co_row[keep], co_item[keep], rank)]

        # 2. category-popular: the user's share of a category × the item's popularity. A category gives at
        # most n_category items, its most popular unseen ones: a pool of n_category + the user's seen there
        share = (h_chunk @ onehot).tocoo()
        total = np.bincount(share.row, weights=share.data, minlength=hi - lo)
        pair_row, pair_cat = share.row.astype(np.int64), share.col.astype(np.int64)
        pair_share = share.data / np.where(total[pair_row] > 0, total[pair_row], 1.0)
        ok = pair_share > 0
        pair_row, pair_cat, pair_share = pair_row[ok], pair_cat[ok], pair_share[ok]
        seen_in = np.bincount(seen_row * n_cats + item_category[seen_item], minlength=(hi - lo) * n_cats)
        pool_len = np.minimum(config.n_category + seen_in[pair_row * n_cats + pair_cat], category_len[pair_cat])
        pair, item = _pools(category_start[pair_cat], pool_len, in_category)
        row = pair_row[pair]
        ok = ~_contains(seen_codes, row * n_items + item)
        pair, item, row = pair[ok], item[ok], row[ok]
        keep, rank = _top_per_row(row, item, pair_share[pair] * pop_norm[item], config.n_category)
        picks.append((row[keep], item[keep], rank))

        # 3. global popular: the n_popular most popular unseen items
        seen_count = np.bincount(seen_row, minlength=hi - lo)[users]
        pool_len = np.minimum(config.n_popular + seen_count, n_items)
        owner, item = _pools(np.zeros(len(users), dtype=np.int64), pool_len, by_popularity)
        row = users[owner]
        ok = ~_contains(seen_codes, row * n_items + item)
        row, item = row[ok], item[ok]
        rank = _ragged_arange(np.bincount(row, minlength=hi - lo)[users])  # pools are in user, popularity order
        picks.append((row[rank < config.n_popular], item[rank < config.n_popular], rank[rank < config.n_popular]))

        # merge by source, then rank; an item keeps its first source
        row = np.concatenate([p[0] for p in picks])
        item = np.concatenate([p[1] for p in picks])
        src = np.concatenate([np.full(len(p[0]), k, dtype=np.int8) for k, p in enumerate(picks)])
        order = np.lexsort((np.concatenate([p[2] for p in picks]), src, row))
        row, item, src = row[order], item[order], src[order]
        first = np.sort(np.unique(row * n_items + item, return_index=True)[1])
        row, item, src = row[first], item[first], src[first]
        counts[lo:hi] = np.bincount(row, minlength=hi - lo)
        items_out.append(item)
        source_out.append(src)
        # the co-visitation score of every candidate (0 where it has none), whatever source brought it
        score_out.append(_lookup(co_row * n_items + co_item, co_score, row * n_items + item))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Candidates(offsets, _concat(items_out, np.int64), _concat(source_out, np.int8),
                      _concat(score_out, float), global_popular)


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def candidates_frame(candidates: Candidates, log: EventLog, catalog: Catalog, scores: np.ndarray | None,
                     as_of_ts: pd.Timestamp, limit: int | None = None, source: str = "retrieval") -> pd.DataFrame:
    """Each user's list as one row for the offline store (feature view user_candidates_v1).

    Columns: user_id, event_timestamp, candidate_item_ids, candidate_scores, candidate_source (what
    scored the list, e.g. "batch-ranker v3").
    `scores` are the batch ranker's scores aligned with `candidates.items`; lists are sorted by them,
    best first, and cut to `limit`. Users with no history have no row: serving falls back to the
    global popular list (`popular_frame`).
    """
    counts = np.diff(candidates.offsets)
    owner = np.repeat(np.arange(len(counts)), counts)
    sc = np.asarray(scores if scores is not None else candidates.retrieval_score, dtype=float)
    # per user best first; equal scores keep their candidate order
    order = np.lexsort((np.arange(len(sc)), -sc, owner))
    keep = order[_ragged_arange(counts) < (limit if limit is not None else len(sc) + 1)]
    kept = np.minimum(counts, limit) if limit is not None else counts
    cuts = np.cumsum(kept)[:-1]
    has = kept > 0
    rows_user = [str(u) for u in np.asarray(log.user_ids)[:len(counts)][has]]
    rows_items = [a.tolist() for a in np.split(catalog.item_ids[candidates.items[keep]].astype(str), cuts)]
    rows_scores = [a.tolist() for a in np.split(sc[keep], cuts)]
    rows_items = [x for x, h in zip(rows_items, has, strict=True) if h]
    rows_scores = [x for x, h in zip(rows_scores, has, strict=True) if h]
    ts = pd.Timestamp(as_of_ts).tz_convert("UTC") if pd.Timestamp(as_of_ts).tzinfo else \
        pd.Timestamp(as_of_ts).tz_localize("UTC")
    return pd.DataFrame({
        "user_id": rows_user,
        "event_timestamp": pd.Series([ts] * len(rows_user), dtype="datetime64[us, UTC]"),
        "candidate_item_ids": rows_items,
        "candidate_scores": rows_scores,
        "candidate_source": [source] * len(rows_user),
    })


NEIGHBOURS_PER_ITEM = 100  # item_neighbours_v1 list length (100 beat 30 with EASE, above)
SEQUENCE_NEIGHBOURS_PER_ITEM = 100  # item_sequence_neighbours_v1 list length (serving reads ≤ 10 rows per request)


def item_neighbours_frame(covisit: sparse.csr_matrix, catalog: Catalog, as_of_ts: pd.Timestamp,
                          n: int = NEIGHBOURS_PER_ITEM, ids_field: str = "neighbour_item_ids",
                          scores_field: str = "neighbour_scores") -> pd.DataFrame:
    """Each item's n strongest neighbours in an item×item matrix, for serving's session candidates and the online
    model's features of the session's last items (models/online.py `last_items_scores_from_lists`):
    item_id, event_timestamp, `ids_field`, `scores_field` (best first). Items without neighbours have no row.
    The defaults are item_neighbours_v1's; `sequence_neighbours_frame` writes item_sequence_neighbours_v1."""
    covisit = covisit.tocsr()
    ids, neighbours, scores = [], [], []
    for i in range(covisit.shape[0]):
        lo, hi = covisit.indptr[i], covisit.indptr[i + 1]
        if hi == lo:
            continue
        cols, vals = covisit.indices[lo:hi], covisit.data[lo:hi]
        order = np.argsort(-vals, kind="stable")[:n]
        ids.append(str(catalog.item_ids[i]))
        neighbours.append([str(catalog.item_ids[c]) for c in cols[order]])
        scores.append([float(v) for v in vals[order]])
    ts = pd.Timestamp(as_of_ts)
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    return pd.DataFrame({"item_id": ids,
                         "event_timestamp": pd.Series([ts] * len(ids), dtype="datetime64[us, UTC]"),
                         ids_field: neighbours, scores_field: scores})


def sequence_neighbours_frame(sequence: sparse.csr_matrix, catalog: Catalog, as_of_ts: pd.Timestamp,
                              n: int = SEQUENCE_NEIGHBOURS_PER_ITEM) -> pd.DataFrame:
    """The item_sequence_neighbours_v1 rows of `sequence_neighbours_matrix`: sequence_item_ids, sequence_scores."""
    return item_neighbours_frame(sequence, catalog, as_of_ts, n, "sequence_item_ids", "sequence_scores")
