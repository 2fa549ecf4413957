"""`tandem batch run`: validate -> features -> apply -> training set -> (model steps) -> materialize.

The run is a list of named steps over one shared context, so the models stage inserts its
steps (train, register, candidates) with `insert_steps(default_steps(), before="materialize", ...)`.
Nothing is published before the data it depends on has passed its checkpoint: raw events are
checked before any feature is computed, feature tables are checked in staging before they
replace anything in the offline store, and the online store is written last.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.batch import feast_repo, offline
from pipelines.batch.features import days_to_compute, item_features, snapshot_cutoff, user_features
from pipelines.batch.sources import BatchError, RawData, default_as_of, read_event_batch, read_raw
from pipelines.batch.training import TRAINING_FEATURE_SERVICE, build_training_set, feature_columns
from tandem.settings import Settings

# the views the batch run computes, with their entity key
BATCH_VIEWS: dict[str, str] = {"user_features_v1": "user_id", "item_features_v1": "item_id"}
# views whose tables other stages fill; they get an empty table so `feast apply` can read them
PLACEHOLDER_VIEWS: tuple[str, ...] = ("user_session_v1", "item_trending_v1", "user_candidates_v1",
                                      "item_neighbours_v1", "item_sequence_neighbours_v1")
# what materialize publishes online (the stream writes its own views online itself)
ONLINE_VIEWS: tuple[str, ...] = ("user_features_v1", "item_features_v1", "user_candidates_v1",
                                 "item_neighbours_v1", "item_sequence_neighbours_v1")


@dataclass
class BatchOptions:
    dataset_dir: Path
    as_of: datetime | None = None
    since: date | None = None
    history_days: int = 35
    train_days: int = 28
    negatives_per_positive: int = 4
    max_positives: int = 200_000
    feature_service: str = TRAINING_FEATURE_SERVICE


@dataclass
class BatchContext:
    """What the steps share; later steps read what earlier ones left here."""

    settings: Settings
    options: BatchOptions
    log: Callable[[str], None] = print
    spark: Any = None
    raw: RawData | None = None
    as_of: datetime | None = None
    days: list[date] = field(default_factory=list)
    store: Any = None
    training_set: pd.DataFrame | None = None
    training_set_path: Path | None = None
    reports: list = field(default_factory=list)
    published: dict[str, list[date]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    run: Callable[[BatchContext], str]


@dataclass
class StepResult:
    name: str
    seconds: float
    summary: str


def _validator(ctx: BatchContext):
    if "validator" not in ctx.extras:
        from validation.checkpoints import Validator

        ctx.extras["validator"] = Validator(ctx.settings)
    return ctx.extras["validator"]


def _check(ctx: BatchContext, name: str, df: Any, expectations: list):
    from validation.checkpoints import ValidationFailed

    report = _validator(ctx).run(name, df, expectations)
    ctx.reports.append(report)
    if not report.success:
        raise ValidationFailed([report])
    return report


def step_validate(ctx: BatchContext) -> str:
    """Read the dataset, decide as_of and the days to compute, and check the raw events of those days."""
    from pipelines.batch.spark import spark_session
    from validation.suites import raw_events_suite

    ctx.spark = spark_session(ctx.settings)
    ctx.raw = read_raw(ctx.spark, ctx.options.dataset_dir)
    ctx.as_of = (ctx.options.as_of or default_as_of(ctx.raw.last_ts)).astimezone(UTC)
    if ctx.as_of <= ctx.raw.first_ts:
        raise BatchError(f"--as-of {ctx.as_of.isoformat()} is before the first event "
                         f"({ctx.raw.first_ts.isoformat()}) in {ctx.options.dataset_dir}")
    existing = offline.existing_days(feast_repo.source_path("user_features_v1"))
    ctx.days = days_to_compute(ctx.as_of, ctx.raw.first_ts.date(), existing, ctx.options.since,
                               ctx.options.history_days)
    if not ctx.days:
        return f"as of {ctx.as_of.isoformat()}: features are up to date, no raw events to check"
    batch = read_event_batch(ctx.options.dataset_dir, ctx.days).to_pandas()
    report = _check(ctx, "raw_events", batch, raw_events_suite())
    return (f"as of {ctx.as_of.isoformat()}, days {ctx.days[0]}..{ctx.days[-1]} ({len(ctx.days)}): "
            f"{report.describe()}")


def step_features(ctx: BatchContext) -> str:
    """Compute user and item snapshots for the days, check them in staging, then publish them offline."""
    from pyspark.sql import functions as F

    from validation.suites import feature_table_suite

    for view in PLACEHOLDER_VIEWS:
        if offline.ensure_table(view):
            ctx.log(f"created empty offline table for {view} at {feast_repo.source_path(view)}")
    if not ctx.days:
        return "nothing to compute"
    raw = ctx.raw
    # every job below reads the same events; keep them in memory once
    events = raw.events.where(F.col("ts") < F.lit(ctx.as_of)).cache()
    frames = {"user_features_v1": user_features(ctx.spark, events, raw.items, raw.users, ctx.days, ctx.as_of),
              "item_features_v1": item_features(ctx.spark, events, raw.items, ctx.days, ctx.as_of)}
    stage = offline.staging_dir(ctx.settings.offline_dir)
    try:
        staged = {}
        for view, frame in frames.items():
            t0 = time.monotonic()
            staged[view] = offline.write_staged(frame, view, stage)
            t1 = time.monotonic()
            # checked by GX's Spark engine where it lies: a dense (key, day) table can be tens of millions of rows
            report = _check(ctx, view, ctx.spark.read.parquet(str(staged[view])),
                            feature_table_suite(feast_repo.feature_view(view), BATCH_VIEWS[view]))
            ctx.log(f"{view}: {report.rows:,} rows computed and staged in {t1 - t0:.1f}s, "
                    f"checked in {time.monotonic() - t1:.1f}s")
        for view, table in staged.items():
            ctx.published[view] = offline.publish(table, feast_repo.source_path(view))
    finally:
        events.unpersist()
        shutil.rmtree(stage, ignore_errors=True)
    return ", ".join(f"{view}: {len(days)} day(s) published" for view, days in ctx.published.items())


def step_apply(ctx: BatchContext) -> str:
    """`feast apply` the feature repo (registers entities, sources, views and services)."""
    feast_repo.apply_repo(ctx.settings)
    ctx.store = feast_repo.feature_store(ctx.settings)
    views = sorted(fv.name for fv in ctx.store.list_feature_views())
    services = sorted(fs.name for fs in ctx.store.list_feature_services())
    return (f"registry {ctx.settings.feast_registry}: feature views {', '.join(views)}; "
            f"feature services {', '.join(services)}")


def first_snapshot_time(ctx: BatchContext) -> datetime | None:
    days = offline.existing_days(feast_repo.source_path("user_features_v1"))
    return snapshot_cutoff(min(days), ctx.as_of) if days else None


def step_training_set(ctx: BatchContext) -> str:
    """Labelled examples joined point-in-time with the feature service's features; checked, then saved."""
    from validation.suites import training_set_suite

    opts = ctx.options
    store = ctx.store or feast_repo.feature_store(ctx.settings)
    df = build_training_set(store, ctx.as_of, opts.dataset_dir, days=opts.train_days,
                            negatives_per_positive=opts.negatives_per_positive, max_positives=opts.max_positives,
                            feature_service=opts.feature_service, earliest=first_snapshot_time(ctx))
    _check(ctx, "training_set", df, training_set_suite(feature_columns(store, opts.feature_service)))
    path = training_set_path(ctx.settings, opts.feature_service, ctx.as_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    ctx.training_set, ctx.training_set_path = df, path
    return f"{len(df):,} examples ({int(df['label'].sum()):,} positive), {df.shape[1] - 4} features -> {path}"


def training_set_path(settings: Settings, feature_service: str, as_of: datetime) -> Path:
    """Where a run keeps the training set it built: $TANDEM_OFFLINE_DIR/training_sets/<service>/<as_of>.parquet."""
    stamp = as_of.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return settings.offline_dir / "training_sets" / feature_service / f"as_of={stamp}.parquet"


def materialize_interval(as_of: datetime) -> tuple[datetime, datetime]:
    """What the materialize step publishes: rows from as_of minus the longest TTL of ONLINE_VIEWS, up to as_of."""
    ttl = max(feast_repo.feature_view(v).ttl for v in ONLINE_VIEWS)
    return as_of - ttl, as_of


def step_materialize(ctx: BatchContext) -> str:
    """Publish each entity's latest snapshot (up to as_of) to the online store.

    TANDEM_MATERIALIZER picks the writer: tandem's column-wise one (default) or Feast's batch engine.
    """
    start, _ = materialize_interval(ctx.as_of)
    summary = feast_repo.materialize(ctx.settings, start, ctx.as_of, list(ONLINE_VIEWS))
    written = f" ({summary})" if ctx.settings.materializer == "tandem" else ""
    return (f"{', '.join(ONLINE_VIEWS)} from {start.isoformat()} to {ctx.as_of.isoformat()} "
            f"with the {ctx.settings.materializer} materializer{written}")


def default_steps() -> list[Step]:
    return [
        Step("validate", "check raw events", step_validate),
        Step("features", "compute and publish features", step_features),
        Step("apply", "feast apply", step_apply),
        Step("training_set", "build the training set", step_training_set),
        Step("materialize", "materialize into the online store", step_materialize),
    ]


def insert_steps(steps: list[Step], before: str, new: list[Step]) -> list[Step]:
    """Steps with `new` inserted before the step called `before` (how the models stage adds its steps)."""
    names = [s.name for s in steps]
    if before not in names:
        raise ValueError(f"no step {before!r}; steps are {', '.join(names)}")
    i = names.index(before)
    return [*steps[:i], *new, *steps[i:]]


def run_batch(settings: Settings, options: BatchOptions, steps: list[Step] | None = None,
              log: Callable[[str], None] = print,
              on_step: Callable[[int, int, Step], None] | None = None) -> tuple[BatchContext, list[StepResult]]:
    """Run the steps in order; a failing step (e.g. ValidationFailed) stops the run and propagates."""
    steps = steps if steps is not None else default_steps()
    ctx = BatchContext(settings=settings, options=options, log=log)
    results = []
    for i, step in enumerate(steps):
        if on_step:
            on_step(i, len(steps), step)
        t0 = time.monotonic()
        summary = step.run(ctx)
        results.append(StepResult(step.name, time.monotonic() - t0, summary))
        log(f"[{i + 1}/{len(steps)}] {step.name} ({results[-1].seconds:.1f}s): {summary}")
    if on_step:
        on_step(len(steps), len(steps), steps[-1])
    return ctx, results


def parse_as_of(raw: str) -> datetime:
    """An ISO date or time; without a timezone it is UTC."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BatchError(f"--as-of {raw!r} is not an ISO-8601 date or time (expected e.g. 2026-01-31 or "
                         "2026-01-31T12:00:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

