"""The on-disk dataset layout shared by every producer and consumer of raw data.

A dataset directory holds::

    events/date=YYYY-MM-DD/part-<token>.parquet   events (tandem.schema.EVENT_SCHEMA), hive-partitioned
                                                  by the UTC date of `ts`
    items.parquet                                 the catalogue (tandem.schema.ITEM_SCHEMA)
    users.parquet                                 the users (tandem.schema.USER_SCHEMA)
    dataset.json                                  metadata: source, seed, counts, first/last ts, categories,
                                                  producer parameters

Timestamps are written as microseconds (Spark rejects nanosecond parquet). Files are written to a
hidden temporary name and renamed, so a reader never sees half a file, and `dataset.json` is written
last, so its presence marks a complete dataset. Producers call `reset_dataset_dir` first: generating
into the same directory again replaces the data instead of adding to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tandem.schema import EVENT_FIELDS, ITEM_SCHEMA, USER_SCHEMA, EventError, conform_events

EVENTS_DIR = "events"
ITEMS_FILE = "items.parquet"
USERS_FILE = "users.parquet"
METADATA_FILE = "dataset.json"
PARTITION_COLUMN = "date"
LAYOUT_VERSION = 1

US_PER_DAY = 86_400 * 1_000_000
_EPOCH = date(1970, 1, 1)

# progress(done, total): how producers report how far they are; the CLI draws the bar
Progress = Callable[[int, int], None]


class DatasetError(ValueError):
    """A dataset (or producer input) that cannot be used; the message names the path and the problem."""


def events_dir(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / EVENTS_DIR


def items_path(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / ITEMS_FILE


def users_path(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / USERS_FILE


def metadata_path(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / METADATA_FILE


def _how_to_create(dataset_dir: Path) -> str:
    return f"run `tandem data generate --out {dataset_dir}` or `tandem data movielens --path DIR --out {dataset_dir}`"


# ---------------------------------------------------------------------------------------------- writing


def write_table(table: pa.Table, path: Path) -> Path:
    """Write one parquet file atomically, timestamps as microseconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=False)
    os.replace(tmp, path)
    return path


def partition_dates(ts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Days since 1970-01-01 (UTC) of a timestamp column, as int64 (the partition key of each event)."""
    micros = np.asarray(ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False))
    return micros // US_PER_DAY


def _day_name(day: int) -> str:
    return (_EPOCH + timedelta(days=int(day))).isoformat()


def _part_token(table: pa.Table) -> str:
    ids = table.column("event_id")
    key = f"{ids[0].as_py()}|{ids[len(ids) - 1].as_py()}|{table.num_rows}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def write_events_partitioned(table: pa.Table, out_dir: Path, part: str | None = None) -> list[Path]:
    """Write events into `out_dir/events/date=YYYY-MM-DD/part-<token>.parquet`, one file per date per call.

    `out_dir` is the dataset directory. The table is conformed to EVENT_SCHEMA first. File names are
    deterministic: `part` when given (callers writing in chunks pass the chunk number), otherwise a
    hash of the rows' first and last event_id and row count. Calls with different parts add files
    next to the existing ones (append); a call with the same part replaces that part's files.
    Returns the written paths, in date order.
    """
    try:
        table = conform_events(table)
    except EventError as exc:
        raise DatasetError(f"events for {out_dir}: {exc}") from None
    if table.num_rows == 0:
        return []
    if part is not None and (not part or "/" in part or part.startswith((".", "_"))):
        raise DatasetError(f"part {part!r}: expected a plain file-name token such as '00042'")
    days = partition_dates(table.column("ts"))
    if np.any(np.diff(days) < 0):
        order = np.argsort(days, kind="stable")
        table = table.take(pa.array(order))
        days = days[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(days)) + 1))
    ends = np.concatenate((starts[1:], [len(days)]))
    root = events_dir(out_dir)
    written = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        chunk = table.slice(lo, hi - lo)
        token = part if part is not None else _part_token(chunk)
        path = root / f"{PARTITION_COLUMN}={_day_name(days[lo])}" / f"part-{token}.parquet"
        written.append(write_table(chunk, path))
    return written


def reset_dataset_dir(out_dir: Path) -> Path:
    """Prepare `out_dir` for a fresh dataset: create it, drop dataset.json and every events/ partition.

    Refuses (DatasetError) to delete an events/ directory holding anything tandem did not write.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"cannot write a dataset to {out_dir}: it is a file, expected a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata_path(out_dir).unlink(missing_ok=True)
    root = events_dir(out_dir)
    if root.exists():
        foreign = [
            p.name
            for p in root.iterdir()
            if not (p.is_dir() and p.name.startswith(f"{PARTITION_COLUMN}=")) and not p.name.startswith(".")
        ]
        if foreign:
            raise DatasetError(
                f"refusing to clear {root}: it holds {', '.join(sorted(foreign)[:5])}, which tandem did not write "
                f"(expected only {PARTITION_COLUMN}=YYYY-MM-DD partitions); choose another --out"
            )
        shutil.rmtree(root)
    root.mkdir()
    return out_dir


def write_metadata(out_dir: Path, metadata: dict[str, Any]) -> Path:
    """Write dataset.json (last step of a producer: its presence marks a complete dataset)."""
    path = metadata_path(out_dir)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"layout_version": LAYOUT_VERSION, **metadata}, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------- reading


def event_files(dataset_dir: Path) -> list[Path]:
    """The event parquet files of a dataset in date order, or DatasetError if there are none."""
    dataset_dir = Path(dataset_dir)
    root = events_dir(dataset_dir)
    if not dataset_dir.is_dir():
        raise DatasetError(f"no dataset at {dataset_dir}: the directory does not exist ({_how_to_create(dataset_dir)})")
    if not root.is_dir():
        raise DatasetError(f"no dataset at {dataset_dir}: {EVENTS_DIR}/ missing ({_how_to_create(dataset_dir)})")
    files = sorted(p for p in root.glob(f"{PARTITION_COLUMN}=*/*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise DatasetError(
            f"no events in {root}: expected {PARTITION_COLUMN}=YYYY-MM-DD/*.parquet files "
            f"({_how_to_create(dataset_dir)})"
        )
    return files


def read_events(dataset_dir: Path) -> pa.Table:
    """All events of a dataset, in date-partition order, conformed to EVENT_SCHEMA (no partition column)."""
    files = event_files(dataset_dir)
    try:
        table = ds.dataset([str(p) for p in files], format="parquet").to_table(columns=list(EVENT_FIELDS))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise DatasetError(f"cannot read the events in {events_dir(dataset_dir)}: {exc}") from None
    try:
        return conform_events(table)
    except EventError as exc:
        raise DatasetError(f"events in {events_dir(dataset_dir)} do not match the event schema: {exc}") from None


def _read_conformed(path: Path, schema: pa.Schema, what: str, dataset_dir: Path) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"no {what} in dataset {dataset_dir}: {path.name} missing ({_how_to_create(dataset_dir)})")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(schema.names)}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise DatasetError(f"{path}: columns do not match the {what} schema: {exc}") from None


def read_items(dataset_dir: Path) -> pa.Table:
    """The item catalogue of a dataset, conformed to ITEM_SCHEMA."""
    return _read_conformed(items_path(dataset_dir), ITEM_SCHEMA, "items", Path(dataset_dir))


def read_users(dataset_dir: Path) -> pa.Table:
    """The users of a dataset, conformed to USER_SCHEMA."""
    return _read_conformed(users_path(dataset_dir), USER_SCHEMA, "users", Path(dataset_dir))


def read_metadata(dataset_dir: Path) -> dict[str, Any]:
    """dataset.json of a dataset; DatasetError if it is missing (an incomplete or foreign directory) or unreadable."""
    dataset_dir = Path(dataset_dir)
    path = metadata_path(dataset_dir)
    if not path.is_file():
        raise DatasetError(
            f"no dataset at {dataset_dir}: {METADATA_FILE} missing, so the dataset is absent or was not finished "
            f"({_how_to_create(dataset_dir)})"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta
