"""Reading a dataset directory (events/date=YYYY-MM-DD/*.parquet, items.parquet, users.parquet) for the batch path.

Spark reads the whole history for the feature jobs; the raw-event validation reads only the
partitions a run is about to use, with pyarrow, exactly as they are on disk (defects included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from tandem.schema import EVENT_FIELDS, ITEM_SCHEMA, USER_SCHEMA


class BatchError(RuntimeError):
    """The batch path cannot go on; the message names the input and what was expected."""


@dataclass(frozen=True)
class RawData:
    events: DataFrame
    items: DataFrame
    users: DataFrame
    first_ts: datetime
    last_ts: datetime


def event_partitions(dataset_dir: Path) -> dict[date, Path]:
    """The events/date=YYYY-MM-DD directories of a dataset, by day."""
    events_dir = dataset_dir / "events"
    if not events_dir.is_dir():
        raise BatchError(f"{events_dir} does not exist; expected a dataset directory with events/date=YYYY-MM-DD/ "
                         f"(create one with `tandem data generate --out {dataset_dir}`)")
    parts = {}
    for sub in events_dir.iterdir():
        if sub.is_dir() and sub.name.startswith("date="):
            try:
                parts[date.fromisoformat(sub.name[5:])] = sub
            except ValueError:
                raise BatchError(f"{sub}: partition name is not date=YYYY-MM-DD") from None
    if not parts:
        raise BatchError(f"{events_dir} holds no date=YYYY-MM-DD partitions")
    return parts


def read_raw(spark: SparkSession, dataset_dir: Path) -> RawData:
    """Events, items and users of a dataset as Spark DataFrames, with the span of event times."""
    event_partitions(dataset_dir)
    for name in ("items.parquet", "users.parquet"):
        if not (dataset_dir / name).exists():
            raise BatchError(f"{dataset_dir / name} does not exist; a dataset directory needs events/, "
                             "items.parquet and users.parquet")
    events = (spark.read.option("basePath", str(dataset_dir / "events")).parquet(str(dataset_dir / "events"))
              .select(*EVENT_FIELDS))
    items = spark.read.parquet(str(dataset_dir / "items.parquet")).select(*ITEM_SCHEMA.names)
    users = spark.read.parquet(str(dataset_dir / "users.parquet")).select(*USER_SCHEMA.names)
    span = _ts_span_from_footers(dataset_dir)
    if span is None:
        row = events.agg(F.min("ts").alias("first"), F.max("ts").alias("last")).first()
        span = (row["first"], row["last"]) if row is not None and row["first"] is not None else None
    if span is None:
        raise BatchError(f"{dataset_dir / 'events'} holds no events")
    return RawData(events, items, users, span[0].astimezone(UTC), span[1].astimezone(UTC))


def _ts_span_from_footers(dataset_dir: Path) -> tuple[datetime, datetime] | None:
    """First and last event time from the parquet footers' statistics (no scan); None if any file lacks them."""
    lo = hi = None
    for path in event_partitions(dataset_dir).values():
        for file in path.glob("*.parquet"):
            meta = pq.ParquetFile(file).metadata
            if meta.num_rows == 0:
                continue
            column = meta.schema.names.index("ts") if "ts" in meta.schema.names else None
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(column).statistics if column is not None else None
                if stats is None or not stats.has_min_max or not isinstance(stats.min, datetime):
                    return None
                lo = stats.min if lo is None else min(lo, stats.min)
                hi = stats.max if hi is None else max(hi, stats.max)
    return (lo, hi) if lo is not None else None


def read_event_batch(dataset_dir: Path, days: list[date]) -> pa.Table:
    """The raw events of every partition from min(days) on (later ones too: future-dated events belong to the
    batch that sees them first), as stored, with only the event schema's columns that exist."""
    first = min(days)
    tables = []
    for day, path in sorted(event_partitions(dataset_dir).items()):
        if day < first:
            continue
        for file in sorted(path.glob("*.parquet")):
            table = pq.read_table(file, partitioning=None)
            tables.append(table.select([c for c in table.column_names if c != "date"]))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def default_as_of(last_event_ts: datetime, now: datetime | None = None) -> datetime:
    """The end of the day of the latest event, but never later than now."""
    now = now or datetime.now(UTC)
    end_of_day = datetime.combine(last_event_ts.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)
    return min(end_of_day, now)
