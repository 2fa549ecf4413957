"""The batch ranker: XGBoost on a point-in-time training frame, evaluated on a later time window.

The training frame is the batch path's contract (pipelines/batch `build_training_set`): one row
per (user_id, item_id, event_timestamp) with `label` (1 = the user interacted, 0 = sampled
negative) and numeric feature columns. Which columns are features is the FeatureService's
business (`feature_columns_from_service`), never a list copied here. Features whose name contains
"affinity" get a non-decreasing monotone constraint, so more taste for an item's category can
never lower its score; so do the ones the training set names in `frame.attrs["monotone"]` (the
feature definitions' `monotone` tags: an item's interaction counts), in the direction it gives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from models.metrics import auc, grouped_ranking_metrics

MONOTONE_INCREASING_MARKERS: tuple[str, ...] = ("affinity",)
KEY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_timestamp", "label")
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "auc",
    "eta": 0.1,
    "max_depth": 6,
    "min_child_weight": 2.0,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "lambda": 1.0,
    "tree_method": "hist",
    # one thread: on a shared machine OpenMP's spin-waiting makes small trainings and predictions ~10x slower
    "nthread": 1,
    "seed": 7,
}
DEFAULT_ROUNDS = 150
NUMERIC_FEAST_TYPES = ("Int32", "Int64", "Float32", "Float64", "Bool")


class TrainingError(ValueError):
    """A training frame or configuration the ranker cannot use; the message names the problem."""


def monotone_constraints(feature_columns: list[str] | tuple[str, ...], directions: Mapping[str, int] | None = None
                         ) -> tuple[int, ...]:
    """Per column: its entry in `directions` (+1: the score never falls as it rises, -1: never rises), else +1 for
    category-affinity features, else 0."""
    directions = directions or {}
    return tuple(int(directions[name]) if name in directions else
                 1 if any(m in name for m in MONOTONE_INCREASING_MARKERS) else 0 for name in feature_columns)


def feature_columns_from_service(feature_service: Any, full_feature_names: bool = False) -> list[str]:
    """The numeric feature columns a Feast FeatureService puts in a training frame, in service order."""
    columns = []
    for projection in feature_service.feature_view_projections:
        for f in projection.features:
            if type(f.dtype).__name__ in NUMERIC_FEAST_TYPES or str(f.dtype) in NUMERIC_FEAST_TYPES:
                columns.append(f"{projection.name_to_use()}__{f.name}" if full_feature_names else f.name)
    if not columns:
        raise TrainingError(f"feature service {feature_service.name!r} has no numeric features to train on")
    return columns


@dataclass
class BatchRanker:
    """A trained booster and the feature columns it reads, in order."""

    booster: xgb.Booster
    feature_columns: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # predictions are small batches (one user's candidates): threads cost more than they save
        self.booster.set_param({"nthread": 1})

    def _matrix(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(frame, pd.DataFrame):
            missing = [c for c in self.feature_columns if c not in frame.columns]
            if missing:
                raise TrainingError(f"frame lacks feature column(s) {', '.join(missing)} the ranker was trained on")
            return frame[self.feature_columns].to_numpy(dtype=np.float32)
        x = np.asarray(frame, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_columns):
            raise TrainingError(f"expected a 2-d array with {len(self.feature_columns)} feature columns, "
                                f"got shape {x.shape}")
        return x

    def predict(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Probability of interaction per row."""
        x = self._matrix(frame)
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.inplace_predict(x), dtype=float)

    def predict_margin(self, frame: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Log-odds per row (what the online model takes as its batch-score feature)."""
        x = self._matrix(frame)
        if len(x) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.inplace_predict(x, predict_type="margin"), dtype=float)


def check_training_frame(frame: pd.DataFrame, feature_columns: list[str]) -> dict[str, Any]:
    """The checks a frame must pass before training: keys present, both labels, numeric finite-or-NaN features.

    Returns {"success": bool, "checks": {name: bool}, "failures": [messages]} (logged with the run).
    """
    failures = []
    missing = [c for c in (*KEY_COLUMNS, *feature_columns) if c not in frame.columns]
    if missing:
        failures.append(f"missing column(s) {', '.join(missing)}")
    checks: dict[str, bool] = {"columns_present": not missing}
    if not missing:
        labels = set(pd.unique(frame["label"]))
        checks["labels_binary"] = labels <= {0, 1}
        checks["both_labels"] = labels >= {0, 1}
        if not checks["labels_binary"]:
            failures.append(f"label has values {sorted(labels)[:5]}, expected 0/1")
        if not checks["both_labels"]:
            failures.append(f"label needs both 0 and 1, got only {sorted(labels)}")
        non_numeric = [c for c in feature_columns if not pd.api.types.is_numeric_dtype(frame[c])]
        checks["features_numeric"] = not non_numeric
        if non_numeric:
            failures.append(f"feature column(s) {', '.join(non_numeric)} are not numeric")
        else:
            values = frame[feature_columns].to_numpy(dtype=float)
            checks["features_no_inf"] = not np.isinf(values).any()
            if not checks["features_no_inf"]:
                failures.append("feature values contain +/-inf")
        checks["not_empty"] = len(frame) > 0
        if not checks["not_empty"]:
            failures.append("the frame has no rows")
    return {"success": not failures, "checks": checks, "failures": failures}


def train_batch_ranker(frame: pd.DataFrame, feature_columns: list[str], params: dict[str, Any] | None = None,
                       num_boost_round: int = DEFAULT_ROUNDS) -> BatchRanker:
    """Fit XGBoost (binary:logistic) on `frame`; affinity features are monotone non-decreasing, and the features in
    `frame.attrs["monotone"]` monotone in its direction."""
    feature_columns = list(feature_columns)
    result = check_training_frame(frame, feature_columns)
    if not result["success"]:
        raise TrainingError(f"training frame rejected: {'; '.join(result['failures'])}")
    params = {**DEFAULT_PARAMS, **(params or {})}
    constraints = monotone_constraints(feature_columns, frame.attrs.get("monotone"))
    params["monotone_constraints"] = "(" + ",".join(str(c) for c in constraints) + ")"
    dtrain = xgb.DMatrix(frame[feature_columns].to_numpy(dtype=np.float32), label=frame["label"].to_numpy(),
                         feature_names=feature_columns)
    booster = xgb.train(params, dtrain, num_boost_round=num_boost_round)
    return BatchRanker(booster, feature_columns, {**params, "num_boost_round": num_boost_round})


def evaluate_ranker(scores: np.ndarray, frame: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """AUC over rows, and HitRate/NDCG/Recall@k ranking each user's rows by `scores` (positives are relevant)."""
    labels = frame["label"].to_numpy()
    out = {"auc": auc(labels, scores)}
    ranking = grouped_ranking_metrics(frame["user_id"].to_numpy(), labels, scores, k=k)
    out.update({key: float(v) for key, v in ranking.items()})
    out["rows"] = float(len(frame))
    return out


def time_window(frame: pd.DataFrame) -> dict[str, str]:
    """First and last event_timestamp of a frame (ISO), for the run's data window."""
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    return {"start": ts.min().isoformat(), "end": ts.max().isoformat()}


def describe_params(ranker: BatchRanker) -> dict[str, str]:
    """The ranker's params as strings for MLflow (dicts and lists as JSON)."""
    return {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v) for k, v in ranker.params.items()}
