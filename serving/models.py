"""The batch and online champions serving scores with, swapped in place when their MLflow alias moves.

A background thread polls the `champion` alias of `batch-ranker` and `online-ranker` every
`TANDEM_MODEL_POLL_S` seconds. A new version is loaded beside the old one and then published as
one immutable `Champions` value: a request reads that value once, so it finishes with the pair it
started with, and nothing in flight fails during a swap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from serving.interim import LoadedModel, champion_version, load_version
from tandem.settings import Settings

log = logging.getLogger("tandem.serving.models")

BATCH_MODEL = "batch-ranker"
ONLINE_MODEL = "online-ranker"


@dataclass(frozen=True)
class Ranker:
    """A loaded model with the feature names it expects, scoring a float matrix in log-odds."""

    name: str
    version: str
    feature_names: tuple[str, ...]
    predict: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    _resolved: dict = field(default_factory=dict, repr=False, compare=False)  # schema → resolved columns

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict(x), dtype=np.float64).reshape(-1)


def as_ranker(loaded: LoadedModel) -> Ranker:
    """Wrap what the registry loaded so it scores in log-odds (models/blend.py blends in log-odds).

    Handles the models branch's BatchRanker (`predict_margin`), an XGBoost Booster or sklearn-API model,
    a scikit-learn estimator/pipeline (`decision_function`), and an MLflow pyfunc as a last resort.
    """
    import xgboost as xgb

    name, version, model = loaded.name, loaded.version, loaded.model
    columns = tuple(loaded.feature_columns)
    if hasattr(model, "predict_margin"):
        return Ranker(name, version, columns or tuple(getattr(model, "feature_columns", ())), model.predict_margin)
    if isinstance(model, xgb.XGBModel):
        model = _named_booster(model)
    if isinstance(model, xgb.Booster):
        booster = model
        # one thread per prediction: ~100 rows gain nothing from OpenMP, and its thread wake-ups cost
        # tens of ms on a busy 2-core box; request-level concurrency comes from the server's threads
        booster.set_param({"nthread": 1})
        return Ranker(name, version, columns or tuple(booster.feature_names or ()),
                      lambda x: booster.inplace_predict(x, validate_features=False, predict_type="margin"))
    names = columns or tuple(str(n) for n in getattr(model, "feature_names_in_", ()))
    if hasattr(model, "decision_function"):
        return Ranker(name, version, names, model.decision_function)
    if hasattr(model, "predict_proba"):
        return Ranker(name, version, names, lambda x: _logit(model.predict_proba(x)[:, 1]))
    if hasattr(model, "metadata") and hasattr(model, "predict"):  # mlflow pyfunc: assume it returns probabilities
        import pandas as pd

        schema = model.metadata.get_input_schema()
        names = names or (tuple(schema.input_names()) if schema is not None else ())
        return Ranker(name, version, names,
                      lambda x: _logit(np.asarray(model.predict(pd.DataFrame(x, columns=list(names))))))
    raise TypeError(f"{name} v{version}: cannot score a {type(model).__name__}")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _named_booster(model: Any) -> Any:
    booster = model.get_booster()
    if booster.feature_names is None and getattr(model, "feature_names_in_", None) is not None:
        booster.feature_names = [str(n) for n in model.feature_names_in_]
    return booster


@dataclass(frozen=True)
class Champions:
    batch: Ranker | None = None
    online: Ranker | None = None


class ChampionHolder:
    """Holds the current champions and follows their aliases in the registry."""

    def __init__(self, settings: Settings, names: Sequence[str] = (BATCH_MODEL, ONLINE_MODEL)):
        self.settings = settings
        self.batch_name, self.online_name = names
        self.current = Champions()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.polled_once = threading.Event()
        self.on_change: list[Callable[[Champions], None]] = []

    def start(self) -> ChampionHolder:
        self.poll()
        threading.Thread(target=self._loop, name="champion-poll", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.model_poll_s):
            self.poll()

    def poll(self) -> Champions:
        """Check both aliases once; load and publish whatever moved. MLflow being down keeps what is loaded."""
        with self._lock:
            champions = self.current
            for slot, name in (("batch", self.batch_name), ("online", self.online_name)):
                held: Ranker | None = getattr(champions, slot)
                try:
                    version = champion_version(name, self.settings.mlflow_uri)
                    if version == (held.version if held else None):
                        continue
                    ranker = as_ranker(load_version(name, version, self.settings.mlflow_uri)) if version else None
                except Exception as exc:  # registry unreachable or a broken artifact: keep serving the old one
                    log.warning("could not refresh %s@champion: %s", name, exc)
                    continue
                champions = replace(champions, **{slot: ranker})
                log.info("%s@champion: %s → %s", name, held.version if held else None,
                         ranker.version if ranker else None)
            if champions is not self.current:
                self.current = champions
                for callback in self.on_change:
                    callback(champions)
            self.polled_once.set()
            return champions
