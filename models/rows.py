"""Online rows → the models' inputs: the one place the ranking turns what the store holds into model features.

Pure functions (no I/O), unit-tested against the training set's columns, so a skew between what the
batch ranker trained on and what serving feeds it fails a test instead of silently scoring NaNs:

* `model_rows` — the batch ranker's feature matrix. Every column is either a column of the
  FeatureService the model was trained with (the run records it, `feature_service` tag), read from
  the online rows under the same `<view>__<feature>` name the Feast training set uses, or
  `user_item_category_affinity`, computed per request by the same function training uses
  (`models.batch_steps.category_affinity`).
* `session_values` / `neighbour_lists` / `online_inputs` — the online ranker's rows through
  `models.online.online_features_from_store`, the function the models stage defines for serving.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from models.batch_steps import CATEGORY_AFFINITY, USER_CATEGORIES, USER_CATEGORY_SHARES, category_affinity
from models.online import online_features_from_store

SESSION_VIEW = "user_session_v1"
PROFILE_VIEW = "user_features_v1"  # the user's batch profile: a user with a row there is a returning user
TREND_SCORE = "item_trending_v1__trend_score"
UNKNOWN_CATEGORY = "unknown"
# derived per request from other online values (never read from the store under this name)
DERIVED_COLUMNS: tuple[str, ...] = (CATEGORY_AFFINITY,)


class FeatureSkewError(ValueError):
    """The model reads a feature serving cannot produce the way training did; the message names it."""


def service_columns(feature_service: Any) -> list[str]:
    """The `<view>__<feature>` columns a Feast FeatureService puts in a training set (full feature names)."""
    return [f"{p.name_to_use()}__{f.name}" for p in feature_service.feature_view_projections for f in p.features]


def check_columns(feature_columns: Sequence[str], available: Collection[str] | None, feature_service: str) -> None:
    """Raise FeatureSkewError unless every model column is in its feature service or derived here."""
    if available is None:
        raise FeatureSkewError(f"the model was trained with feature service {feature_service!r}, which is not in "
                               f"the Feast registry serving reads: its features cannot be served as trained")
    allowed = set(available)
    missing = [c for c in feature_columns if c not in allowed and c not in DERIVED_COLUMNS]
    if missing:
        raise FeatureSkewError(f"model column(s) {', '.join(missing)} are neither in feature service "
                               f"{feature_service!r} nor derived by serving ({', '.join(DERIVED_COLUMNS)})")


def _number(value: Any) -> float:
    if value is None or isinstance(value, (str, bytes, list, tuple)):
        return np.nan
    return float(value)


def _listish(value: Any) -> list | None:
    return None if value is None else list(value)


def model_rows(
    feature_columns: Sequence[str],
    user_values: Mapping[str, Any],
    item_columns: Mapping[str, np.ndarray],
    rows: np.ndarray,
    item_categories: Sequence[str | None],
) -> np.ndarray:
    """The batch ranker's input for one user's candidates: one row per candidate, columns in model order.

    `user_values` are the user's online values by full name (`user_features_v1__events_30d`, lists
    included), `item_columns` the catalog's numeric item columns by full name, `rows` each candidate's
    index into them, `item_categories` each candidate's category. A value the store does not hold is
    NaN, as Feast's point-in-time join leaves it in the training set. Check the columns against the
    model's feature service once with `check_columns` (serving does, per model and registry).
    """
    rows = np.asarray(rows, dtype=np.int64)
    x = np.full((len(rows), len(feature_columns)), np.nan, dtype=np.float32)
    for j, name in enumerate(feature_columns):
        if name == CATEGORY_AFFINITY:
            x[:, j] = category_affinity(_listish(user_values.get(USER_CATEGORIES)),
                                        _listish(user_values.get(USER_CATEGORY_SHARES)), item_categories)
        elif name in item_columns:
            x[:, j] = item_columns[name][rows]
        elif name in user_values:
            x[:, j] = _number(user_values[name])
    return x


def session_values(user_values: Mapping[str, Any], view: str = SESSION_VIEW) -> dict[str, Any] | None:
    """The user's stream session features by bare name (None when the stream has written nothing for the user)."""
    prefix = f"{view}__"
    values = {k[len(prefix):]: v for k, v in user_values.items() if k.startswith(prefix) and v is not None}
    return values or None


def has_profile(user_values: Mapping[str, Any], view: str = PROFILE_VIEW) -> bool:
    """Whether the user has a batch profile row online (history before the last batch run)."""
    prefix = f"{view}__"
    return any(v is not None for k, v in user_values.items() if k.startswith(prefix))


def neighbour_lists(last_item_ids: Sequence[str], neighbours: Mapping[str, Sequence[str]],
                    neighbour_scores: Mapping[str, Sequence[float]]) -> dict[str, tuple[list[str], list[float]]]:
    """The item_neighbours rows (ids, scores) of the session's last items, as `online_features_from_store` takes
    them; an item whose scores are missing has none (it adds no neighbour score)."""
    return {i: (list(neighbours[i]), list(neighbour_scores.get(i, ()))) for i in last_item_ids if i in neighbours}


def online_inputs(
    batch_logit: np.ndarray,
    item_ids: Sequence[str],
    item_categories: Sequence[str | None],
    user_values: Mapping[str, Any],
    neighbours: Mapping[str, Sequence[str]],
    neighbour_scores: Mapping[str, Sequence[float]],
    trend_scores: np.ndarray | None,
    now: float,
    sequence: Mapping[str, Sequence[str]] | None = None,
    sequence_scores: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """The online ranker's rows (models.online.ONLINE_FEATURES) for one user's candidates at `now`."""
    session = session_values(user_values)
    returning = has_profile(user_values)
    last = [str(i) for i in (session or {}).get("last_item_ids") or ()]
    trend = np.zeros(len(item_ids)) if trend_scores is None else np.nan_to_num(
        np.asarray(trend_scores, dtype=float), nan=0.0)
    return online_features_from_store(np.asarray(batch_logit, dtype=float), list(item_ids),
                                      [c or UNKNOWN_CATEGORY for c in item_categories], session,
                                      neighbour_lists(last, neighbours, neighbour_scores), trend, now, returning,
                                      neighbour_lists(last, sequence or {}, sequence_scores or {}))
