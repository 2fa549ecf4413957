"""The steps `tandem train batch|online` run, and the thin calls the batch path makes into models/.

* `train_and_register_batch` — the batch path's model step: given the point-in-time training
  frame and a later holdout frame (Feast historical retrieval, or the in-process frames here),
  check, train, log, register, gate the champion.
* `train_batch_from_dataset` — the same from a dataset directory with in-process features, then
  the candidate lists scored by the new ranker written to the offline store.
* `train_online_from_dataset` — replays the latest window through the stream state to produce the
  labelled examples the stream sink emits, continues the online champion with them in
  micro-batches, and registers every micro-batch update that passes its sanity check.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.candidates import candidates_frame, covisitation_matrix, item_neighbours_frame
from models.evaluate import encode_dataset
from models.features import BATCH_FEATURES, Catalog, EventLog
from models.online import LABEL, OnlineTrainer, new_online_model, partial_fit, sanity_check
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
from models.replay_examples import BatchScores, ExampleConfig, Replayer, reveal_event
from models.stream_state import stream_processor_state
from models.train import (
    BatchRanker,
    TrainingError,
    build_training_frame,
    build_window,
    check_training_frame,
    time_window,
    train_batch_ranker,
)

IN_PROCESS_FEATURE_SERVICE = "ranker_batch_v1 (in-process)"
POPULAR_TABLE = "popular_items"
NEIGHBOURS_TABLE = "item_neighbours"  # the offline table of feature view NEIGHBOURS_VIEW
NEIGHBOURS_VIEW = "item_neighbours_v1"
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


def _windows(log: EventLog, as_of: float | None, window_fraction: float) -> tuple[float, float, float]:
    end = float(log.ts[-1]) + 1e-6 if as_of is None else as_of
    span = end - float(log.ts[0])
    if span <= 0:
        raise TrainingError("the dataset covers no time span: cannot make training and holdout windows")
    width = window_fraction * span
    return end - 2 * width, end - width, end


def train_batch_from_dataset(events: pd.DataFrame, items: pd.DataFrame, tracking_uri: str, write_tables: bool = True,
                             as_of: float | None = None, window_fraction: float = 0.2, candidates_limit: int = 100,
                             params: dict[str, Any] | None = None, model_name: str = BATCH_MODEL
                             ) -> BatchTrainResult:
    """In-process batch step: frames from the events, train/register, then write scored candidate lists."""
    catalog, log = encode_dataset(events, items)
    t1, t2, end = _windows(log, as_of, window_fraction)
    train_frame = build_training_frame(log, catalog, build_window(log, catalog, t1), t2)
    window2 = build_window(log, catalog, t2)
    holdout = build_training_frame(log, catalog, window2, end, seed=8)
    ranker, registration = train_and_register_batch(train_frame, holdout, list(BATCH_FEATURES),
                                                    IN_PROCESS_FEATURE_SERVICE, tracking_uri, params=params,
                                                    model_name=model_name)
    result = BatchTrainResult(registration, len(train_frame), len(holdout))
    if write_tables:
        scorer = load_champion(model_name, tracking_uri) if not registration.champion else None
        source = f"{model_name} v{scorer.version if scorer else registration.version}"
        frame, popular = score_candidates(scorer.model if scorer else ranker, log, catalog, end, candidates_limit,
                                          source)
        ts = pd.Timestamp(end, unit="s", tz="UTC")
        neighbours = item_neighbours_frame(covisitation_matrix(log.before(end), catalog.n_items), catalog, ts)
        result.candidates_path = write_offline_tables(frame, popular, neighbours, ts.to_pydatetime())
        result.candidate_users = len(frame)
    return result


def score_candidates(ranker: BatchRanker, log: EventLog, catalog: Catalog, as_of: float, limit: int = 100,
                     source: str = BATCH_MODEL) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's candidate list as of `as_of` scored by `ranker`, and the global popular list for new users."""
    if list(ranker.feature_columns) != list(BATCH_FEATURES):
        raise TrainingError(f"ranker reads {ranker.feature_columns}, but in-process candidate scoring builds "
                            f"{list(BATCH_FEATURES)}: score through the Feast path instead")
    window = build_window(log, catalog, as_of)
    cand = window.candidates
    users = np.repeat(np.arange(len(cand.offsets) - 1), np.diff(cand.offsets))
    scores = ranker.predict(window.rows(users, cand.items)) if len(users) else np.zeros(0)
    ts = pd.Timestamp(as_of, unit="s", tz="UTC")
    frame = candidates_frame(cand, log, catalog, scores, ts, limit, source)
    popular = pd.DataFrame({"rank": np.arange(1, len(cand.popular) + 1),
                            "item_id": catalog.item_ids[cand.popular].astype(str),
                            "event_timestamp": pd.Series([ts] * len(cand.popular), dtype="datetime64[us, UTC]")})
    return frame, popular


def write_offline_tables(candidates: pd.DataFrame, popular: pd.DataFrame, neighbours: pd.DataFrame,
                         as_of: datetime) -> Path:
    """Publish the day's candidate lists (view user_candidates_v1) and item neighbours (view item_neighbours_v1),
    through pipelines/batch/offline.py, and the popular_items table, each as the `date=<as_of's day>` partition;
    return the lists' dir."""
    from pipelines.batch import offline
    from tandem.settings import get_settings

    day = as_of.astimezone(UTC).date()
    path = offline.write_day("user_candidates_v1", candidates, day, as_of)
    offline.write_day(NEIGHBOURS_VIEW, neighbours, day, as_of)  # cast to the view's schema, materialized online
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


PairScorer = Callable[[pd.DataFrame], np.ndarray]  # (user_id, item_id, event_timestamp) rows -> batch log-odds


class _DeferredBatchScores:
    """Zeros in place of batch scores, filled afterwards in one bulk (point-in-time) scoring call."""

    def __init__(self, n_items: int):
        self._zeros = np.zeros(n_items)

    def all_items(self, user: int) -> np.ndarray:
        return self._zeros


def online_examples(events: pd.DataFrame, items: pd.DataFrame, ranker: BatchRanker, start: float | None = None,
                    window_fraction: float = 0.2, progress: Progress | None = None,
                    pair_scorer: PairScorer | None = None) -> pd.DataFrame:
    """The labelled examples the stream sink emits for the events after `start` (default: the last window).

    Each interaction with an item new to the user gives one positive row and sampled negatives from
    what the system would have shown, with stream features from the state just before the event.
    Batch scores: with `pair_scorer` (e.g. `feast_pair_scorer`, for a ranker on Feast features)
    each row is scored point-in-time at its event time; otherwise the ranker must read the in-process
    BATCH_FEATURES, computed as of `start`.
    """
    if pair_scorer is None and list(ranker.feature_columns) != list(BATCH_FEATURES):
        raise TrainingError(f"the batch champion reads {len(ranker.feature_columns)} Feast columns "
                            f"({', '.join(ranker.feature_columns[:3])}, ...), not the in-process features: pass a "
                            "pair_scorer (`tandem train online` does when the Feast repo is applied)")
    catalog, log = encode_dataset(events, items)
    if start is None:
        start = float(log.ts[-1]) - window_fraction * (float(log.ts[-1]) - float(log.ts[0]))
    window = build_window(log, catalog, start)
    stream = stream_processor_state(catalog)
    seen: dict[int, set[int]] = {}
    first = int(np.searchsorted(log.ts, start, side="left"))
    for j in range(first):
        reveal_event(stream, seen, log, j)
    config = ExampleConfig()
    batch = _DeferredBatchScores(catalog.n_items) if pair_scorer else BatchScores(ranker, window, catalog.n_items)
    replay = Replayer(catalog, window, batch, stream, OnlineTrainer(), config, np.random.default_rng(config.seed),
                      log.user_ids)
    frames = []
    for j in range(first, len(log)):
        user, item, now = int(log.user[j]), int(log.item[j]), float(log.ts[j])
        user_seen = seen.setdefault(user, set())
        if item not in user_seen:
            frame = replay.examples(user, item, now, user_seen)
            frame["event_timestamp"] = now
            frames.append(frame)
        reveal_event(stream, seen, log, j)
        if progress and (j - first) % 500 == 0:
            progress(j - first, len(log) - first)
    if not frames:
        raise TrainingError("no interaction with a new item after the start of the window: no examples")
    out = pd.concat(frames, ignore_index=True)
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], unit="s", utc=True).astype("datetime64[us, UTC]")
    if pair_scorer is not None:
        out["batch_logit"] = np.asarray(pair_scorer(out[["user_id", "item_id", "event_timestamp"]]), dtype=float)
    return out


def feast_pair_scorer(store: Any, feature_service: str, ranker: BatchRanker) -> PairScorer:
    """Score (user_id, item_id, event_timestamp) rows with `ranker` on the service's features, point-in-time."""
    from models.batch_steps import prepare_feast_frame

    def score(pairs: pd.DataFrame) -> np.ndarray:
        entity = pairs.reset_index(drop=True).assign(row_number=lambda d: np.arange(len(d)))
        service = store.get_feature_service(feature_service)
        feats = store.get_historical_features(entity_df=entity, features=service, full_feature_names=True).to_df()
        feats = feats.sort_values("row_number").reset_index(drop=True)
        if len(feats) != len(entity):
            raise TrainingError(f"Feast returned {len(feats)} rows for {len(entity)} entity rows")
        feats, _ = prepare_feast_frame(feats, ranker.feature_columns)
        return ranker.predict_margin(feats)

    return score


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
