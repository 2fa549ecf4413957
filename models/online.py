"""The online ranker: a logistic model over stream features plus the batch score, updated incrementally.

What it learns: how much a user's *recent* behaviour should move the batch ranker's score — the
weight of the item neighbours (EASE) of the session's last items, of the candidate's category in the current
session and in the user's decayed recent taste, of the item's trend, and how far to trust the
batch score itself, separately for users with a batch profile and users without one. Its rows
describe a candidate relative to the other candidates of the same request (its gap to the best
batch score, its share of the best neighbour score), so it learns to order a request's candidates.

It is a scikit-learn pipeline (StandardScaler → SGDClassifier, log loss) whose `partial_fit` takes
each batch of labelled examples the stream sink emits: rows of the candidate list serving would have
scored when the user picked one of them, the picked candidate as a positive and others as negatives
(models/replay_store.py `labelled_examples`).

How often: the stream sink hands examples over in micro-batches; every `update_every` examples
the model takes one partial_fit step. A step becomes a new `online-ranker` version only if it
passes `sanity_check` on the most recent examples (models/registry.py `log_online_ranker`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from models.metrics import auc
from models.session import SessionView, session_view_from_features

ONLINE_FEATURES: tuple[str, ...] = (
    "batch_logit",
    "batch_logit_gap",  # the candidate's batch log-odds minus the best of this request's candidates (≤ 0)
    "returning",  # 1 when the user has a batch profile (history before the last batch run), else 0
    "batch_logit_returning",  # batch_logit × returning: how far to trust the batch score, per kind of user
    "last_item_neighbour_log",  # log1p of the EASE weights from the session's last items
    "neighbour_share",  # that score over the best of this request's candidates (0 when none has any)
    "last_item_sequence_log",  # log1p of the sequence-neighbour score with the session's last items
    "sequence_share",  # that score over the best of this request's candidates
    "session_category_share",
    "active_session_category_share",
    "recent_category_share",
    "session_active",
    "trend_log",
)
LABEL = "label"
MIN_SANITY_AUC = 0.55
MAX_AUC_DROP = 0.02


class OnlineModelError(ValueError):
    """Examples or a model the online ranker cannot use; the message names the problem."""


def last_items_scores_from_lists(last_item_ids: list[str], candidate_ids: list[str],
                                 neighbours: dict[str, tuple[list[str], list[float]]]) -> np.ndarray:
    """Neighbour score of each candidate from the session's last items (newest first), newer items weighing more
    (1/position), from their item_neighbours rows: `neighbours[item_id] = (neighbour_item_ids, neighbour_scores)`.
    """
    index = {c: k for k, c in enumerate(candidate_ids)}
    out = np.zeros(len(candidate_ids))
    for pos, last in enumerate(last_item_ids, start=1):
        ids, scores = neighbours.get(last, ([], []))
        for other, score in zip(ids, scores, strict=False):
            k = index.get(other)
            if k is not None:
                out[k] += score / pos
    return out


def encode_neighbour_lists(ids: Mapping[str, Sequence[str]], scores: Mapping[str, Sequence[float]],
                           catalogue: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each item's neighbour rows as positions in `catalogue` and their scores, for scoring the whole catalogue
    at once (`last_items_scores_encoded`): neighbours outside the catalogue, and ids without a score, drop out
    as `last_items_scores_from_lists` skips them."""
    index = {c: k for k, c in enumerate(catalogue)}
    encoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for item_id, neighbour_ids in ids.items():
        pairs = [(index[o], float(s)) for o, s in zip(neighbour_ids, scores.get(item_id, ()), strict=False)
                 if o in index]
        encoded[item_id] = (np.fromiter((k for k, _ in pairs), dtype=np.int64, count=len(pairs)),
                            np.fromiter((s for _, s in pairs), dtype=np.float64, count=len(pairs)))
    return encoded


def last_items_scores_encoded(last_item_ids: Sequence[str], n_items: int,
                              encoded: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """`last_items_scores_from_lists` over a whole catalogue of `n_items`, from `encode_neighbour_lists`: the
    same sums, without a Python step per neighbour (the evaluation scores every item this way per query)."""
    out = np.zeros(n_items)
    for pos, last in enumerate(last_item_ids, start=1):
        entry = encoded.get(last)
        if entry is not None:
            np.add.at(out, entry[0], entry[1] / pos)
    return out


def _share_of_best(x: np.ndarray) -> np.ndarray:
    top = float(x.max()) if len(x) else 0.0
    return x / top if top > 0 else np.zeros(len(x))


def online_features(batch_logit: np.ndarray, items: np.ndarray, item_category: np.ndarray, view: SessionView | None,
                    neighbours_with_last: np.ndarray, trend: np.ndarray, now: float, returning: bool = False,
                    sequence_with_last: np.ndarray | None = None) -> np.ndarray:
    """The online model's rows (ONLINE_FEATURES order) for one request's candidates at time `now`.

    The rows are relative to the request: `batch_logit_gap` and `neighbour_share` compare each candidate
    with the best of the same candidates, so the rows must be computed for the whole candidate list at once
    (what serving scores; training examples are rows picked from such a list). `neighbours_with_last` and
    `sequence_with_last` come from `last_items_scores_from_lists` over the item_neighbours and
    item_sequence_neighbours rows; `trend` is each candidate's trend score; `returning` says whether the
    user has a batch profile. A user the stream has never seen has zero session features.
    """
    items = np.asarray(items, dtype=np.int64)
    n = len(items)
    if not n:
        return np.zeros((0, len(ONLINE_FEATURES)))
    cats = np.asarray(item_category)[items]
    if view is None:
        session_share = recent_share = np.zeros(n)
        active = 0.0
    else:
        session_share = view.session_category_share()[cats]
        recent_share = view.recent_category_share(now)[cats]
        active = 1.0 if view.is_active(now) else 0.0
    batch = np.nan_to_num(np.asarray(batch_logit, dtype=float), nan=0.0)
    neighbours = np.maximum(np.asarray(neighbours_with_last, dtype=float), 0.0)
    sequence = np.zeros(n) if sequence_with_last is None else np.maximum(
        np.asarray(sequence_with_last, dtype=float), 0.0)
    known = 1.0 if returning else 0.0
    return np.column_stack([
        batch,
        batch - batch.max(),
        np.full(n, known),
        known * batch,
        np.log1p(neighbours),
        _share_of_best(neighbours),
        np.log1p(sequence),
        _share_of_best(sequence),
        session_share,
        active * session_share,
        recent_share,
        np.full(n, active),
        np.log1p(np.maximum(np.asarray(trend, dtype=float), 0.0)),
    ])


def online_features_from_store(batch_logit: np.ndarray, candidate_ids: list[str], candidate_categories: list[str],
                               session_values: dict | None, neighbour_lists: dict[str, tuple[list[str], list[float]]],
                               trend_scores: np.ndarray, now: float, returning: bool = False,
                               sequence_lists: dict[str, tuple[list[str], list[float]]] | None = None
                               ) -> np.ndarray:
    """ONLINE_FEATURES rows from what serving reads, by id: the same values `online_features` computes.

    `session_values` are the user's user_session_v1 values (None for a user the stream has not seen),
    `neighbour_lists` the item_neighbours rows of the session's last items, `trend_scores` the
    candidates' item_trending_v1 trend_score (0 where missing), `now` the request time (Unix seconds),
    `returning` whether the user has a batch profile, `sequence_lists` the item_sequence_neighbours rows of
    the session's last items.
    """
    n = len(candidate_ids)
    if not session_values:
        return online_features(batch_logit, np.arange(n), np.zeros(n, dtype=np.int64), None, np.zeros(n),
                               trend_scores, now, returning)
    cats = sorted({*candidate_categories, *(session_values.get("session_categories") or [])})
    index = {c: i for i, c in enumerate(cats)}
    view = session_view_from_features(session_values, index, {}, len(cats))
    last_ids = list(session_values.get("last_item_ids") or [])
    neighbours = last_items_scores_from_lists(last_ids, list(candidate_ids), neighbour_lists)
    sequence = last_items_scores_from_lists(last_ids, list(candidate_ids), sequence_lists or {})
    item_category = np.array([index[c] for c in candidate_categories], dtype=np.int64)
    return online_features(batch_logit, np.arange(n), item_category, view, neighbours, trend_scores, now, returning,
                           sequence)


def new_online_model(seed: int = 7, alpha: float = 1e-4, eta0: float = 0.01) -> Pipeline:
    """An untrained online ranker: standardize, then logistic regression by SGD."""
    return Pipeline([
        ("scale", StandardScaler()),
        ("sgd", SGDClassifier(loss="log_loss", alpha=alpha, learning_rate="constant", eta0=eta0,
                              random_state=seed)),
    ])


def _matrix(x: pd.DataFrame | np.ndarray) -> np.ndarray:
    if isinstance(x, pd.DataFrame):
        missing = [c for c in ONLINE_FEATURES if c not in x.columns]
        if missing:
            raise OnlineModelError(f"examples lack online feature column(s) {', '.join(missing)}")
        return x[list(ONLINE_FEATURES)].to_numpy(dtype=float)
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(ONLINE_FEATURES):
        raise OnlineModelError(f"expected rows with {len(ONLINE_FEATURES)} online features "
                               f"({', '.join(ONLINE_FEATURES)}), got shape {arr.shape}")
    return arr


def partial_fit(model: Pipeline, x: pd.DataFrame | np.ndarray, y: np.ndarray) -> Pipeline:
    """One incremental step on a batch of labelled examples (scaler statistics update too)."""
    arr = _matrix(x)
    y = np.asarray(y).astype(int)
    if len(arr) != len(y):
        raise OnlineModelError(f"partial_fit: {len(arr)} rows but {len(y)} labels")
    if len(arr) == 0:
        return model
    if not np.isfinite(arr).all():
        raise OnlineModelError("partial_fit: examples contain NaN or inf features")
    scaler, sgd = model.named_steps["scale"], model.named_steps["sgd"]
    scaler.partial_fit(arr)
    sgd.partial_fit(scaler.transform(arr), y, classes=np.array([0, 1]))
    return model


def is_fitted(model: Pipeline) -> bool:
    return hasattr(model.named_steps["sgd"], "coef_")


def predict_margin(model: Pipeline, x: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Log-odds per row; ValueError if the model has not seen any example yet."""
    arr = _matrix(x)
    if not is_fitted(model):
        raise OnlineModelError("the online model has not been fitted on any example yet")
    if len(arr) == 0:
        return np.zeros(0)
    scaler, sgd = model.named_steps["scale"], model.named_steps["sgd"]
    z = (arr - scaler.mean_) / np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return z @ sgd.coef_.ravel() + sgd.intercept_[0]


def coefficients(model: Pipeline) -> dict[str, float]:
    """The learned weight of each online feature (on standardized inputs), for logs and docs."""
    if not is_fitted(model):
        return {}
    return {name: float(w) for name, w in zip(ONLINE_FEATURES, model.named_steps["sgd"].coef_.ravel(), strict=True)}


@dataclass
class SanityResult:
    success: bool
    auc: float
    champion_auc: float | None
    rows: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"success": self.success, "auc": self.auc, "champion_auc": self.champion_auc, "rows": self.rows,
                "reason": self.reason}


def sanity_check(candidate: Pipeline, recent: pd.DataFrame, champion: Pipeline | None = None,
                 min_auc: float = MIN_SANITY_AUC, max_drop: float = MAX_AUC_DROP) -> SanityResult:
    """Does the updated model still rank recent examples sensibly? AUC ≥ min_auc and ≥ champion's − max_drop."""
    if LABEL not in recent.columns:
        raise OnlineModelError(f"sanity_check: recent examples need a {LABEL!r} column")
    labels = recent[LABEL].to_numpy()
    if len(np.unique(labels)) < 2:
        return SanityResult(False, float("nan"), None, len(recent), "recent examples hold only one label")
    if not is_fitted(candidate):
        return SanityResult(False, float("nan"), None, len(recent), "the candidate has not been fitted")
    coef = candidate.named_steps["sgd"].coef_
    if not np.isfinite(coef).all():
        return SanityResult(False, float("nan"), None, len(recent), "the candidate's weights are not finite")
    score = auc(labels, predict_margin(candidate, recent))
    champ_score = auc(labels, predict_margin(champion, recent)) if champion is not None and is_fitted(champion) \
        else None
    if score < min_auc:
        return SanityResult(False, score, champ_score, len(recent), f"AUC {score:.3f} < minimum {min_auc}")
    if champ_score is not None and score < champ_score - max_drop:
        return SanityResult(False, score, champ_score, len(recent),
                            f"AUC {score:.3f} is more than {max_drop} below the champion's {champ_score:.3f}")
    return SanityResult(True, score, champ_score, len(recent), "passed")


@dataclass
class OnlineTrainer:
    """Buffers labelled examples from the stream sink and takes a partial_fit step every `update_every` rows.

    `recent` keeps the last `recent_rows` examples for the sanity check. Call `add(frame)` with the
    sink's rows (ONLINE_FEATURES + label); it returns True when a step was taken.
    """

    model: Pipeline = field(default_factory=new_online_model)
    update_every: int = 500
    recent_rows: int = 5_000
    _buffer: list[pd.DataFrame] = field(default_factory=list)
    _buffered: int = 0
    recent: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[*ONLINE_FEATURES, LABEL]))
    examples_seen: int = 0
    updates: int = 0

    def add(self, examples: pd.DataFrame) -> bool:
        if examples.empty:
            return False
        self._buffer.append(examples)
        self._buffered += len(examples)
        if self._buffered < self.update_every:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        if not self._buffer:
            return
        batch = pd.concat(self._buffer, ignore_index=True)
        self._buffer, self._buffered = [], 0
        partial_fit(self.model, batch, batch[LABEL].to_numpy())
        self.examples_seen += len(batch)
        self.updates += 1
        frames = [f for f in (self.recent, batch[[*ONLINE_FEATURES, LABEL]]) if not f.empty]
        self.recent = pd.concat(frames, ignore_index=True).tail(self.recent_rows)
