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

from serving.interim import CHAMPION_ALIAS, load_champion
from tandem.settings import Settings

log = logging.getLogger("tandem.serving.models")

BATCH_MODEL = "batch-ranker"
ONLINE_MODEL = "online-ranker"


@dataclass(frozen=True)
class Ranker:
    """A loaded model with the feature names it expects and one way to score a float matrix."""

    name: str
    version: str
    feature_names: tuple[str, ...]
    predict: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    _resolved: dict = field(default_factory=dict, repr=False, compare=False)  # schema → resolved columns

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.predict(x), dtype=np.float64).reshape(-1)


def as_ranker(name: str, version: str, model: Any) -> Ranker:
    """Wrap an XGBoost Booster/sklearn-API model, a scikit-learn estimator or an MLflow pyfunc as a Ranker."""
    import xgboost as xgb

    if isinstance(model, xgb.Booster):
        names = tuple(model.feature_names or ())
        # one thread per prediction: ~100 rows gain nothing from OpenMP, and its thread wake-ups cost
        # tens of ms on a busy 2-core box; request-level concurrency comes from the server's threads
        model.set_param({"nthread": 1})
        # inplace_predict skips DMatrix construction: the cheapest path for ~100 rows
        return Ranker(name, version, names, lambda x: model.inplace_predict(x, validate_features=False))
    if isinstance(model, xgb.XGBModel):
        return as_ranker(name, version, _named_booster(model))
    if hasattr(model, "predict_proba"):
        names = tuple(str(n) for n in getattr(model, "feature_names_in_", ()))
        return Ranker(name, version, names, lambda x: model.predict_proba(x)[:, 1])
    if hasattr(model, "metadata") and hasattr(model, "predict"):  # mlflow pyfunc
        import pandas as pd

        schema = model.metadata.get_input_schema()
        names = tuple(schema.input_names()) if schema is not None else ()
        return Ranker(name, version, names,
                      lambda x: np.asarray(model.predict(pd.DataFrame(x, columns=list(names)))))
    if hasattr(model, "predict"):
        names = tuple(str(n) for n in getattr(model, "feature_names_in_", ()))
        return Ranker(name, version, names, model.predict)
    raise TypeError(f"{name} v{version}: cannot score a {type(model).__name__}")


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

    def __init__(self, settings: Settings, names: Sequence[str] = (BATCH_MODEL, ONLINE_MODEL),
                 alias: str = CHAMPION_ALIAS):
        self.settings = settings
        self.batch_name, self.online_name = names
        self.alias = alias
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

    def _alias_version(self, name: str) -> str | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return str(MlflowClient(self.settings.mlflow_uri).get_model_version_by_alias(name, self.alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def poll(self) -> Champions:
        """Check both aliases once; load and publish whatever moved. MLflow being down keeps what is loaded."""
        with self._lock:
            champions = self.current
            for slot, name in (("batch", self.batch_name), ("online", self.online_name)):
                held: Ranker | None = getattr(champions, slot)
                try:
                    version = self._alias_version(name)
                    if version == (held.version if held else None):
                        continue
                    loaded = load_champion(name, self.settings.mlflow_uri, self.alias) if version else None
                    ranker = as_ranker(name, loaded[1], loaded[0]) if loaded else None
                except Exception as exc:  # registry unreachable or a broken artifact: keep serving the old one
                    log.warning("could not refresh %s@%s: %s", name, self.alias, exc)
                    continue
                champions = replace(champions, **{slot: ranker})
                log.info("%s@%s: %s → %s", name, self.alias, held.version if held else None,
                         ranker.version if ranker else None)
            if champions is not self.current:
                self.current = champions
                for callback in self.on_change:
                    callback(champions)
            self.polled_once.set()
            return champions
