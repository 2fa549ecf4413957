"""The offline store's tables: parquet directories partitioned by snapshot day (date=YYYY-MM-DD).

A run writes each table's new partitions to a staging directory first; only after the
checks pass does `publish` swap them in, one directory rename per day, so re-running a
day replaces it (idempotent) and a failed run leaves the store as it was.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_type

from pipelines.batch.feast_repo import arrow_schema, source_path

PLACEHOLDER = "empty.parquet"


def partition_name(day: date) -> str:
    return f"date={day.isoformat()}"


def existing_days(table_dir: Path) -> set[date]:
    """The snapshot days a table already holds."""
    days = set()
    if table_dir.is_dir():
        for sub in table_dir.iterdir():
            if sub.is_dir() and sub.name.startswith("date=") and any(sub.glob("*.parquet")):
                days.add(date.fromisoformat(sub.name[5:]))
    return days


def conform_to_view(df: DataFrame, view_name: str) -> DataFrame:
    """Select and cast a Spark frame to the view's offline schema (plus `date`); name any missing column."""
    schema = arrow_schema(view_name)
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"{view_name}: computed frame lacks column(s) {', '.join(missing)}; "
                         f"the feature view expects {', '.join(schema.names)}")
    cols = [F.col(f.name).cast(from_arrow_type(f.type)).alias(f.name) for f in schema]
    return df.select(*cols, F.col("date"))


def staging_dir(offline_dir: Path) -> Path:
    """A fresh staging directory for one run (Spark skips directories that start with '_')."""
    return offline_dir / "_staging" / uuid.uuid4().hex[:12]


def write_staged(df: DataFrame, view_name: str, stage: Path) -> Path:
    """Write a view's snapshots, partitioned by day, under the staging directory; return the staged table."""
    out = stage / source_path(view_name).name
    conform_to_view(df, view_name).write.mode("overwrite").partitionBy("date").parquet(str(out))
    return out


def publish(staged_table: Path, table_dir: Path) -> list[date]:
    """Swap every staged day into the offline table, replacing days that exist; return the days published."""
    table_dir.mkdir(parents=True, exist_ok=True)
    placeholder = table_dir / PLACEHOLDER
    if placeholder.exists():
        placeholder.unlink()
    days = []
    for part in sorted(staged_table.glob("date=*")):
        target = table_dir / part.name
        old = table_dir / f"_old-{uuid.uuid4().hex[:8]}-{part.name}"
        if target.exists():
            target.rename(old)
        part.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        days.append(date.fromisoformat(part.name[5:]))
    return days


def ensure_table(view_name: str) -> bool:
    """Give a view's offline table an empty parquet file with the view's schema if it holds no data yet.

    `feast apply` reads every SparkSource, so tables filled later (by the stream, or the
    candidate step) must exist before the first apply. Returns True if it was created.
    """
    table_dir = source_path(view_name)
    if table_dir.is_dir() and any(table_dir.rglob("*.parquet")):
        return False
    table_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow_schema(view_name).empty_table(), table_dir / PLACEHOLDER)
    return True


def read_partitions(table_dir: Path, days: list[date] | None = None) -> pa.Table:
    """Rows of the given days (all days if None) of an offline or staged table, with `date` as a column."""
    tables = []
    for part in sorted(table_dir.glob("date=*")):
        day = date.fromisoformat(part.name[5:])
        if days is not None and day not in days:
            continue
        table = pq.read_table(part, partitioning=None)
        tables.append(table.append_column("date", pa.array([day] * table.num_rows, pa.date32())))
    if not tables:
        raise FileNotFoundError(f"{table_dir} holds no date=YYYY-MM-DD partitions")
    return pa.concat_tables(tables, promote_options="permissive")


def latest_rows(table_dir: Path, key: str):
    """pandas frame of each key's latest snapshot (what materialization should put online)."""
    df = read_partitions(table_dir).to_pandas()
    return df.sort_values("event_timestamp").groupby(key, as_index=False).tail(1).set_index(key).sort_index()


def write_day(view_name: str, rows: pa.Table | Any, day: date, event_timestamp: datetime) -> Path:
    """Write (replace) one day's partition of a view's offline table from pandas or Arrow rows.

    For tables filled outside the Spark jobs, e.g. the candidate step's `user_candidates_v1`
    (user_id, candidate_item_ids, candidate_scores, candidate_source). `event_timestamp` is
    added if missing; columns are cast to the view's schema, and a missing one is named.
    """
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pandas(rows, preserve_index=False)
    schema = arrow_schema(view_name)
    if "event_timestamp" not in table.column_names:
        table = table.append_column("event_timestamp", pa.array([event_timestamp] * table.num_rows, schema.field(
            "event_timestamp").type))
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise ValueError(f"{view_name}: rows lack column(s) {', '.join(missing)}; expected {', '.join(schema.names)}")
    table = table.select(schema.names).cast(schema)
    table_dir = source_path(view_name)
    stage = staging_dir(table_dir.parent) / table_dir.name / partition_name(day)
    stage.mkdir(parents=True)
    pq.write_table(table, stage / "part-0.parquet")
    publish(stage.parent, table_dir)
    shutil.rmtree(stage.parent.parent, ignore_errors=True)
    return table_dir / partition_name(day)
