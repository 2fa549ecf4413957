"""Candidate generation, computed in batch: what each user's precomputed list is made of.

For each user the list merges, in this order and without duplicates:

1. co-visitation — items that shared sessions with the items of the user's history (recent history
   weighs more, half-life HISTORY_HALF_LIFE_DAYS);
2. category-popular — the most popular items of the categories the user interacts with, weighted
   by the user's share of each category;
3. global popular — the fallback, and the whole list of a user with no history.

Items the user has already interacted with are never candidates. Everything here is pure numpy
and scipy.sparse over dense indices (models/features.py); users are processed in chunks so memory
stays bounded by chunk × items.
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
    chunk_users: int = 2_000
    chunk_cells: int = 20_000_000  # users per chunk x items: bounds the dense score arrays (8 bytes a cell)

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


def _top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """Per row, the column indices of the n highest finite scores (fewer where a row has fewer), best first."""
    n = min(n, scores.shape[1])
    if n <= 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def generate_candidates(log: EventLog, catalog: Catalog, as_of: float, config: CandidateConfig | None = None,
                        covisit: sparse.csr_matrix | None = None) -> Candidates:
    """Candidate lists for every user of `log` from the events before `as_of`, seen items excluded."""
    config = config or CandidateConfig()
    n_users, n_items = log.n_users, catalog.n_items
    hist = log.before(as_of)
    covisit = covisit if covisit is not None else covisitation_matrix(hist, n_items)
    h = history_matrix(log, n_users, n_items, as_of)
    pop = popularity(log, n_items, as_of)
    pop_norm = pop / pop.max() if pop.max() > 0 else pop
    onehot = sparse.csr_matrix((np.ones(n_items), (np.arange(n_items), catalog.item_category)),
                               shape=(n_items, catalog.n_categories))
    global_popular = popular_items(pop, config.max_candidates)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    items_out, source_out, score_out = [], [], []
    chunk = max(1, min(config.chunk_users, config.chunk_cells // max(n_items, 1)))
    for lo in range(0, n_users, chunk):
        hi = min(lo + chunk, n_users)
        h_chunk = h[lo:hi]
        seen = h_chunk.toarray() > 0
        has_history = seen.any(axis=1)
        co = np.asarray((h_chunk @ covisit).todense())
        co[seen] = -np.inf
        co[co <= 0] = -np.inf
        share = np.asarray((h_chunk @ onehot).todense())
        total = share.sum(axis=1, keepdims=True)
        share = np.divide(share, total, out=np.zeros_like(share), where=total > 0)
        cat_score = share[:, catalog.item_category] * pop_norm[None, :]
        cat_score[seen | (cat_score <= 0)] = -np.inf
        pop_score = np.broadcast_to(pop_norm + 1e-12, seen.shape).copy()
        pop_score[seen] = -np.inf
        picks = [(_top_rows(co, config.n_covisit), co, 0), (_top_rows(cat_score, config.n_category), cat_score, 1),
                 (_top_rows(pop_score, config.n_popular), pop_score, 2)]
        for r in range(hi - lo):
            if not has_history[r]:
                offsets[lo + r + 1] = 0
                continue
            chosen: dict[int, int] = {}
            for top, scores, src in picks:
                for item in top[r]:
                    if np.isfinite(scores[r, item]) and item not in chosen:
                        chosen[int(item)] = src
            its = np.fromiter(chosen.keys(), dtype=np.int64, count=len(chosen))
            items_out.append(its)
            source_out.append(np.fromiter(chosen.values(), dtype=np.int8, count=len(chosen)))
            sc = co[r, its]
            score_out.append(np.where(np.isfinite(sc), sc, 0.0))
            offsets[lo + r + 1] = len(its)
    offsets = np.cumsum(offsets)
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
    rows_user, rows_items, rows_scores = [], [], []
    for u in range(len(candidates.offsets) - 1):
        lo, hi = candidates.offsets[u], candidates.offsets[u + 1]
        if hi == lo:
            continue
        its = candidates.items[lo:hi]
        sc = scores[lo:hi] if scores is not None else candidates.retrieval_score[lo:hi]
        order = np.argsort(-sc, kind="stable")[:limit]
        rows_user.append(log.user_ids[u])
        rows_items.append([str(catalog.item_ids[i]) for i in its[order]])
        rows_scores.append([float(s) for s in sc[order]])
    ts = pd.Timestamp(as_of_ts).tz_convert("UTC") if pd.Timestamp(as_of_ts).tzinfo else \
        pd.Timestamp(as_of_ts).tz_localize("UTC")
    return pd.DataFrame({
        "user_id": rows_user,
        "event_timestamp": pd.Series([ts] * len(rows_user), dtype="datetime64[us, UTC]"),
        "candidate_item_ids": rows_items,
        "candidate_scores": rows_scores,
        "candidate_source": [source] * len(rows_user),
    })


def item_neighbours_frame(covisit: sparse.csr_matrix, catalog: Catalog, as_of_ts: pd.Timestamp, n: int = 30
                          ) -> pd.DataFrame:
    """Each item's n strongest co-visited items, for serving's session candidates and the online model's
    `last_item_covisit` (models/online.py `last_item_covisit_from_lists`): item_id, event_timestamp,
    neighbour_item_ids, neighbour_scores (best first). Items without co-visits have no row."""
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
                         "neighbour_item_ids": neighbours, "neighbour_scores": scores})
