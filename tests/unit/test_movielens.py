"""The MovieLens adapter: the mapping onto tandem's schemas, and a clear error for every kind of bad input."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.dataset import DatasetError, event_files, read_events, read_items, read_metadata, read_users
from pipelines.movielens import DatasetWarning, convert_movielens
from tandem.schema import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "movielens"
RATINGS_HEADER = "userId,movieId,rating,timestamp\n"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fixture is clean: no warnings
        meta = convert_movielens(FIXTURE, out)
    return out, meta


@pytest.fixture
def ml_dir(tmp_path: Path) -> Path:
    """A writable copy of the fixture, for tests that break it."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "ml"))


def _convert(path: Path, tmp_path: Path) -> dict:
    return convert_movielens(path, tmp_path / "out")


# ---------------------------------------------------------------------------------------------- the mapping


def test_schemas_and_counts(converted: tuple[Path, dict]) -> None:
    out, meta = converted
    for path in event_files(out):
        assert pq.read_schema(path).equals(EVENT_SCHEMA), path
    assert pq.read_schema(out / "items.parquet").equals(ITEM_SCHEMA)
    assert pq.read_schema(out / "users.parquet").equals(USER_SCHEMA)
    assert meta["source"] == "movielens" and meta["seed"] is None
    assert meta["counts"] == {"events": 40, "users": 5, "items": 11, "sessions": 12}
    assert meta["movies_without_ratings"] == 1  # Forrest Gump: in movies.csv, never rated
    assert meta["dropped"] == {"unknown_movie": 0, "duplicate": 0}
    assert meta["categories"] == ["Action", "Adventure", "Comedy", "Crime", "Mystery", "unknown"]
    assert meta["first_ts"] == "1996-11-08T06:36:02.000000Z" and meta["last_ts"] == "2018-03-02T14:13:20.000000Z"
    assert read_metadata(out)["counts"] == meta["counts"]


def test_every_rating_is_an_event(converted: tuple[Path, dict]) -> None:
    out, _ = converted
    events = read_events(out).to_pandas()
    ratings = pd.read_csv(FIXTURE / "ratings.csv")
    assert len(events) == len(ratings)
    assert (events["event_type"] == "rating").all()
    assert events["event_id"].is_unique
    assert events["ts"].is_monotonic_increasing
    expected = ratings.assign(
        event_id="ml-"
        + ratings.userId.astype(str)
        + "-"
        + ratings.movieId.astype(str)
        + "-"
        + ratings.timestamp.astype(str),
        user_id="u" + ratings.userId.astype(str),
        item_id="i" + ratings.movieId.astype(str),
        ts=pd.to_datetime(ratings.timestamp, unit="s", utc=True),
    ).set_index("event_id")
    got = events.set_index("event_id").loc[expected.index]
    assert (got["user_id"] == expected["user_id"]).all()
    assert (got["item_id"] == expected["item_id"]).all()
    assert (got["value"] == expected["rating"]).all()
    assert (got["ts"] == expected["ts"]).all()
    for path in event_files(out):
        ts = pq.read_table(path, columns=["ts"]).column("ts").to_pandas()
        assert (ts.dt.strftime("%Y-%m-%d") == path.parent.name.removeprefix("date=")).all()


def test_sessions_split_at_gaps_over_30_minutes(converted: tuple[Path, dict]) -> None:
    out, _ = converted
    events = read_events(out).to_pandas()
    per_user = events.groupby("user_id")["session_id"].nunique().to_dict()
    assert per_user == {"u1": 2, "u2": 2, "u3": 2, "u4": 3, "u5": 3}
    u4 = events[events.user_id == "u4"].sort_values("ts")
    assert u4["session_id"].tolist() == ["mls-4-986935199"] * 4 + ["mls-4-986938000"] * 3 + ["mls-4-987000000"]


def test_items_take_the_first_genre_and_first_rating(converted: tuple[Path, dict]) -> None:
    out, _ = converted
    items = read_items(out).to_pandas().set_index("item_id")
    assert items.loc["i1", "category"] == "Adventure"  # Adventure|Animation|Children|Comedy|Fantasy
    assert items.loc["i176601", "category"] == "unknown"  # (no genres listed)
    assert items.loc["i11", "title"] == "American President, The (1995)"  # quoted comma
    assert items["price"].isna().all()
    assert "i356" not in items.index  # never rated
    assert items.loc["i176601", "created_ts"] == pd.Timestamp(1445800000, unit="s", tz="UTC")
    assert items.loc["i1", "created_ts"] == pd.Timestamp(847434962, unit="s", tz="UTC")
    users = read_users(out).to_pandas().set_index("user_id")
    assert users.index.tolist() == ["u1", "u2", "u3", "u4", "u5"]
    assert users.loc["u1", "signup_ts"] == pd.Timestamp(964981247, unit="s", tz="UTC")


def test_rerun_replaces_and_reports_progress(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    convert_movielens(FIXTURE, tmp_path, progress=lambda done, total: calls.append((done, total)))
    convert_movielens(FIXTURE, tmp_path)
    assert read_events(tmp_path).num_rows == 40
    assert calls[0] == (0, 40) and calls[-1] == (40, 40)


def test_ratings_of_unknown_movies_are_dropped_with_a_warning(ml_dir: Path, tmp_path: Path) -> None:
    with (ml_dir / "ratings.csv").open("a") as f:
        f.write("1,999999,4.0,964982703\n2,999999,3.0,1445714835\n")
    with pytest.warns(DatasetWarning, match=r"dropped 2 rating\(s\) of movies not in movies.csv \(e.g. movieId 999999"):
        meta = _convert(ml_dir, tmp_path)
    assert meta["dropped"]["unknown_movie"] == 2 and meta["counts"]["events"] == 40


def test_exact_duplicates_are_dropped(ml_dir: Path, tmp_path: Path) -> None:
    # user 5 rated movies 1, 11 and 47 in the same second: the duplicate is not adjacent in file order
    with (ml_dir / "ratings.csv").open("a") as f:
        f.write("5,1,4.0,847434962\n")
    meta = _convert(ml_dir, tmp_path)
    assert meta["dropped"]["duplicate"] == 1 and meta["counts"]["events"] == 40
    assert read_events(tmp_path / "out").column("event_id").unique().to_pylist().count("ml-5-1-847434962") == 1


def test_crlf_bom_extra_columns_and_quoted_header_are_fine(ml_dir: Path, tmp_path: Path) -> None:
    text = (ml_dir / "ratings.csv").read_text().splitlines()
    rows = ['"userId","movieId","rating","timestamp","source"'] + [f"{line},web" for line in text[1:]]
    (ml_dir / "ratings.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    assert _convert(ml_dir, tmp_path)["counts"]["events"] == 40


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("ratings.csv", "", r"ratings.csv is empty; expected a header userId,movieId,rating,timestamp"),
        ("movies.csv", "", r"movies.csv is empty"),
        ("ratings.csv", RATINGS_HEADER, r"ratings.csv has a header but no rows"),
        (
            "ratings.csv",
            "userid,movie,rating,timestamp\n1,1,4.0,964982703\n",
            r"ratings.csv: missing column\(s\) userId, movieId; expected userId,movieId,rating,timestamp, "
            r"found userid,movie,rating,timestamp \(names are case-sensitive: found 'userid' for 'userId'\)",
        ),
        ("movies.csv", "movieId,name,genres\n1,Toy Story,Comedy\n", r"movies.csv: missing column\(s\) title"),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703\n1,abc,4.0,964982703\n",
            r"ratings.csv, line 3: column movieId has 'abc'; expected an integer",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703\n1,2.0,4.0,964982703\n",
            r"ratings.csv, line 3: column movieId has '2.0'; expected an integer",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703\n1,1,four,964982703\n",
            r"ratings.csv, line 3: column rating has 'four'; expected a number",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703\n1,2,,964982703\n",
            r"ratings.csv, line 3: column rating is empty; expected a number",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703\n1,2,7.5,964982703\n1,3,0.0,964982703\n",
            r"ratings.csv, line 3: rating 7.5 is outside \[0.5, 5.0\] \(2 row\(s\) like this\)",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703000\n",
            r"ratings.csv, line 2: timestamp 964982703000 is outside .* these look like milliseconds",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,100\n",
            r"ratings.csv, line 2: timestamp 100 is outside \[788918400, \d+\] \(unix seconds from 1995-01-01",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,1,4.0,964982703\n1,2,4.0\n",
            r"ratings.csv, line 3: 3 field\(s\) where the header has 4",
        ),
        (
            "movies.csv",
            "movieId,title,genres\n1,Toy Story (1995),Comedy\n11,American President, The (1995),Comedy\n",
            r"movies.csv, line 3: 4 field\(s\) where the header has 3 .* a value with a comma needs double quotes",
        ),
        (
            "movies.csv",
            "movieId,title,genres\n1,Toy Story (1995),Comedy\n2,Jumanji,Fantasy\n1,Toy Story again,Drama\n",
            r"movies.csv: movieId 1 appears more than once \(lines 2, 4\)",
        ),
        (
            "ratings.csv",
            RATINGS_HEADER + "1,424242,4.0,964982703\n",
            r"ratings.csv: none of its 1 ratings is of a movie in .*movies.csv",
        ),
    ],
)
def test_bad_input_names_file_line_and_problem(
    ml_dir: Path, tmp_path: Path, file: str, content: str, message: str
) -> None:
    (ml_dir / file).write_text(content)
    with pytest.raises(DatasetError, match=message):
        _convert(ml_dir, tmp_path)
    assert not (tmp_path / "out" / "dataset.json").exists()


@pytest.mark.parametrize("missing", ["ratings.csv", "movies.csv"])
def test_missing_file(ml_dir: Path, tmp_path: Path, missing: str) -> None:
    (ml_dir / missing).unlink()
    with pytest.raises(
        DatasetError, match=rf"{missing} is missing; expected the MovieLens file {missing} with columns"
    ):
        _convert(ml_dir, tmp_path)


def test_path_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is not a directory; expected a MovieLens directory holding ratings.csv"):
        convert_movielens(tmp_path / "nowhere", tmp_path / "out")


def test_failed_conversion_leaves_an_existing_dataset_alone(ml_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_movielens(FIXTURE, out)
    (ml_dir / "ratings.csv").write_text(RATINGS_HEADER + "1,1,9.0,964982703\n")
    with pytest.raises(DatasetError):
        convert_movielens(ml_dir, out)
    assert read_metadata(out)["counts"]["events"] == 40 and read_events(out).num_rows == 40
