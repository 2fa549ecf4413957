"""Stand-ins for the functions other branches own, kept in this one place until they land in main.

Each has the signature of the function that replaces it (read from those branches), so wiring
the real one is an import change in serving/ and deleting the stand-in here:

* `champion_version`, `load_version`, `LoadedModel` → models/registry.py
* `blend_scores`, `sigmoid`                           → models/blend.py
* `EventProducer`                                     → pipelines/stream/producer.py (stream branch)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tandem.schema import Event
from tandem.settings import Settings

CHAMPION_ALIAS = "champion"


@dataclass
class LoadedModel:
    """A registered model version loaded from MLflow: the object to score with and where it came from."""

    name: str
    version: str
    run_id: str
    model: Any
    feature_columns: list[str] = field(default_factory=list)


def champion_version(model_name: str, tracking_uri: str) -> str | None:
    """The version the `champion` alias points at, or None if the model or the alias does not exist yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(tracking_uri).get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_version(model_name: str, version: str, tracking_uri: str) -> LoadedModel:
    """Load one registered version in its native flavour (XGBoost or scikit-learn), else as a pyfunc."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mv = MlflowClient(tracking_uri).get_model_version(model_name, version)
    uri = f"models:/{model_name}/{version}"
    flavors = mlflow.models.get_model_info(uri).flavors
    if "xgboost" in flavors:
        model = mlflow.xgboost.load_model(uri)
    elif "sklearn" in flavors:
        model = mlflow.sklearn.load_model(uri)
    else:
        model = mlflow.pyfunc.load_model(uri)
    return LoadedModel(model_name, str(version), mv.run_id, model)


def blend_scores(batch_scores: np.ndarray, online_scores: np.ndarray | None, online_weight: float) -> np.ndarray:
    """(1 - w) · batch + w · online in log-odds; the batch score where there is no online score."""
    batch = np.asarray(batch_scores, dtype=float)
    if online_scores is None:
        return batch.copy()
    online = np.where(np.isnan(online_scores), batch, online_scores)
    return (1.0 - online_weight) * batch + online_weight * online


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Log-odds to probability (the API reports each model's score as a probability)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


class EventProducer:
    """A Kafka producer of schema events to the interactions topic, keyed by user id."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        from kafka import KafkaProducer

        config: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap, "acks": "all",
                                  "enable_idempotence": True, "linger_ms": 5}
        config.update(overrides)
        self.topic = settings.topic
        self._producer = KafkaProducer(**config)

    def send(self, event: Event) -> Any:
        """Queue one event (returns kafka-python's future)."""
        return self._producer.send(self.topic, key=event.user_id.encode(), value=event.to_json())

    def close(self) -> None:
        self._producer.close(timeout=5)
