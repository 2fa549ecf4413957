"""The synthetic generator and the dataset layout it writes: determinism, schema, realism, re-runs."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.dataset import (
    DatasetError,
    event_files,
    read_events,
    read_items,
    read_metadata,
    read_users,
    reset_dataset_dir,
    write_events_partitioned,
)
from pipelines.generate import SIZES, GeneratorConfig, generate_dataset, get_preset
from tandem.schema import EVENT_SCHEMA, EVENT_TYPES, ITEM_SCHEMA, USER_SCHEMA, validate_event

# short sessions give each user enough sessions per third of the period to measure drift
CONFIG = GeneratorConfig(
    n_users=300, n_items=200, n_events=40_000, n_categories=10, days=30, seed=11, session_views=3.0
)
TINY = GeneratorConfig(n_users=100, n_items=60, n_events=4_000, n_categories=6, days=7, seed=3)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("generated")
    return out, generate_dataset(CONFIG, out)


@pytest.fixture(scope="module")
def events(generated: tuple[Path, dict]) -> pd.DataFrame:
    out, _ = generated
    ev = read_events(out).to_pandas()
    items = read_items(out).to_pandas().set_index("item_id")
    ev["category"] = items.loc[ev["item_id"], "category"].to_numpy()
    return ev


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _total_variation(a: np.ndarray, b: np.ndarray, k: int) -> float:
    pa_, pb = np.bincount(a, minlength=k) / len(a), np.bincount(b, minlength=k) / len(b)
    return 0.5 * float(np.abs(pa_ - pb).sum())


def _drift_vs_noise(ev: pd.DataFrame, min_events: int = 10) -> tuple[float, float, int]:
    """Mean per-user distance between the category mixes of the first and last third of the period, and the
    same after randomly reassigning that user's sessions between the two groups (what chance alone gives:
    events come in single-intent sessions, so sessions, not events, are the units to shuffle)."""
    codes, _ = pd.factorize(ev["category"], sort=True)
    k = codes.max() + 1
    t = ev["ts"].astype("int64").to_numpy()
    lo, hi = t.min(), t.max()
    third = np.where(t < lo + (hi - lo) / 3, 0, np.where(t >= hi - (hi - lo) / 3, 2, 1))
    frame = pd.DataFrame({"user": ev["user_id"].to_numpy(), "session": ev["session_id"].to_numpy(), "cat": codes})
    frame = frame[third != 1].assign(last=third[third != 1] == 2)
    rng = np.random.default_rng(0)
    drift, noise = [], []
    for _, g in frame.groupby("user"):
        cats, last = g["cat"].to_numpy(), g["last"].to_numpy()
        if (~last).sum() < min_events or last.sum() < min_events:
            continue
        drift.append(_total_variation(cats[~last], cats[last], k))
        session_codes, sessions = pd.factorize(g["session"])
        flip = rng.permutation(g.groupby("session", sort=False)["last"].first().reindex(sessions).to_numpy())
        shuffled = flip[session_codes]
        if shuffled.all() or not shuffled.any():
            continue
        noise.append(_total_variation(cats[~shuffled], cats[shuffled], k))
    return float(np.mean(drift)), float(np.mean(noise)), len(drift)


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    meta_a = generate_dataset(TINY, a)
    meta_b = generate_dataset(TINY, b)
    assert meta_a == meta_b
    files_a, files_b = _files(a), _files(b)
    assert files_a.keys() == files_b.keys()
    assert files_a == files_b
    assert read_events(a).equals(read_events(b))


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    generate_dataset(TINY, tmp_path / "a")
    generate_dataset(replace(TINY, seed=4), tmp_path / "b")
    a, b = read_events(tmp_path / "a"), read_events(tmp_path / "b")
    assert a.num_rows == b.num_rows == TINY.n_events
    assert not a.column("user_id").equals(b.column("user_id"))
    assert not a.column("ts").equals(b.column("ts"))


# ---------------------------------------------------------------------------------------------- schema and layout


def test_files_have_the_canonical_schemas(generated: tuple[Path, dict]) -> None:
    out, _ = generated
    for path in event_files(out):
        assert pq.read_schema(path).equals(EVENT_SCHEMA), path
        ts_type = pq.ParquetFile(path).metadata.schema.column(EVENT_SCHEMA.get_field_index("ts")).logical_type
        assert ts_type.to_json().count('"microseconds"') == 1, "Spark needs microsecond timestamps"
    assert pq.read_schema(out / "items.parquet").equals(ITEM_SCHEMA)
    assert pq.read_schema(out / "users.parquet").equals(USER_SCHEMA)
    assert read_events(out).schema.equals(EVENT_SCHEMA)
    assert read_items(out).schema.equals(ITEM_SCHEMA)
    assert read_users(out).schema.equals(USER_SCHEMA)


def test_ids_and_values(events: pd.DataFrame, generated: tuple[Path, dict]) -> None:
    out, _ = generated
    assert len(events) == CONFIG.n_events
    assert events["event_id"].is_unique
    assert events["event_id"].str.fullmatch(r"e\d{12}").all()
    assert events["user_id"].str.fullmatch(r"u\d{6}").all()
    assert events["item_id"].str.fullmatch(r"i\d{5}").all()
    assert events["session_id"].notna().all()
    assert set(events["event_type"]) == set(EVENT_TYPES)
    items = read_items(out).to_pandas().set_index("item_id")
    assert set(events["item_id"]) <= set(items.index)
    assert set(events["user_id"]) <= set(read_users(out).column("user_id").to_pylist())
    kind = events["event_type"]
    assert events.loc[kind.isin(["view", "click"]), "value"].isna().all()
    priced = events[kind.isin(["add_to_cart", "purchase"])]
    np.testing.assert_allclose(priced["value"], items.loc[priced["item_id"], "price"].to_numpy())
    ratings = events.loc[kind == "rating", "value"]
    assert ratings.between(1, 5).all() and (ratings == ratings.round()).all()
    assert items["price"].gt(0).all()
    # a sample of rows passes the same validation the stream applies
    for row in events.sample(200, random_state=0).to_dict("records"):
        row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items() if k != "category"}
        validate_event({**row, "ts": row["ts"].to_pydatetime()})


def test_timestamps_in_period_and_partitions_match_dates(generated: tuple[Path, dict]) -> None:
    out, meta = generated
    start, end = CONFIG.start, CONFIG.start + timedelta(days=CONFIG.days)
    for path in event_files(out):
        day = path.parent.name.removeprefix("date=")
        ts = pq.read_table(path, columns=["ts"]).column("ts").to_pandas()
        assert (ts.dt.strftime("%Y-%m-%d") == day).all(), path
        assert ts.min() >= start and ts.max() < end
    ev = read_events(out).to_pandas()
    assert meta["first_ts"] == ev["ts"].min().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert meta["last_ts"] == ev["ts"].max().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_users_sign_up_before_their_first_event_and_items_exist_before_theirs(
    events: pd.DataFrame, generated: tuple[Path, dict]
) -> None:
    out, _ = generated
    users = read_users(out).to_pandas().set_index("user_id")
    first = events.groupby("user_id")["ts"].min()
    assert (users.loc[first.index, "signup_ts"] < first).all()
    assert (users["signup_ts"] >= CONFIG.start).any(), "some users sign up during the period"
    items = read_items(out).to_pandas().set_index("item_id")
    first_item = events.groupby("item_id")["ts"].min()
    assert (items.loc[first_item.index, "created_ts"] < first_item).all()
    assert (items["created_ts"] >= CONFIG.start).any(), "some items appear during the period"


def test_metadata(generated: tuple[Path, dict], events: pd.DataFrame) -> None:
    out, meta = generated
    assert read_metadata(out) == json.loads(json.dumps(meta)) | {"layout_version": 1}
    assert meta["source"] == "generate" and meta["seed"] == CONFIG.seed
    counts = meta["counts"]
    assert (counts["events"], counts["users"], counts["items"]) == (CONFIG.n_events, CONFIG.n_users, CONFIG.n_items)
    assert counts["active_users"] == events["user_id"].nunique()
    assert counts["active_items"] == events["item_id"].nunique()
    assert counts["sessions"] == events["session_id"].nunique()
    assert meta["event_types"] == events["event_type"].value_counts().to_dict()
    assert sorted(meta["categories"]) == sorted(read_items(out).column("category").unique().to_pylist())
    assert meta["params"]["drift"] == CONFIG.drift and meta["params"]["start"] == "2025-01-06T00:00:00.000000Z"


# ---------------------------------------------------------------------------------------------- realism


def test_item_popularity_is_skewed(events: pd.DataFrame) -> None:
    counts = events["item_id"].value_counts()
    top = counts.iloc[: CONFIG.n_items // 10].sum()
    assert top / len(events) > 0.4


def test_user_activity_is_heavy_tailed(events: pd.DataFrame) -> None:
    per_user = events["user_id"].value_counts()
    assert per_user.max() > 5 * per_user.median()


def test_users_concentrate_on_few_categories(events: pd.DataFrame) -> None:
    size = events.groupby("user_id").size()
    share = (events.groupby(["user_id", "category"]).size().groupby(level=0).max() / size)[size >= 20]
    assert len(share) > 50
    assert share.mean() > 3 / CONFIG.n_categories


def test_sessions_have_an_intent(events: pd.DataFrame) -> None:
    sessions = events.groupby("session_id")
    size = sessions.size()
    top_category = events.groupby(["session_id", "category"]).size().groupby(level=0).max()
    share = (top_category / size)[size >= 5]
    assert share.mean() > 0.7
    assert (sessions["user_id"].nunique() == 1).all()
    span = sessions["ts"].max() - sessions["ts"].min()
    assert span.median() < pd.Timedelta(hours=1)


def test_taste_drifts_over_the_period(events: pd.DataFrame, tmp_path: Path) -> None:
    drift, noise, users = _drift_vs_noise(events)
    assert users > 30
    assert drift > 1.12 * noise, (drift, noise)  # about 1.2-1.3 across seeds
    # without drift the first and last thirds differ only as much as noise makes them
    generate_dataset(replace(CONFIG, drift=0.0), tmp_path)
    still = read_events(tmp_path).to_pandas()
    items = read_items(tmp_path).to_pandas().set_index("item_id")
    still["category"] = items.loc[still["item_id"], "category"].to_numpy()
    drift0, noise0, _ = _drift_vs_noise(still)
    assert drift0 < 1.08 * noise0, (drift0, noise0)  # about 0.95-1.02 across seeds


def test_funnel_narrows_and_follows_order(events: pd.DataFrame) -> None:
    n = events["event_type"].value_counts()
    assert n["view"] > n["click"] > n["add_to_cart"] > n["purchase"] > n["rating"] > 0
    # every purchase follows an add_to_cart of the same item in the same session, which follows a click
    key = ["session_id", "item_id"]
    for later, earlier in (("purchase", "add_to_cart"), ("add_to_cart", "click"), ("click", "view")):
        a = events.loc[events["event_type"] == later, [*key, "ts"]]
        b = events.loc[events["event_type"] == earlier, [*key, "ts"]].groupby(key)["ts"].min()
        joined = a.join(b.rename("before"), on=key)
        assert joined["before"].notna().all(), f"{later} without {earlier}"
        assert (joined["before"] <= joined["ts"]).all(), f"{later} before {earlier}"


def test_evenings_are_busier_than_nights(events: pd.DataFrame) -> None:
    hours = events["ts"].dt.hour.value_counts().sort_index()
    assert hours.loc[18:22].mean() > 3 * hours.loc[1:5].mean()


def test_ratings_follow_taste(events: pd.DataFrame) -> None:
    # users rate items of their favourite category higher than other items
    per_category = events.groupby(["user_id", "category"]).size().reset_index(name="n")
    fav = per_category.sort_values("n").drop_duplicates("user_id", keep="last").set_index("user_id")["category"]
    rated = events[events["event_type"] == "rating"]
    in_fav = rated["category"].to_numpy() == fav.loc[rated["user_id"]].to_numpy()
    assert in_fav.sum() > 20 and (~in_fav).sum() > 20
    assert rated["value"][in_fav].mean() > rated["value"][~in_fav].mean()


# ---------------------------------------------------------------------------------------------- re-runs, progress


def test_regenerating_into_the_same_dir_replaces_the_data(tmp_path: Path) -> None:
    generate_dataset(TINY, tmp_path)
    files = len(event_files(tmp_path))
    generate_dataset(TINY, tmp_path)
    assert len(event_files(tmp_path)) == files
    assert read_events(tmp_path).num_rows == TINY.n_events
    smaller = replace(TINY, n_events=1_000, days=3)
    generate_dataset(smaller, tmp_path)
    assert read_events(tmp_path).num_rows == 1_000
    assert read_metadata(tmp_path)["counts"]["events"] == 1_000
    assert len(event_files(tmp_path)) <= 4


def test_progress_reports_every_day(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_dataset(TINY, tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, TINY.n_events) and calls[-1] == (TINY.n_events, TINY.n_events)
    assert len(calls) == TINY.days + 1
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_presets() -> None:
    demo = SIZES["demo"]
    assert (demo.n_events, demo.n_users, demo.n_items) == (50_000, 2_000, 500)
    assert SIZES["large"].n_events >= 10_000_000
    assert [SIZES[s].n_events for s in ("demo", "small", "medium", "large")] == sorted(SIZES[s].n_events for s in SIZES)
    assert get_preset("demo", seed=99).seed == 99
    with pytest.raises(ValueError, match="unknown dataset size 'huge'; expected one of demo, small"):
        get_preset("huge")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_events", 0, "n_events: expected a positive integer"),
        ("n_items", 3, "every category needs an item"),
        ("drift", 1.5, r"drift: expected a value in \[0, 1\]"),
        ("seed", -1, "seed: expected a non-negative integer"),
        ("click_rate", 1.0, "click_rate: expected a probability"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TINY, **{field: value})


def test_naive_start_is_taken_as_utc() -> None:
    assert replace(TINY, start=datetime(2025, 3, 1)).start == datetime(2025, 3, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- the layout itself


def test_reading_a_missing_dataset_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no dataset at .*: events/ missing \(run `tandem data generate --out"):
        read_events(tmp_path)
    with pytest.raises(DatasetError, match="directory does not exist"):
        read_events(tmp_path / "nowhere")
    (tmp_path / "events").mkdir()
    with pytest.raises(DatasetError, match="no events in"):
        read_events(tmp_path)
    with pytest.raises(DatasetError, match="items.parquet missing"):
        read_items(tmp_path)
    with pytest.raises(DatasetError, match="dataset.json missing"):
        read_metadata(tmp_path)


def test_write_events_partitioned_appends_by_part_and_stores_microseconds(tmp_path: Path) -> None:
    ts = pd.to_datetime(["2025-01-01T23:59:59.123456789Z", "2025-01-02T00:00:00.0Z", "2025-01-01T10:00:00.0Z"])
    frame = pd.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["i1", "i2", "i1"],
            "event_type": ["view", "purchase", "view"],
            "value": [None, 9.5, None],
            "ts": ts.floor("us"),  # nanosecond pandas column, microsecond values
            "session_id": ["s1", None, "s2"],
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    written = write_events_partitioned(table, tmp_path, part="00001")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "events/date=2025-01-01/part-00001.parquet",
        "events/date=2025-01-02/part-00001.parquet",
    ]
    again = write_events_partitioned(table, tmp_path, part="00001")  # same part: replaced
    assert again == written and read_events(tmp_path).num_rows == 3
    write_events_partitioned(table.slice(0, 1), tmp_path)  # no part: a deterministic hash name, appended
    assert read_events(tmp_path).num_rows == 4
    assert read_events(tmp_path).schema.equals(EVENT_SCHEMA)
    assert pq.read_schema(written[0]).field("ts").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(DatasetError, match="missing column"):
        write_events_partitioned(table.drop_columns(["session_id"]), tmp_path)


def test_reset_refuses_to_clear_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="refusing to clear .*notes.txt"):
        reset_dataset_dir(tmp_path)
    assert (tmp_path / "events" / "notes.txt").exists()
    with pytest.raises(DatasetError, match="it is a file"):
        reset_dataset_dir(tmp_path / "events" / "notes.txt")
