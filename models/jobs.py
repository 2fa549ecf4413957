"""The steps `tandem train batch|online` run, and the thin calls the batch path makes into models/.

* `train_and_register_batch` — the batch path's model step: given the point-in-time training
  frame (Feast historical retrieval) and a later holdout frame, check, train, log, register,
  gate the champion; `train_batch_from_training_set` — the same from a training set a batch run saved.
* `write_offline_tables` — the candidate step's tables (candidate lists, item neighbours, popular).
* `update_online_model` — continues the online champion on time-ordered labelled examples (the
  rows `models.replay_store` builds) in micro-batches, and registers every update that passes its
  sanity check.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.online import LABEL, new_online_model, partial_fit, sanity_check
from models.registry import (
    BATCH_MODEL,
    ONLINE_MODEL,
    Registration,
    RegistryError,
    champion_version,
    load_champion,
    register_batch_ranker,
    register_online_ranker,
)
from models.train import BatchRanker, TrainingError, check_training_frame, time_window, train_batch_ranker

POPULAR_TABLE = "popular_items"
NEIGHBOURS_TABLE = "item_neighbours"  # the offline table of feature view NEIGHBOURS_VIEW
NEIGHBOURS_VIEW = "item_neighbours_v1"
SEQUENCE_NEIGHBOURS_VIEW = "item_sequence_neighbours_v1"
Progress = Callable[[int, int], None]


@dataclass
class BatchTrainResult:
    registration: Registration
    train_rows: int
    holdout_rows: int
    candidates_path: Path | None = None
    candidate_users: int = 0


def train_and_register_batch(train_frame: pd.DataFrame, holdout_frame: pd.DataFrame, feature_columns: list[str],
                             feature_service: str, tracking_uri: str, validation: dict[str, Any] | None = None,
                             params: dict[str, Any] | None = None, model_name: str = BATCH_MODEL
                             ) -> tuple[BatchRanker, Registration]:
    """Check the frame, train the XGBoost ranker, log and register it; the champion gate decides the alias.

    `validation` is an upstream result (e.g. a GX checkpoint); the frame checks are always added.
    A frame that fails its checks raises TrainingError naming them: nothing is trained or registered.
    """
    checks = check_training_frame(train_frame, feature_columns)
    merged = {"success": checks["success"] and (validation or {}).get("success", True),
              "frame_checks": checks, "upstream": validation, "failures": list(checks["failures"])}
    if validation is not None and not validation.get("success", True):
        merged["failures"].append("upstream validation failed")
    if not checks["success"]:
        raise TrainingError(f"training frame rejected: {'; '.join(checks['failures'])}")
    ranker = train_batch_ranker(train_frame, feature_columns, params=params)
    window = {"train": time_window(train_frame), "holdout": time_window(holdout_frame)}
    registration = register_batch_ranker(ranker, holdout_frame, feature_service=feature_service, data_window=window,
                                         validation=merged, tracking_uri=tracking_uri, model_name=model_name)
    return ranker, registration


TRAINING_SETS_DIR = "training_sets"
DEFAULT_FEATURE_SERVICE = "ranker_batch_v1"


def latest_training_set(offline_dir: Path, feature_service: str = DEFAULT_FEATURE_SERVICE) -> Path | None:
    """The newest training set a batch run saved for `feature_service`, or None if there is none."""
    root = Path(offline_dir) / TRAINING_SETS_DIR / feature_service
    files = sorted(root.glob("as_of=*.parquet")) if root.is_dir() else []
    return files[-1] if files else None


def train_batch_from_training_set(path: Path, tracking_uri: str, feature_service: str = DEFAULT_FEATURE_SERVICE,
                                  model_name: str = BATCH_MODEL) -> tuple[BatchRanker, Registration]:
    """Train on a saved Feast training set (`tandem batch run`'s): earlier 80% trains, latest 20% is the holdout.

    The frame's "<view>__<feature>" columns are the feature service's; the ranker uses the numeric ones
    plus the derived user_item_category_affinity (models/batch_steps.py).
    """
    from models.batch_steps import prepare_feast_frame, split_by_time

    frame = pd.read_parquet(path)
    service_columns = [c for c in frame.columns if "__" in c]
    frame, columns = prepare_feast_frame(frame, service_columns)
    train, holdout = split_by_time(frame)
    validation = {"success": True, "checkpoint": f"training set {path.name} passed its GX checkpoint when saved"}
    return train_and_register_batch(train, holdout, columns, feature_service, tracking_uri, validation=validation,
                                    model_name=model_name)


def write_offline_tables(candidates: pd.DataFrame, popular: pd.DataFrame, neighbours: pd.DataFrame,
                         as_of: datetime, sequence_neighbours: pd.DataFrame) -> Path:
    """Publish the day's candidate lists (view user_candidates_v1), item neighbours (view item_neighbours_v1) and
    sequence neighbours (view item_sequence_neighbours_v1) through pipelines/batch/offline.py, and the
    popular_items table, each as the `date=<as_of's day>` partition; return the lists' dir."""
    from pipelines.batch import offline
    from tandem.settings import get_settings

    day = as_of.astimezone(UTC).date()
    path = offline.write_day("user_candidates_v1", candidates, day, as_of)
    offline.write_day(NEIGHBOURS_VIEW, neighbours, day, as_of)  # cast to the view's schema, materialized online
    offline.write_day(SEQUENCE_NEIGHBOURS_VIEW, sequence_neighbours, day, as_of)
    root = get_settings().offline_dir
    for name, frame in ((POPULAR_TABLE, popular),):
        table_dir = root / name
        stage = offline.staging_dir(root) / name / offline.partition_name(day)
        stage.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), stage / "part-0.parquet",
                       coerce_timestamps="us")
        offline.publish(stage.parent, table_dir)
        shutil.rmtree(stage.parent.parent, ignore_errors=True)
    return path


@dataclass
class OnlineTrainResult:
    registrations: list[Registration]
    examples: int
    updates: int


def update_online_model(examples: pd.DataFrame, tracking_uri: str, publish_every: int = 4_000,
                        progress: Progress | None = None, model_name: str = ONLINE_MODEL) -> OnlineTrainResult:
    """Continue the online champion (or a new model) on time-ordered examples, publishing sane updates.

    Prequential: each micro-batch of `publish_every` examples is first the sanity check of the model
    trained on everything before it, then training data. An update that passes is registered and
    becomes champion; one that fails is logged with the reason and not registered.
    """
    if LABEL not in examples.columns:
        raise TrainingError(f"online examples need a {LABEL!r} column")
    try:
        champion = load_champion(model_name, tracking_uri).model if champion_version(model_name, tracking_uri) \
            else None
    except RegistryError:
        champion = None
    model = _copy(champion) if champion is not None else new_online_model()
    examples = examples.sort_values("event_timestamp", kind="stable") if "event_timestamp" in examples else examples
    chunks = [examples.iloc[i:i + publish_every] for i in range(0, len(examples), publish_every)]
    registrations: list[Registration] = []
    fitted_on = 0
    for n, chunk in enumerate(chunks):
        if fitted_on:
            sanity = sanity_check(model, chunk, champion)
            window = {"start": str(examples["event_timestamp"].iloc[0]) if "event_timestamp" in examples else "",
                      "end": str(chunk["event_timestamp"].iloc[0]) if "event_timestamp" in chunk else ""}
            reg = register_online_ranker(model, sanity, data_window=window, tracking_uri=tracking_uri,
                                         examples_seen=fitted_on, params={"publish_every": publish_every},
                                         model_name=model_name)
            registrations.append(reg)
            if reg.champion:
                champion = _copy(model)
        partial_fit(model, chunk, chunk[LABEL].to_numpy())
        fitted_on += len(chunk)
        if progress:
            progress(n + 1, len(chunks))
    return OnlineTrainResult(registrations, fitted_on, len(chunks))


def _copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model)


def read_dataset(dataset_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and items of a dataset directory (pipelines/dataset.py layout) as pandas."""
    from pipelines.dataset import read_events, read_items

    return read_events(dataset_dir).to_pandas(), read_items(dataset_dir).to_pandas()
