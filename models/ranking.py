"""The ranking function: one user's top-k from what the online store holds, the way /recommend answers.

`rank` is the one place a list is decided. Serving calls it with what it read from Redis
(serving/service.py); `tandem evaluate` calls it with the same values held in memory — the batch
path's feature tables as of T and the stream processor's fold functions' output
(models/evaluate.py). Its steps:

1. candidates (`gather_candidates`): the sequence neighbours of the session's last items, the items
   EASE says go with them (`item_neighbours_v1`), popular items of the session's last category, the user's
   precomputed list, trending, then popular;
2. the batch ranker's log-odds on its feature service's columns (`models.rows.model_rows`);
3. the online ranker's log-odds on the stream features plus the batch score (`models.rows.online_inputs`);
4. the blend by the variant's online weight (`models.blend.blend_scores`), then `top_k`.

Nothing here does I/O: the values come in as `<view>__<feature>` → Python value, as Feast's
Redis rows decode (`CONTRACT` names the fields the ranking interprets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models import online
from models.blend import blend_scores, sigmoid
from models.registry import ONLINE_MODEL, LoadedModel
from models.rows import TREND_SCORE, model_rows, online_inputs

# candidate budget per request (DESIGN.md §6 sizes the hot path for 100 candidates)
MAX_CANDIDATES = 100
# the session's last 10 items (all the stream keeps): up to 30 of their sequence neighbours, then up to 40 of their
# item neighbours (EASE, item_neighbours_v1), of the 100. Chosen on MovieLens 100k's validation split (hybrid NDCG@10
# 0.1034 with co-visitation neighbours; 50 and 30: 0.1020); co-visitation alone then: 10 items and 60 beat 5 and 30
# there and on the demo data's; with EASE, 40/40 and 20/50 lost to 30/40 (0.1063, 0.1065 against 0.1080)
SEQUENCE_QUOTA = 30
NEIGHBOUR_QUOTA = 40
SESSION_CATEGORY_QUOTA = 20
TRENDING_QUOTA = 10
MAX_SESSION_ITEMS = 10
POPULAR_SIZE = 200  # the batch champion's picks for the default profile (a cold user's list), overall and per category
TRENDING_TOP_N = 50

SOURCE_SEQUENCE, SOURCE_NEIGHBOURS, SOURCE_SESSION_CATEGORY = "sequence", "neighbours", "session_category"
SOURCE_PRECOMPUTED, SOURCE_TRENDING, SOURCE_POPULAR = "precomputed", "trending", "popular"
BATCH_MODEL_MISSING, ONLINE_MODEL_MISSING = "batch_model_missing", "online_model_missing"


@dataclass(frozen=True)
class Contract:
    """The views and fields the ranking interprets (everything else numeric is passed to the models as-is)."""

    user_key: str = "user_id"
    item_key: str = "item_id"
    candidates: tuple[str, str] = ("user_candidates_v1", "candidate_item_ids")  # batch: precomputed, best first
    session_items: tuple[str, str] = ("user_session_v1", "last_item_ids")  # stream: newest first
    session_category: tuple[str, str] = ("user_session_v1", "last_category")
    item_category: tuple[str, str] = ("item_features_v1", "category")  # batch item features
    # the items EASE says go with this one (batch candidate step, strongest first) and their EASE weights
    neighbours: tuple[str, str] = ("item_neighbours_v1", "neighbour_item_ids")
    neighbour_scores: tuple[str, str] = ("item_neighbours_v1", "neighbour_scores")
    # items near this one in users' event sequences (batch candidate step, strongest first) and their scores
    sequence: tuple[str, str] = ("item_sequence_neighbours_v1", "sequence_item_ids")
    sequence_scores: tuple[str, str] = ("item_sequence_neighbours_v1", "sequence_scores")
    trending_view: str = "item_trending_v1"  # stream: refreshed every few seconds by serving
    trend_score: str = "trend_score"


CONTRACT = Contract()


@dataclass(frozen=True)
class Ranker:
    """A registered model as models/registry.py loaded it, scoring its own feature matrix in log-odds."""

    loaded: LoadedModel = field(repr=False)
    _checked: dict = field(default_factory=dict, repr=False, compare=False)  # registry schema → columns checked

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return tuple(self.loaded.feature_columns)

    @property
    def feature_service(self) -> str:
        """The FeatureService the model was trained with (recorded on its registered version)."""
        return self.loaded.tags.get("feature_service", "")

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds per row: the batch ranker's margin (`BatchRanker.predict_margin`) or the online
        pipeline's (`models.online.predict_margin`)."""
        if self.loaded.name == ONLINE_MODEL or not hasattr(self.loaded.model, "predict_margin"):
            return np.asarray(online.predict_margin(self.loaded.model, x), dtype=np.float64)
        return np.asarray(self.loaded.model.predict_margin(x), dtype=np.float64)


@dataclass(frozen=True)
class UserView:
    """What the online store knows about one user, as the ranking needs it."""

    user_id: str
    values: Mapping[str, float] = field(default_factory=dict)  # numeric user features by full name view__feature
    candidates: tuple[str, ...] = ()  # the batch-precomputed candidate list
    session_items: tuple[str, ...] = ()  # the stream's last_item_ids, newest first
    last_category: str | None = None
    updated_epoch: float | None = None  # event time of the freshest user feature row

    @property
    def known(self) -> bool:
        return bool(self.values or self.candidates or self.session_items)


def user_view(user_id: str, values: Mapping[str, Any], updated_epoch: float | None = None,
              contract: Contract = CONTRACT) -> UserView:
    """A UserView from one user's decoded online values (`<view>__<feature>` → value)."""
    candidates = values.get("__".join(contract.candidates)) or ()
    session_items = values.get("__".join(contract.session_items)) or ()
    category = values.get("__".join(contract.session_category))
    numeric = {k: float(v) for k, v in values.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return UserView(user_id=user_id, values=numeric, candidates=tuple(str(x) for x in candidates),
                    session_items=tuple(str(x) for x in session_items),
                    last_category=str(category) if category else None, updated_epoch=updated_epoch)


@dataclass(frozen=True)
class ItemState:
    """What serving holds of the catalogue: batch item features as materialized, plus the stream's trending."""

    item_ids: Sequence[str]
    index: Mapping[str, int]
    columns: Mapping[str, np.ndarray]  # numeric item columns by full name (trending included), aligned with item_ids
    categories: Sequence[str | None]
    neighbours: Mapping[str, Sequence[str]]  # item → its EASE neighbours, strongest first
    neighbour_scores: Mapping[str, Sequence[float]]
    trending: Sequence[str] = ()  # the top trending items (`trending_top`)
    popular: Sequence[str] = ()  # the batch champion's picks for the default profile (`default_popular`)
    popular_by_category: Mapping[str, Sequence[str]] = field(default_factory=dict)
    sequence: Mapping[str, Sequence[str]] = field(default_factory=dict)  # item → its sequence neighbours
    sequence_scores: Mapping[str, Sequence[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemColumns:
    """The item-keyed online values of a catalogue, split the way the ranking reads them."""

    columns: dict[str, np.ndarray]  # numeric features by full name, NaN where an item has none
    categories: list[str | None]
    neighbours: dict[str, tuple[str, ...]]
    neighbour_scores: dict[str, tuple[float, ...]]
    sequence: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sequence_scores: dict[str, tuple[float, ...]] = field(default_factory=dict)


def catalogue_columns(item_ids: Sequence[str], rows: Sequence[Mapping[str, Any]], contract: Contract = CONTRACT
                 ) -> ItemColumns:
    """Each item's decoded online values (`<view>__<feature>` → value, one mapping per item in `item_ids` order)
    as the ranking's columns: the category, the neighbour lists and every numeric value."""
    cat_name = "__".join(contract.item_category)
    id_lists = {"__".join(contract.neighbours): "neighbours", "__".join(contract.sequence): "sequence"}
    score_lists = {"__".join(contract.neighbour_scores): "neighbour_scores",
                   "__".join(contract.sequence_scores): "sequence_scores"}
    numeric: dict[str, np.ndarray] = {}
    categories: list[str | None] = []
    lists: dict[str, dict[str, tuple]] = {name: {} for name in (*id_lists.values(), *score_lists.values())}
    for i, (item_id, row) in enumerate(zip(item_ids, rows, strict=True)):
        category = None
        for name, value in row.items():
            if name == cat_name:
                category = None if value is None else str(value)
            elif name in id_lists:
                lists[id_lists[name]][item_id] = tuple(str(x) for x in value or ())
            elif name in score_lists:
                lists[score_lists[name]][item_id] = tuple(float(x) for x in value or ())
            elif isinstance(value, (int, float)):  # bool included, as Feast's bool_val decodes
                if name not in numeric:
                    numeric[name] = np.full(len(item_ids), np.nan)
                numeric[name][i] = float(value)
        categories.append(category)
    return ItemColumns(numeric, categories, **lists)


def gather_candidates(
    user: UserView,
    neighbours: Mapping[str, Sequence[str]],
    trending: Sequence[str],
    popular: Sequence[str],
    exclude: Iterable[str] = (),
    limit: int = MAX_CANDIDATES,
    session_category: Sequence[str] = (),
    sequence: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[str, str]]:
    """Merge candidate sources into at most `limit` unseen items, each with the source that contributed it.

    Order of precedence: the sequence neighbours of the session's last items, then their item neighbours
    (each round-robin over those items, newest first), popular items of the session's last category,
    the precomputed list, trending, then popular items to fill up (all of it for a cold user).
    """
    seen = set(exclude) | set(user.session_items)
    out: list[tuple[str, str]] = []
    taken: set[str] = set()

    def take(items: Iterable[str], source: str, quota: int) -> None:
        added = 0
        for item in items:
            if len(out) >= limit or added >= quota:
                return
            if item in seen or item in taken:
                continue
            taken.add(item)
            out.append((item, source))
            added += 1

    last = user.session_items[:MAX_SESSION_ITEMS]
    if sequence:
        take(_round_robin([sequence.get(item, ()) for item in last]), SOURCE_SEQUENCE, SEQUENCE_QUOTA)
    take(_round_robin([neighbours.get(item, ()) for item in last]), SOURCE_NEIGHBOURS, NEIGHBOUR_QUOTA)
    take(session_category, SOURCE_SESSION_CATEGORY, SESSION_CATEGORY_QUOTA)
    take(user.candidates, SOURCE_PRECOMPUTED, limit)
    take(trending, SOURCE_TRENDING, TRENDING_QUOTA)
    take(popular, SOURCE_POPULAR, limit)
    return out


def _round_robin(lists: Sequence[Sequence[str]]) -> Iterable[str]:
    longest = max((len(x) for x in lists), default=0)
    for i in range(longest):
        for items in lists:
            if i < len(items):
                yield items[i]


@dataclass(frozen=True)
class Ranked:
    item_id: str
    score: float
    batch_score: float | None
    online_score: float | None


def top_k(
    item_ids: Sequence[str],
    blended: np.ndarray,
    batch: np.ndarray | None,
    online: np.ndarray | None,
    k: int,
) -> list[Ranked]:
    """The k best items by blended score (ties keep candidate order, so results are stable).

    Scores are picked and cleaned (non-finite → 0.0) as arrays, then turned into Python floats in one
    `tolist()`: per item only the Ranked is built, which keeps this off the top of the /recommend profile.
    """
    if len(item_ids) == 0:
        return []
    order = np.argsort(-blended, kind="stable")[:k]
    scores = _finite(blended[order])
    batch_scores = [None] * len(scores) if batch is None else _finite(batch[order])
    online_scores = [None] * len(scores) if online is None else _finite(online[order])
    return [Ranked(item_ids[i], s, b, o)
            for i, s, b, o in zip(order.tolist(), scores, batch_scores, online_scores, strict=True)]


def _finite(x: np.ndarray) -> list[float]:
    """The values as Python floats, NaN and ±inf as 0.0 (JSON has no such numbers)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.isfinite(x), x, 0.0).tolist()


def default_popular(batch: Ranker | None, item_ids: Sequence[str], columns: Mapping[str, np.ndarray],
                    categories: Sequence[str | None], size: int = POPULAR_SIZE
                    ) -> tuple[list[str], dict[str, list[str]]]:
    """The batch ranker's best items for the default (empty) profile — what a cold user is shown — overall and
    per category (`size` each). Without a batch model: no popular list, categories in catalogue order."""
    order = np.arange(len(item_ids))
    if batch is not None and len(item_ids):
        scores = batch.score(model_rows(batch.feature_columns, {}, columns, order, categories))
        order = np.argsort(-scores, kind="stable")
    by_category: dict[str, list[str]] = {}
    for i in order.tolist():
        category = categories[i]
        if category is not None and len(by_category.setdefault(category, [])) < size:
            by_category[category].append(item_ids[i])
    popular = [item_ids[i] for i in order[:size].tolist()] if batch is not None else []
    return popular, by_category


def trending_top(item_ids: Sequence[str], trend_score: np.ndarray | None, n: int = TRENDING_TOP_N) -> list[str]:
    """The n items with the highest positive trend score, best first (ties by catalogue order)."""
    if trend_score is None or len(item_ids) == 0:
        return []
    score = np.asarray(trend_score, dtype=np.float64)
    ranked = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")[:n]
    return [item_ids[i] for i in ranked.tolist() if np.isfinite(score[i]) and score[i] > 0]


@dataclass(frozen=True)
class Ranking:
    """`rank`'s answer: the top items (probabilities, as the API reports them) and how they were decided."""

    items: list[Ranked]
    candidate_ids: list[str]  # every candidate scored, in gathering order
    missing: tuple[str, ...]  # models that were not there to score (BATCH_MODEL_MISSING, ONLINE_MODEL_MISSING)
    batch_logit: np.ndarray | None = None  # each candidate's batch log-odds (None: no batch model)
    online_logit: np.ndarray | None = None  # and online log-odds (None: no online model)


def candidate_ids(user: UserView, items: ItemState, exclude: Iterable[str] = ()) -> list[str]:
    """The catalogue items `rank` scores for the user, in gathering order (`gather_candidates` over `items`)."""
    popular = items.popular or items.trending or list(items.item_ids[:POPULAR_SIZE])
    in_category = items.popular_by_category.get(user.last_category, ()) if user.last_category else ()
    return [item for item, _ in gather_candidates(user, items.neighbours, items.trending, popular, exclude,
                                                  session_category=in_category, sequence=items.sequence)
            if item in items.index]


def rank(user: UserView, values: Mapping[str, Any], items: ItemState, batch: Ranker | None, online_model: Ranker | None,
         online_weight: float, k: int, now: float, exclude: Iterable[str] = ()) -> Ranking:
    """One user's top-k at `now`: candidates → batch ranker → online ranker → blend → top-k.

    `values` are the user's online values by full name (lists included), `user` their `user_view`.
    The blend and the cut are `blend_top_k`.
    """
    gathered = candidate_ids(user, items, exclude)
    batch_score, x = model_inputs(gathered, values, items, batch, now, online=online_model is not None)
    online_score = online_model.score(x) if online_model is not None and x is not None else None
    missing = []
    if batch is None:
        missing.append(BATCH_MODEL_MISSING)
    if online_model is None and online_weight > 0:
        missing.append(ONLINE_MODEL_MISSING)
    ranked = blend_top_k(gathered, batch_score, online_score, online_weight, k)
    return Ranking(ranked, gathered, tuple(missing), batch_score, online_score)


def model_inputs(item_ids: Sequence[str], values: Mapping[str, Any], items: ItemState, batch: Ranker | None,
                 now: float, online: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
    """For candidates of the catalogue: the batch ranker's log-odds (None without a batch model) and, if `online`,
    the online ranker's input rows (ONLINE_FEATURES, the batch score among them; None without candidates)."""
    if not item_ids:
        return None, None
    rows = np.fromiter((items.index[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
    categories = [items.categories[r] for r in rows.tolist()]
    batch_score = None
    if batch is not None:
        batch_score = batch.score(model_rows(batch.feature_columns, values, items.columns, rows, categories))
    if not online:
        return batch_score, None
    trend = items.columns.get(TREND_SCORE)
    x = online_inputs(np.zeros(len(rows)) if batch_score is None else batch_score, item_ids, categories, values,
                      items.neighbours, items.neighbour_scores, None if trend is None else trend[rows], now,
                      items.sequence, items.sequence_scores)
    return batch_score, x


def blend_top_k(item_ids: Sequence[str], batch_score: np.ndarray | None, online_score: np.ndarray | None,
                online_weight: float, k: int) -> list[Ranked]:
    """The last step of `rank`: blend both models' log-odds by the variant's weight, then the top k.

    Online weight 0 ranks by the batch score alone; with no batch score the online score decides, and
    with neither the candidate order stands (popular first for a cold user).
    """
    if batch_score is not None:
        blended = blend_scores(batch_score, online_score if online_weight > 0 else None, online_weight)
    elif online_score is not None:
        blended = online_score
    else:
        blended = -np.arange(len(item_ids), dtype=np.float64)
    # models score in log-odds and blend there (models/blend.py); the API reports probabilities
    return top_k(item_ids, sigmoid(blended), None if batch_score is None else sigmoid(batch_score),
                 None if online_score is None else sigmoid(online_score), k)
