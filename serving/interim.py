"""Stand-ins for the functions other branches own, kept in this one place until they land in main.

Each function here has the signature serving codes against; when the owning module lands,
the import in serving/ switches to it and the stand-in is deleted:

* `load_champion`       → models/registry.py (load the `champion` alias of a registered model)
* `blend_scores`        → models/blend.py (the pure blending function)
* `produce_interaction` → the stream branch's shared producer for the `interactions` topic
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tandem.schema import Event

CHAMPION_ALIAS = "champion"


def load_champion(name: str, tracking_uri: str, alias: str = CHAMPION_ALIAS) -> tuple[Any, str] | None:
    """Load the model the alias points at, as its native flavour (XGBoost, sklearn) or pyfunc; None if unset.

    Returns (model, version). Native flavours keep per-request scoring cheap: no DataFrame round trip.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    mlflow.set_tracking_uri(tracking_uri)
    # load the version the alias pointed at when asked, so (model, version) always agree
    uri = f"models:/{name}/{mv.version}"
    flavors = mlflow.models.get_model_info(uri).flavors
    if "xgboost" in flavors:
        model = mlflow.xgboost.load_model(uri)
    elif "sklearn" in flavors:
        model = mlflow.sklearn.load_model(uri)
    else:
        model = mlflow.pyfunc.load_model(uri)
    return model, str(mv.version)


def blend_scores(batch: np.ndarray, online: np.ndarray | None, online_weight: float) -> np.ndarray:
    """(1 - w) · batch + w · online; the batch score alone when there is no online score."""
    if online is None or online_weight <= 0.0:
        return batch
    return (1.0 - online_weight) * batch + online_weight * online


def produce_interaction(producer: Any, topic: str, event: Event) -> Any:
    """Send one validated event to the interactions topic, keyed by user id; returns the send future."""
    return producer.send(topic, key=event.user_id.encode(), value=event.to_json())
