"""`tandem data movielens --path DIR`: the public MovieLens CSV layout as a tandem dataset.

Input (nothing is downloaded; the user points at files they have, e.g. an unpacked ml-latest-small
or ml-25m): `ratings.csv` with userId,movieId,rating,timestamp (unix seconds) and `movies.csv` with
movieId,title,genres (genres separated by `|`, possibly "(no genres listed)"). Extra columns are
ignored; column names are case-sensitive, as in the published files.

Mapping onto the event schema:

* every rating is an event: event_type "rating", value = rating, ts = timestamp,
  user_id = "u<userId>", item_id = "i<movieId>", event_id = "ml-<userId>-<movieId>-<timestamp>";
* session_id groups a user's ratings into sessions: a new session starts after a gap of more than
  30 minutes (SESSION_GAP_S); the id is "mls-<userId>-<first timestamp of the session>";
* items: category = the first listed genre ("unknown" for "(no genres listed)" or none), title as
  given, price null, created_ts = the movie's first rating; movies nobody rated are left out of
  items.parquet (they have no first rating) and counted in the metadata;
* users: signup_ts = the user's first rating.

Input problems are DatasetErrors naming the file, the line and what was expected: missing files or
columns, an empty file, non-numeric or empty values, ratings outside [0.5, 5], timestamps outside
[1995, now] (milliseconds are recognised and called out), duplicate movieIds in movies.csv.
Ratings of movies missing from movies.csv are dropped with a DatasetWarning and counted in the
metadata (`dropped.unknown_movie`); if that leaves nothing, it is an error. Exact duplicates of
(userId, movieId, timestamp) are dropped (the first kept) and counted (`dropped.duplicate`).

The CSVs are read with pyarrow (multi-threaded, typed columns), so ml-25m takes seconds; events
are written in chunks of about a million rows cut at day boundaries, one file per date.
"""

from __future__ import annotations

import csv
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.dataset import (
    DatasetError,
    Progress,
    items_path,
    reset_dataset_dir,
    users_path,
    write_events_partitioned,
    write_metadata,
    write_table,
)
from tandem.schema import EARLIEST_TS, EVENT_SCHEMA, ITEM_SCHEMA, MAX_FUTURE, TS_TYPE, USER_SCHEMA, format_ts

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
RATINGS_COLUMNS: dict[str, pa.DataType] = {
    "userId": pa.int64(),
    "movieId": pa.int64(),
    "rating": pa.float64(),
    "timestamp": pa.int64(),
}
MOVIES_COLUMNS: dict[str, pa.DataType] = {"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()}
RATING_MIN, RATING_MAX = 0.5, 5.0
SESSION_GAP_S = 30 * 60
NO_GENRE = "(no genres listed)"
UNKNOWN_CATEGORY = "unknown"
CHUNK_ROWS = 1_000_000
US_PER_S = 1_000_000
SECONDS_PER_DAY = 86_400


class DatasetWarning(UserWarning):
    """Input that was usable after dropping some of it; the message says what and how much."""


# ---------------------------------------------------------------------------------------------- reading CSVs


def _check_header(path: Path, expected: dict[str, pa.DataType]) -> None:
    if not path.is_file():
        what = "is a directory" if path.exists() else "is missing"
        raise DatasetError(f"{path} {what}; expected the MovieLens file {path.name} with columns {','.join(expected)}")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty; expected a header {','.join(expected)} and at least one row")
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            first = f.readline()
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; expected a CSV file with header {','.join(expected)}") from None
    header = [h.strip() for h in next(csv.reader([first]), [])]
    missing = [c for c in expected if c not in header]
    if missing:
        near = {h.lower(): h for h in header}
        hints = [f"{near[c.lower()]!r} for {c!r}" for c in missing if c.lower() in near]
        hint = f" (names are case-sensitive: found {', '.join(hints)})" if hints else ""
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(expected)}, "
            f"found {','.join(header) or 'an empty first line'}{hint}"
        )


def _line_of_row(path: Path, row: int) -> int:
    """1-based line number of the `row`-th (0-based) data row, counting non-blank lines after the header."""
    seen = -1
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if seen == row:
                return lineno
            seen += 1
    return -1


def _line_of_text(path: Path, text: str) -> int:
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.rstrip(b"\r\n").decode("utf-8", errors="replace") == text:
                return lineno
    return -1


def _bad_value(values: Any, kind: pa.DataType) -> np.ndarray:
    """Mask of strings that are not a valid `kind` number (int or float)."""
    s = values.to_pandas().str.strip()
    if pa.types.is_integer(kind):
        return ~s.str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(dtype=bool)
    return pd.to_numeric(s, errors="coerce").isna().to_numpy() & (s.str.lower() != "nan").to_numpy()


def _diagnose(path: Path, expected: dict[str, pa.DataType], original: Exception) -> DatasetError:
    """Find the first offending line of a CSV that pyarrow refused, and say what is wrong with it."""
    bad_rows: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad_rows.append(row)
        return "error"

    numeric = {c: t for c, t in expected.items() if not pa.types.is_string(t)}
    offset = 0
    try:
        reader = pacsv.open_csv(
            path,
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in expected}, include_columns=list(expected)
            ),
        )
        for batch in reader:
            for name, kind in numeric.items():
                bad = np.flatnonzero(_bad_value(batch.column(name), kind))
                if len(bad):
                    raw = batch.column(name)[int(bad[0])].as_py()
                    line = _line_of_row(path, offset + int(bad[0]))
                    noun = "an integer" if pa.types.is_integer(kind) else "a number"
                    shown = "an empty value" if raw.strip() == "" else repr(raw)
                    return DatasetError(f"{path}, line {line}: column {name} has {shown}; expected {noun}")
            offset += batch.num_rows
    except pa.ArrowInvalid:
        if bad_rows:
            row = bad_rows[0]
            return DatasetError(
                f"{path}, line {_line_of_text(path, row.text)}: {row.actual_columns} field(s) where the header has "
                f"{row.expected_columns} ({row.text[:80]!r}); a value with a comma needs double quotes"
            )
    return DatasetError(f"{path}: cannot parse as CSV with columns {','.join(expected)}: {original}")


def read_csv_checked(path: Path, expected: dict[str, pa.DataType]) -> pa.Table:
    """Read the expected columns of a MovieLens CSV with their types; DatasetError names file, line and problem."""
    _check_header(path, expected)
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(column_types=expected, include_columns=list(expected)),
        )
    except pa.ArrowInvalid as exc:
        raise _diagnose(path, expected, exc) from None
    if table.num_rows == 0:
        raise DatasetError(f"{path} has a header but no rows; expected at least one")
    for name, kind in expected.items():
        column = table.column(name)
        if column.null_count and not pa.types.is_string(kind):
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DatasetError(f"{path}, line {_line_of_row(path, first)}: column {name} is empty; expected a number")
    return table


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


def _check_range(path: Path, name: str, values: np.ndarray, ok: np.ndarray, expected: str, hint: str = "") -> None:
    bad = np.flatnonzero(~ok)
    if len(bad):
        first = int(bad[0])
        raise DatasetError(
            f"{path}, line {_line_of_row(path, first)}: {name} {values[first].item()!r} is outside {expected} "
            f"({len(bad)} row(s) like this){hint}"
        )


# ---------------------------------------------------------------------------------------------- the mapping


def _movies(path: Path) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """movieIds (sorted), their titles and categories (first genre) in the same order."""
    table = read_csv_checked(path, MOVIES_COLUMNS)
    ids = _numpy(table, "movieId")
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if len(dup):
        movie = int(ids[dup[0]])
        rows = np.flatnonzero(_numpy(table, "movieId") == movie)[:2]
        lines = ", ".join(str(_line_of_row(path, int(r))) for r in rows)
        raise DatasetError(
            f"{path}: movieId {movie} appears more than once (lines {lines}); expected one row per movie"
        )
    take = pa.array(order)
    genres = table.column("genres").take(take)
    first_genre = pc.list_element(pc.split_pattern(pc.fill_null(genres, ""), "|"), 0)
    first_genre = pc.utf8_trim_whitespace(first_genre)
    is_unknown = pc.or_(pc.equal(first_genre, ""), pc.equal(first_genre, NO_GENRE))
    category = pc.if_else(is_unknown, UNKNOWN_CATEGORY, first_genre)
    return ids, table.column("title").take(take), category


def _ratings(path: Path) -> dict[str, np.ndarray]:
    table = read_csv_checked(path, RATINGS_COLUMNS)
    cols = {name: _numpy(table, name) for name in RATINGS_COLUMNS}
    rating = cols["rating"]
    _check_range(
        path, "rating", rating, (rating >= RATING_MIN) & (rating <= RATING_MAX), f"[{RATING_MIN}, {RATING_MAX}]"
    )
    ts = cols["timestamp"]
    lo = int(EARLIEST_TS.timestamp())
    hi = int(time.time() + MAX_FUTURE.total_seconds())
    hint = " — these look like milliseconds; expected unix seconds" if np.any(ts > hi * 100) else ""
    _check_range(
        path, "timestamp", ts, (ts >= lo) & (ts <= hi),
        f"[{lo}, {hi}] (unix seconds from {EARLIEST_TS.date()} to now)", hint,
    )  # fmt: skip
    return cols


def _positions(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in `sorted_ids`, -1 where absent (a lookup table when ids are small, else a search)."""
    if len(sorted_ids) and sorted_ids[0] >= 0 and sorted_ids[-1] < 50_000_000:
        lookup = np.full(int(sorted_ids[-1]) + 1, -1, dtype=np.int64)
        lookup[sorted_ids] = np.arange(len(sorted_ids))
        inside = (values >= 0) & (values <= sorted_ids[-1])
        return np.where(inside, lookup[np.where(inside, values, 0)], -1)
    pos = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == values, pos, -1)


def _user_time_order(user: np.ndarray, ts: np.ndarray, movie: np.ndarray) -> np.ndarray:
    """Order by (user, ts, movie), stable. A single int64 key when ids allow (10x faster than lexsort on ml-25m)."""
    if not (len(user) and user.min() >= 0 and user.max() < 2**31 and ts.min() >= 0 and ts.max() < 2**32):
        return np.lexsort((movie, ts, user))
    key = (user.astype(np.int64) << 32) | ts
    order = np.argsort(key, kind="stable")  # input is usually grouped by user: long sorted runs
    # ratings in the same second by the same user: order those few by movie too
    k = key[order]
    tied = np.zeros(len(k), dtype=bool)
    tied[1:] = k[1:] == k[:-1]
    tied[:-1] |= tied[1:].copy()
    tied_at = np.flatnonzero(tied)
    if len(tied_at):
        sub = order[tied_at]
        order[tied_at] = sub[np.lexsort((movie[sub], key[sub]))]
    return order


def _join(prefix: str, *parts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(prefix, *(pc.cast(p, pa.string()) for p in parts), "-")


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _events_table(
    user: np.ndarray, movie: np.ndarray, rating: np.ndarray, ts: np.ndarray, session_start: np.ndarray
) -> pa.Table:
    u, m, t = pa.array(user), pa.array(movie), pa.array(ts)
    return pa.Table.from_arrays(
        [
            _join("ml", u, m, t),
            _ids("u", user),
            _ids("i", movie),
            pa.repeat("rating", len(user)).cast(pa.string()),
            pa.array(rating, type=pa.float64()),
            pa.array(ts * US_PER_S, type=pa.int64()).cast(TS_TYPE),
            _join("mls", u, pa.array(session_start)),
        ],
        schema=EVENT_SCHEMA,
    )


def _day_chunks(ts_sorted: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """(start, end) slices of about `rows` rows that never split a UTC day."""
    day = ts_sorted // SECONDS_PER_DAY
    day_starts = np.concatenate(([0], np.flatnonzero(np.diff(day)) + 1))
    cuts = np.unique(day_starts[np.searchsorted(day_starts, np.arange(0, len(day), rows), side="left")])
    bounds = np.concatenate((cuts, [len(day)]))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _iso(seconds: int) -> str:
    return format_ts(datetime.fromtimestamp(int(seconds), tz=UTC))


def convert_movielens(path: Path, out_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Convert the MovieLens CSVs in `path` into a dataset at `out_dir` (replacing any there); return metadata.

    `progress(done_events, total_events)` is called as events are written.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(
            f"{path} is not a directory; expected a MovieLens directory holding {RATINGS_FILE} and {MOVIES_FILE}"
        )
    movie_ids, titles, categories = _movies(path / MOVIES_FILE)
    r = _ratings(path / RATINGS_FILE)
    user, movie, rating, ts = r["userId"], r["movieId"], r["rating"], r["timestamp"]

    # ratings of movies not in movies.csv: dropped, with a warning
    pos = _positions(movie_ids, movie)
    known = pos >= 0
    unknown = int(len(known) - known.sum())
    if unknown == len(known):
        raise DatasetError(
            f"{path / RATINGS_FILE}: none of its {len(known)} ratings is of a movie in {path / MOVIES_FILE}; "
            "expected the two files of the same MovieLens release"
        )
    if unknown:
        example = int(movie[~known][0])
        warnings.warn(
            f"{path / RATINGS_FILE}: dropped {unknown} rating(s) of movies not in {MOVIES_FILE} "
            f"(e.g. movieId {example})",
            DatasetWarning,
            stacklevel=2,
        )
        user, movie, rating, ts, pos = user[known], movie[known], rating[known], ts[known], pos[known]

    # per user in time order: drop exact duplicates, cut sessions at gaps > SESSION_GAP_S
    order = _user_time_order(user, ts, movie)
    user, movie, rating, ts, pos = user[order], movie[order], rating[order], ts[order], pos[order]
    dup = np.zeros(len(user), dtype=bool)
    dup[1:] = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1]) & (movie[1:] == movie[:-1])
    duplicates = int(dup.sum())
    if duplicates:
        keep = ~dup
        user, movie, rating, ts, pos = user[keep], movie[keep], rating[keep], ts[keep], pos[keep]
    new_user = np.ones(len(user), dtype=bool)
    new_user[1:] = user[1:] != user[:-1]
    new_session = new_user.copy()
    new_session[1:] |= (ts[1:] - ts[:-1]) > SESSION_GAP_S
    session_start = ts[np.maximum.accumulate(np.where(new_session, np.arange(len(ts)), 0))]
    users_table = pa.Table.from_arrays(
        [_ids("u", user[new_user]), pa.array(ts[new_user] * US_PER_S, type=pa.int64()).cast(TS_TYPE)],
        schema=USER_SCHEMA,
    )

    # items: movies with at least one rating, created at their first rating
    first_rating = np.full(len(movie_ids), np.iinfo(np.int64).max)
    np.minimum.at(first_rating, pos, ts)
    rated = np.flatnonzero(first_rating != np.iinfo(np.int64).max)
    rated_idx = pa.array(rated)
    items_table = pa.Table.from_arrays(
        [
            _ids("i", movie_ids[rated]),
            categories.take(rated_idx),
            pa.nulls(len(rated), pa.float64()),
            pa.array(first_rating[rated] * US_PER_S, type=pa.int64()).cast(TS_TYPE),
            titles.take(rated_idx),
        ],
        schema=ITEM_SCHEMA,
    )

    # events in time order, written in day-aligned chunks
    out_dir = Path(out_dir)
    reset_dataset_dir(out_dir)
    order = np.argsort(ts, kind="stable")
    user, movie, rating, ts, session_start = user[order], movie[order], rating[order], ts[order], session_start[order]
    total = len(ts)
    if progress:
        progress(0, total)
    for n, (lo, hi) in enumerate(_day_chunks(ts, CHUNK_ROWS)):
        table = _events_table(user[lo:hi], movie[lo:hi], rating[lo:hi], ts[lo:hi], session_start[lo:hi])
        write_events_partitioned(table, out_dir, part=f"{n:05d}")
        if progress:
            progress(hi, total)
    write_table(items_table, items_path(out_dir))
    write_table(users_table, users_path(out_dir))
    metadata: dict[str, Any] = {
        "source": "movielens",
        "input": str(path.resolve()),
        "seed": None,
        "counts": {
            "events": total,
            "users": users_table.num_rows,
            "items": items_table.num_rows,
            "sessions": int(new_session.sum()),
        },
        "event_types": {"rating": total},
        "first_ts": _iso(ts[0]),
        "last_ts": _iso(ts[-1]),
        "categories": sorted(set(items_table.column("category").to_pylist())),
        "movies_without_ratings": len(movie_ids) - len(rated),
        "dropped": {"unknown_movie": unknown, "duplicate": duplicates},
        "params": {
            "session_gap_s": SESSION_GAP_S,
            "category": "first genre",
            "unknown_movie_ratings": "dropped with a warning",
        },
    }
    write_metadata(out_dir, metadata)
    return metadata
