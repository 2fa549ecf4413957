"""Online-model examples from an in-process replay of a dataset: what `tandem train online` trains on.

The stream sink (models/online_sink.py) emits these rows live; `tandem train online` produces
them offline by replaying the latest window of a dataset through the stream processor's fold
functions (models/stream_state.py): each interaction with an item new to the user gives the
item as a positive and sampled items of the pool a system would have shown as negatives, with
stream features from the state just before the event (models/jobs.py `online_examples`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.candidates import popular_items
from models.features import Catalog, EventLog
from models.online import LABEL, ONLINE_FEATURES, OnlineTrainer, last_item_covisit, online_features
from models.session import StreamState
from models.train import BatchRanker, InProcessWindow


@dataclass
class ExampleConfig:
    negatives: int = 4  # sampled negatives per revealed interaction
    stream_candidates: int = 50  # top stream-scored items in the pool negatives are drawn from
    category_candidates: int = 30  # top items of the user's recent categories in that pool
    trend_weight: float = 0.1  # weight of the normalized trend next to co-visitation in the stream score
    seed: int = 7


def _top_k(scores: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """The k items with the highest finite scores, best first."""
    finite = np.isfinite(scores)
    if not finite.all():
        scores, items = scores[finite], items[finite]
    if len(items) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        return items[part[np.argsort(-scores[part], kind="stable")]]
    return items[np.argsort(-scores, kind="stable")]


class BatchScores:
    """The batch ranker's log-odds for every item, per user, on one window's features (computed once per user)."""

    def __init__(self, ranker: BatchRanker, window: InProcessWindow, n_items: int):
        self.ranker, self.window, self.n_items = ranker, window, n_items
        self._cache: dict[int, np.ndarray] = {}
        self._ordered: dict[int, np.ndarray] = {}

    def all_items(self, user: int) -> np.ndarray:
        scores = self._cache.get(user)
        if scores is None:
            items = np.arange(self.n_items)
            scores = self.ranker.predict_margin(self.window.rows(np.full(self.n_items, user), items))
            self._cache[user] = scores
        return scores

    def ordered_candidates(self, user: int) -> np.ndarray:
        """The user's candidate list (models/candidates.py), best batch score first."""
        ordered = self._ordered.get(user)
        if ordered is None:
            cand = self.window.candidates.of(user)
            ordered = cand[np.argsort(-self.all_items(user)[cand], kind="stable")]
            self._ordered[user] = ordered
        return ordered


class Replayer:
    """Answers top-k for each system and learns from revealed interactions, one event at a time."""

    def __init__(self, catalog: Catalog, window: InProcessWindow, batch: BatchScores, stream: StreamState,
                 trainer: OnlineTrainer, config: ExampleConfig, rng: np.random.Generator,
                 user_ids: np.ndarray | None = None):
        self.catalog, self.window, self.batch, self.stream = catalog, window, batch, stream
        self.trainer, self.config, self.rng = trainer, config, rng
        self.user_ids = user_ids  # labels the examples' user_id column (the index as a string without it)
        self.n_items = catalog.n_items
        self.all_items = np.arange(self.n_items)
        pop = window.item_popularity
        self.popular_order = popular_items(pop, self.n_items)
        self.pop_norm = pop / pop.max() if pop.max() > 0 else pop

    def stream_scores(self, user: int, now: float) -> np.ndarray:
        """Stream-only score of every item: co-visitation with the user's last items + normalized trend."""
        view = self.stream.view(user)
        trend = self.stream.trend(now)
        top = trend.max()
        score = self.config.trend_weight * (trend / top if top > 0 else trend)
        if view is not None and view.last_items:
            last = np.asarray(view.last_items, dtype=np.int64)
            weights = 1.0 / np.arange(1, len(last) + 1)
            score = score + np.asarray(self.window.covisit[last].T @ weights).ravel()
        return score

    def hybrid_pool(self, user: int, now: float, stream_score: np.ndarray, seen: set[int]) -> np.ndarray:
        pool = set(self.window.candidates.of(user).tolist())
        pool.update(_top_k(stream_score, self.all_items, self.config.stream_candidates).tolist())
        view = self.stream.view(user)
        if view is not None:
            share = view.recent_category_share(now)
            recent = share[self.catalog.item_category] * self.pop_norm
            pool.update(_top_k(np.where(recent > 0, recent, -np.inf), self.all_items,
                               self.config.category_candidates).tolist())
        pool.difference_update(seen)
        return np.fromiter(pool, dtype=np.int64, count=len(pool))

    def online_rows(self, user: int, items: np.ndarray, batch_logit: np.ndarray, now: float) -> np.ndarray:
        view = self.stream.view(user)
        return online_features(batch_logit, items, self.catalog.item_category, view,
                               last_item_covisit(view, items, self.window.covisit), self.stream.trend(now)[items], now)

    def examples(self, user: int, item: int, now: float, seen: set[int]) -> pd.DataFrame:
        """Labelled rows for one revealed interaction: the item (1) and sampled pool items (0)."""
        s = self.stream_scores(user, now)
        pool = self.hybrid_pool(user, now, s, seen | {item})
        n_neg = min(self.config.negatives, len(pool))
        negatives = self.rng.choice(pool, size=n_neg, replace=False) if n_neg else np.zeros(0, dtype=np.int64)
        items = np.r_[np.int64(item), negatives.astype(np.int64)]
        rows = self.online_rows(user, items, self.batch.all_items(user)[items], now)
        frame = pd.DataFrame(rows, columns=list(ONLINE_FEATURES))
        frame[LABEL] = np.r_[1, np.zeros(n_neg, dtype=int)]
        frame["user_id"] = self.user_ids[user] if self.user_ids is not None else str(user)
        frame["item_id"] = self.catalog.item_ids[items].astype(str)
        return frame


def reveal_event(stream: StreamState, seen: dict[int, set[int]], log: EventLog, j: int) -> None:
    """Show event j to the stream state and mark its item seen by its user."""
    user, item = int(log.user[j]), int(log.item[j])
    stream.observe(user, item, bool(log.positive[j]), float(log.ts[j]), int(log.session[j]))
    seen.setdefault(user, set()).add(item)
