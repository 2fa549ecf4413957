"""MLflow for the two models: log a run with everything that made it, register it, gate the `champion` alias.

Rules (DESIGN.md §3, MLflow):

* `batch-ranker`: every run records params, metrics on the later-window holdout, the feature
  service, the data window and the validation result, and registers a version. The `champion`
  alias moves to it only if validation passed and it beats the current champion on the *same*
  holdout (the champion is re-scored on it; PRIMARY_METRIC decides, higher is better). The first
  version that passes validation becomes champion.
* `online-ranker`: an update is registered only if it passed the sanity check on recent
  examples, and then it becomes champion (the newest sane update is what serving should use).

Serving loads by alias (`load_champion`) and polls for a moved alias (`ChampionWatcher`), so a new
champion is picked up without a restart.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.online import ONLINE_FEATURES, SanityResult, coefficients
from models.train import BatchRanker, TrainingError, describe_params, evaluate_ranker

BATCH_MODEL = "batch-ranker"
ONLINE_MODEL = "online-ranker"
CHAMPION_ALIAS = "champion"
PRIMARY_METRIC = "ndcg@10"
BATCH_EXPERIMENT = "tandem-batch-ranker"
ONLINE_EXPERIMENT = "tandem-online-ranker"


class RegistryError(RuntimeError):
    """The tracking server or a registered model could not be used; the message says which and why."""


@dataclass
class Registration:
    model_name: str
    run_id: str
    version: str | None  # None: nothing registered (e.g. an online update that failed its sanity check)
    champion: bool
    previous_champion: str | None
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    reason: str


@dataclass
class LoadedModel:
    """A registered model loaded by alias: the object to score with and where it came from."""

    name: str
    version: str
    run_id: str
    model: Any  # BatchRanker for batch-ranker, sklearn Pipeline for online-ranker
    feature_columns: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # the version's tags, e.g. feature_service


def _mlflow(tracking_uri: str):
    import os

    # run links and artifact progress bars on stdout would interleave with the CLI's and the batch run's output
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow, MlflowClient(tracking_uri)


def champion_version(model_name: str, tracking_uri: str) -> str | None:
    """The version the `champion` alias points at, or None if the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    _, client = _mlflow(tracking_uri)
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise RegistryError(f"cannot read alias {CHAMPION_ALIAS!r} of {model_name!r} at {tracking_uri}: {exc}") from exc


def load_champion(model_name: str, tracking_uri: str) -> LoadedModel:
    """Load the model the `champion` alias points at; RegistryError if there is none."""
    version = champion_version(model_name, tracking_uri)
    if version is None:
        raise RegistryError(f"{model_name!r} has no {CHAMPION_ALIAS!r} version at {tracking_uri}: "
                            f"train one first (`tandem train {'batch' if model_name == BATCH_MODEL else 'online'}`)")
    return load_version(model_name, version, tracking_uri)


def load_version(model_name: str, version: str, tracking_uri: str) -> LoadedModel:
    """Load one registered version (batch: xgboost flavour; online: sklearn flavour)."""
    mlflow, client = _mlflow(tracking_uri)
    mv = client.get_model_version(model_name, version)
    uri = f"models:/{model_name}/{version}"
    try:
        if model_name == ONLINE_MODEL or mv.tags.get("flavor") == "sklearn":
            columns = json.loads(mv.tags.get("feature_columns", "[]")) or list(ONLINE_FEATURES)
            if columns != list(ONLINE_FEATURES):
                raise RegistryError(f"{model_name} v{version} was trained on online features {columns}, not the "
                                    f"current {list(ONLINE_FEATURES)}: train a new one (`tandem train online`)")
            model = mlflow.sklearn.load_model(uri)
            return LoadedModel(model_name, str(version), mv.run_id, model, columns, dict(mv.tags))
        booster = mlflow.xgboost.load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"{model_name} v{version} cannot be loaded as a tandem model: {exc}") from None
    if hasattr(booster, "get_booster"):  # a model logged through xgboost's scikit-learn API
        booster = booster.get_booster()
    columns = list(booster.feature_names or json.loads(mv.tags.get("feature_columns", "[]")))
    if not columns:
        raise RegistryError(f"{model_name} v{version} records no feature columns (not a tandem batch ranker)")
    model = BatchRanker(booster, columns)
    return LoadedModel(model_name, str(version), mv.run_id, model, columns, dict(mv.tags))


class ChampionWatcher:
    """Holds the current champion and reloads it when the alias moves (checked at most every `poll_s`).

    Serving keeps one per model and calls `get()` per request: the check is a timestamp comparison
    unless `poll_s` has passed, so a new champion is picked up without a restart.
    """

    def __init__(self, model_name: str, tracking_uri: str, poll_s: float = 30.0,
                 loader: Callable[[str, str, str], LoadedModel] = load_version):
        self.model_name, self.tracking_uri, self.poll_s, self.loader = model_name, tracking_uri, poll_s, loader
        self._current: LoadedModel | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def get(self) -> LoadedModel | None:
        """The champion (None if there is none yet); on a registry error the previous champion keeps serving."""
        now = time.monotonic()
        if self._current is not None and now - self._checked < self.poll_s:
            return self._current
        with self._lock:
            if self._current is not None and now - self._checked < self.poll_s:
                return self._current
            self._checked = now
            try:
                version = champion_version(self.model_name, self.tracking_uri)
                if version is not None and (self._current is None or self._current.version != version):
                    self._current = self.loader(self.model_name, version, self.tracking_uri)
            except Exception:  # noqa: BLE001 - serving must keep answering with what it has
                if self._current is None:
                    raise
            return self._current


def _experiment(mlflow: Any, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else mlflow.create_experiment(name)


def _log_json(mlflow: Any, obj: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(obj, indent=2, default=str))
        mlflow.log_artifact(str(path))


def _requirements(package: str) -> list[str]:
    """The model's pinned requirements, stated rather than inferred (inference costs seconds per logged model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in (package, "numpy", "pandas")]


def _metric_name(name: str) -> str:
    return name.replace("@", "_at_")


def register_batch_ranker(ranker: BatchRanker, holdout: pd.DataFrame, *, feature_service: str,
                          data_window: dict[str, Any], validation: dict[str, Any], tracking_uri: str,
                          model_name: str = BATCH_MODEL, experiment: str = BATCH_EXPERIMENT, k: int = 10,
                          primary_metric: str = PRIMARY_METRIC, extra_params: dict[str, Any] | None = None
                          ) -> Registration:
    """Log, register and (if it beats the champion on `holdout` and passed validation) promote a batch ranker.

    `holdout` is the later-window frame (user_id, item_id, event_timestamp, label + features);
    `data_window` names the training and holdout time ranges; `validation` is the result of the
    training-set checks ({"success": bool, ...}, e.g. `check_training_frame` or a GX checkpoint).
    """
    if "success" not in validation:
        raise RegistryError(f"validation result needs a 'success' key, got keys {sorted(validation)}")
    mlflow, client = _mlflow(tracking_uri)
    metrics = evaluate_ranker(ranker.predict(holdout), holdout, k=k)
    if primary_metric not in metrics:
        raise RegistryError(f"primary metric {primary_metric!r} is not among {sorted(metrics)}")
    previous = champion_version(model_name, tracking_uri)
    champion_metrics = None
    champion_note = ""
    if previous is not None:
        try:
            champ = load_version(model_name, previous, tracking_uri)
            champion_metrics = evaluate_ranker(champ.model.predict(holdout), holdout, k=k)
        except (TrainingError, RegistryError) as exc:
            champion_note = f"champion v{previous} cannot score this holdout ({exc})"
    if not validation["success"]:
        promote, reason = False, "validation failed: " + ("; ".join(map(str, validation.get("failures", []))) or "?")
    elif previous is None:
        promote, reason = True, "first validated version"
    elif champion_metrics is None:
        promote, reason = True, champion_note + "; the new version replaces it"
    elif metrics[primary_metric] > champion_metrics[primary_metric]:
        promote, reason = True, (f"{primary_metric} {metrics[primary_metric]:.4f} beats champion v{previous}'s "
                                 f"{champion_metrics[primary_metric]:.4f} on the same holdout")
    else:
        promote, reason = False, (f"{primary_metric} {metrics[primary_metric]:.4f} does not beat champion "
                                  f"v{previous}'s {champion_metrics[primary_metric]:.4f} on the same holdout")

    with mlflow.start_run(experiment_id=_experiment(mlflow, experiment)) as run:
        mlflow.log_params({**describe_params(ranker), **{str(a): str(b) for a, b in (extra_params or {}).items()},
                           "feature_service": feature_service,
                           "feature_columns": json.dumps(ranker.feature_columns),
                           "data_window.train_start": str(data_window.get("train", {}).get("start", "")),
                           "data_window.train_end": str(data_window.get("train", {}).get("end", "")),
                           "data_window.holdout_start": str(data_window.get("holdout", {}).get("start", "")),
                           "data_window.holdout_end": str(data_window.get("holdout", {}).get("end", "")),
                           "validation.success": str(bool(validation["success"]))})
        mlflow.log_metrics({_metric_name(key): float(v) for key, v in metrics.items()})
        if champion_metrics is not None:
            mlflow.log_metrics({f"champion_{_metric_name(key)}": float(v) for key, v in champion_metrics.items()})
        _log_json(mlflow, validation, "validation.json")
        _log_json(mlflow, data_window, "data_window.json")
        _log_json(mlflow, {"feature_service": feature_service, "feature_columns": ranker.feature_columns},
                  "features.json")
        mlflow.set_tags({"feature_service": feature_service, "validation": "passed" if validation["success"]
                         else "failed", "champion_decision": reason})
        info = mlflow.xgboost.log_model(ranker.booster, name="model", pip_requirements=_requirements("xgboost"))
    mv = mlflow.register_model(info.model_uri, model_name,
                               tags={"feature_service": feature_service, "flavor": "xgboost",
                                     "feature_columns": json.dumps(ranker.feature_columns),
                                     "validation": "passed" if validation["success"] else "failed",
                                     f"holdout_{_metric_name(primary_metric)}": f"{metrics[primary_metric]:.6f}",
                                     "champion_decision": reason})
    if promote:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, mv.version)
    return Registration(model_name, run.info.run_id, str(mv.version), promote, previous, metrics, champion_metrics,
                        reason)


def register_online_ranker(model: Any, sanity: SanityResult, *, data_window: dict[str, Any], tracking_uri: str,
                           examples_seen: int, model_name: str = ONLINE_MODEL, experiment: str = ONLINE_EXPERIMENT,
                           params: dict[str, Any] | None = None) -> Registration:
    """Log an online-model update; register it and make it champion only if it passed the sanity check."""
    mlflow, client = _mlflow(tracking_uri)
    previous = champion_version(model_name, tracking_uri)
    metrics = {"sanity_auc": float(sanity.auc), "sanity_rows": float(sanity.rows),
               "examples_seen": float(examples_seen)}
    if sanity.champion_auc is not None:
        metrics["champion_sanity_auc"] = float(sanity.champion_auc)
    with mlflow.start_run(experiment_id=_experiment(mlflow, experiment)) as run:
        mlflow.log_params({**{str(a): str(b) for a, b in (params or {}).items()},
                           "feature_columns": json.dumps(list(ONLINE_FEATURES)),
                           "data_window.start": str(data_window.get("start", "")),
                           "data_window.end": str(data_window.get("end", "")),
                           "validation.success": str(sanity.success)})
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_metrics({f"coef_{k}": v for k, v in coefficients(model).items()})
        _log_json(mlflow, sanity.as_dict(), "validation.json")
        _log_json(mlflow, data_window, "data_window.json")
        mlflow.set_tags({"validation": "passed" if sanity.success else "failed",
                         "champion_decision": sanity.reason})
        if not sanity.success:
            return Registration(model_name, run.info.run_id, None, False, previous, metrics, None,
                                f"not registered: sanity check failed ({sanity.reason})")
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=_requirements("scikit-learn"))
    mv = mlflow.register_model(info.model_uri, model_name,
                               tags={"flavor": "sklearn", "feature_columns": json.dumps(list(ONLINE_FEATURES)),
                                     "validation": "passed", "sanity_auc": f"{sanity.auc:.6f}"})
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, mv.version)
    return Registration(model_name, run.info.run_id, str(mv.version), True, previous, metrics, None,
                        "sanity check passed: the newest sane update is champion")
