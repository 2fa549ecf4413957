"""The batch side of `tandem evaluate`: `tandem batch run --as-of T` in a workspace of its own, read back.

The evaluation measures the platform, so its batch side is the batch path itself: the command
`tandem batch run` runs as a subprocess on the dataset, as of T, with every place it writes
pointed into a workspace (`TANDEM_HOME`, the offline store, the Feast registry, and an MLflow
tracking store in a SQLite file there). Nothing the evaluation trains or registers can touch the
user's `batch-ranker@champion`, offline tables or online store; materialize is skipped.

`read_batch_outputs` then holds in memory what that run would have materialized: for every view
`tandem batch run` publishes online, each entity's latest row within the view's TTL before T,
decoded to the Python values serving reads back from Redis, and the run's registered champion.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.evaluate import (
    ONLINE_WEIGHTS,
    BatchOutputs,
    EvaluationConfig,
    EvaluationError,
    EvaluationResult,
    Progress,
    choose_online_weight,
    iso_time,
    replay,
    split_time,
)
from models.features import epoch_seconds
from pipelines.batch.outputs import BatchOutputsError, read_online_outputs
from tandem.settings import Settings

EVALUATE_DIR = "evaluate"


def workspace_for(settings: Settings, dataset_dir: Path, as_of: datetime) -> Path:
    """Where the evaluation's batch run lives: $TANDEM_HOME/evaluate/<dataset>-<T>."""
    stamp = as_of.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return settings.home / EVALUATE_DIR / f"{Path(dataset_dir).resolve().name}-{stamp}"


def workspace_env(workspace: Path) -> dict[str, str]:
    """The settings that point every write of a batch run into `workspace`."""
    return {"TANDEM_HOME": str(workspace), "TANDEM_OFFLINE_DIR": str(workspace / "offline"),
            "TANDEM_FEAST_REGISTRY": str(workspace / "feast" / "registry.db"),
            "MLFLOW_TRACKING_URI": tracking_uri(workspace)}


def tracking_uri(workspace: Path) -> str:
    return f"sqlite:///{workspace / 'mlflow.db'}"


@contextlib.contextmanager
def _workspace_environment(workspace: Path) -> Iterator[None]:
    """This process's settings pointed at the workspace while its tables are read (feature_repo/ reads them)."""
    saved = {key: os.environ.get(key) for key in workspace_env(workspace)}
    os.environ.update(workspace_env(workspace))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_batch_path(dataset_dir: Path, as_of: datetime, workspace: Path, log: Callable[[str], None] = print) -> None:
    """`tandem batch run --as-of T --no-materialize` on the dataset, writing only into a fresh `workspace`."""
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    env = {**os.environ, **workspace_env(workspace), "TANDEM_DATA": str(Path(dataset_dir).resolve())}
    cmd = [sys.executable, "-m", "tandem", "batch", "run", "--data", str(Path(dataset_dir).resolve()),
           "--as-of", as_of.astimezone(UTC).isoformat(), "--no-materialize"]
    # MLflow keeps artifacts beside the working directory of a SQLite tracking store: the workspace's
    proc = subprocess.Popen(cmd, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line and not line.lstrip().startswith(("WARN", "Using Spark", "To adjust", "Setting default")):
            log(line)
            tail = [*tail[-19:], line]
    if proc.wait() != 0:
        raise EvaluationError(f"the evaluation's batch run failed (exit {proc.returncode}); its last lines:\n"
                              + "\n".join(tail) + f"\nworkspace: {workspace}")


def read_batch_outputs(workspace: Path, as_of: datetime) -> BatchOutputs:
    """What the workspace's batch run would put online as of `as_of`, and its batch-ranker champion."""
    with _workspace_environment(workspace):
        try:
            outputs = read_online_outputs(as_of, tracking_uri(workspace))
        except BatchOutputsError as exc:
            raise EvaluationError(f"the evaluation's batch run: {exc}") from None
    outputs.run.update({"workspace": str(workspace), "command": "tandem batch run --no-materialize"})
    return outputs


def _read_timed(dataset_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """A dataset's events and items, and each event's time in Unix seconds: at least 100 events over a span of
    time, every timestamp one pandas can hold (the batch run's raw_events checkpoint refuses the others too)."""
    from pipelines.dataset import read_events, read_items

    try:
        events, items = read_events(dataset_dir).to_pandas(), read_items(dataset_dir).to_pandas()
        epoch = epoch_seconds(events["ts"])
    except (pd.errors.OutOfBoundsDatetime, OverflowError) as exc:  # e.g. a year-1 event: no time to split by
        raise EvaluationError(f"{dataset_dir}: a timestamp outside 1677–2262 ({exc}); the batch run's raw_events "
                              "checkpoint refuses such events too: drop or fix them first") from None
    if len(events) < 100:
        raise EvaluationError(f"the dataset has {len(events)} events; a replay needs at least 100")
    if epoch.min() == epoch.max():
        raise EvaluationError("all events share one timestamp: there is no time to split")
    return events, items, epoch


def evaluate_dataset(settings: Settings, dataset_dir: Path, config: EvaluationConfig | None = None,
                     log: Callable[[str], None] = print, progress: Progress | None = None,
                     validation_always: bool = False) -> EvaluationResult:
    """The whole protocol on a dataset directory: T, then — unless the config fixes it — the hybrid's online weight
    chosen on the validation split (the batch run as of T_val, the 80th percentile of the history, replaying
    [T_val, T)), then the batch run as of T and the replay after T with that weight, its online model going on
    from the one the validation replay learned (untrained when there was no validation replay).

    `validation_always`: replay the validation split even when the config fixes the weight, for the online model
    it learns there (`result.validation.online_model`, what `--through-stack` freezes)."""
    from pipelines.dataset import read_metadata

    config = config or EvaluationConfig()
    meta = read_metadata(dataset_dir)
    events, items, epoch = _read_timed(dataset_dir)
    split = split_time(epoch, config.split_quantile)
    validation = None
    if config.online_weight is None or validation_always:
        history = epoch < split
        val_split = split_time(epoch[history], config.split_quantile)
        sweep = ONLINE_WEIGHTS if config.online_weight is None else ()
        log(f"validation: batch path as of T_val = {iso_time(val_split)}, replay [T_val, T)"
            + (f" with online weights {', '.join(f'{w:g}' for w in sweep)}" if sweep else
               f" with the given online weight {config.online_weight:g}"))
        outputs = _batch_path(settings, dataset_dir, val_split, log)
        validation = replay(events[history], items, outputs,
                            replace(config, online_weight=ONLINE_WEIGHTS[0] if sweep else config.online_weight),
                            progress, online_weights=sweep)
    if config.online_weight is None:
        chosen = choose_online_weight(validation)
        choices = {"online_weight": chosen, "chosen_on": "validation: batch run as of T_val, replay of [T_val, T)",
                   "T_val": iso_time(val_split), "validation_queries": validation.details["queries"],
                   "ndcg_by_online_weight": validation.details["online_weight_sweep"],
                   "validation_table": validation.as_json()["rows"]}
        log(f"validation chose online weight {chosen:g} (NDCG@{config.k} by weight: "
            + ", ".join(f"{w}: {v:.4f}" for w, v in choices["ndcg_by_online_weight"].items()) + ")")
        config = replace(config, online_weight=chosen)
    else:
        choices = {"online_weight": config.online_weight, "chosen_on": "given, not tuned"}
    log(f"test: batch path as of T = {iso_time(split)}, replay after T")
    outputs = _batch_path(settings, dataset_dir, split, log)
    result = replay(events, items, outputs, config, progress,
                    online_start=validation.online_model if validation is not None else None)
    result.details["choices"] = choices
    result.details["dataset"] = {"path": str(dataset_dir), "source": meta.get("source"), "seed": meta.get("seed")}
    result.validation = validation
    return result


def _batch_path(settings: Settings, dataset_dir: Path, split: float, log: Callable[[str], None]) -> BatchOutputs:
    as_of = datetime.fromtimestamp(split, tz=UTC)
    workspace = workspace_for(settings, dataset_dir, as_of)
    started = time.perf_counter()
    run_batch_path(dataset_dir, as_of, workspace, log)
    outputs = read_batch_outputs(workspace, as_of)
    outputs.run["seconds"] = round(time.perf_counter() - started, 1)
    return outputs


def online_training_examples(settings: Settings, dataset_dir: Path, window_fraction: float = 0.2,
                             log: Callable[[str], None] = print, progress: Progress | None = None) -> pd.DataFrame:
    """`tandem train online`'s examples: the batch path as of the start of the dataset's latest window (in a
    workspace, as the evaluation runs it), then the window replayed into the rows the stream's sink emits
    (`models.replay_store.stream_examples`): each example's batch score is that champion's, on the values it
    put online, so nothing the batch side learned comes from the window itself."""
    from models.replay_store import stream_examples

    events, items, epoch = _read_timed(dataset_dir)
    first, last = float(epoch.min()), float(epoch.max())
    start = np.floor((last - window_fraction * (last - first)) * 1_000_000) / 1_000_000
    log(f"online examples: batch path as of {iso_time(start)}, replay of the latest {window_fraction:.0%} "
        "of the history")
    outputs = _batch_path(settings, dataset_dir, start, log)
    return stream_examples(events, items, outputs, progress=progress)
