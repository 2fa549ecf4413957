"""Feature math on a hand-checked history, with an in-process Spark (local, no services)."""

from datetime import UTC, date, datetime

import pytest

from pipelines.batch import feast_repo
from pipelines.batch.features import item_features, user_features
from tandem.schema import EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA
from tandem.settings import Settings


def ts(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


AS_OF = ts(10, 12)
DAYS = [date(2026, 3, 9), date(2026, 3, 10)]
EVENTS = [  # event_id, user, item, type, value, ts
    ("e1", "u1", "i1", "view", None, ts(2, 10)),
    ("e2", "u1", "i1", "click", None, ts(2, 10, 1)),
    ("e3", "u1", "i1", "purchase", 10.0, ts(5, 9)),
    ("e4", "u1", "i2", "rating", 4.0, ts(9, 8)),
    ("e5", "u1", "i2", "view", None, ts(10)),          # exactly at the day-9 cutoff: belongs to day 10
    ("e6", "u3", "i2", "click", None, ts(10, 10)),     # a user missing from users.parquet
    ("e7", "u1", "i1", "purchase", 10.0, ts(10, 13)),  # after as_of: never counted
]


@pytest.fixture(scope="module")
def spark():
    from pipelines.batch.spark import spark_session

    return spark_session(Settings())


@pytest.fixture(scope="module")
def frames(spark):
    from pyspark.sql import functions as F

    events = spark.createDataFrame([(*e[:5], e[5], None) for e in EVENTS],
                                   "event_id string, user_id string, item_id string, event_type string, "
                                   "value double, ts timestamp, session_id string")
    assert events.columns == EVENT_SCHEMA.names
    items = spark.createDataFrame([("i1", "A", 10.0, ts(1), "one"), ("i2", "B", 20.0, ts(1), "two"),
                                   ("i3", "A", None, ts(8), "three")],
                                  "item_id string, category string, price double, created_ts timestamp, title string")
    users = spark.createDataFrame([("u1", ts(1)), ("u2", ts(9, 12))], "user_id string, signup_ts timestamp")
    assert items.columns == ITEM_SCHEMA.names and users.columns == USER_SCHEMA.names
    before = events.where(F.col("ts") < F.lit(AS_OF))
    u = user_features(spark, before, items, users, DAYS, AS_OF).toPandas()
    i = item_features(spark, before, items, DAYS, AS_OF).toPandas()
    return u.set_index(["user_id", "date"]), i.set_index(["item_id", "date"])


def row(df, key, day):
    return df.loc[(key, date(2026, 3, day))]


def test_columns_are_exactly_the_feature_views_schema(frames):
    users, items = frames
    for df, view in ((users, "user_features_v1"), (items, "item_features_v1")):
        expected = [n for n in feast_repo.arrow_schema(view).names if n not in ("user_id", "item_id")]
        assert [c for c in df.columns if c != "event_timestamp"] == [n for n in expected if n != "event_timestamp"]


def test_user_windows_totals_and_recency_count_only_events_before_the_cutoff(frames):
    u1 = row(frames[0], "u1", 9)
    # Spark hands timestamps to pandas as naive UTC (session time zone UTC)
    assert u1["event_timestamp"] == ts(10).replace(tzinfo=None)
    assert (u1["events_1d"], u1["events_7d"], u1["events_30d"]) == (1, 2, 4)
    assert (u1["positives_7d"], u1["positives_30d"], u1["purchases_30d"]) == (2, 3, 1)
    assert (u1["events_total"], u1["purchases_total"], u1["ratings_total"]) == (4, 1, 1)
    assert u1["spend_30d"] == 10.0 and u1["purchase_rate"] == 0.25 and u1["avg_rating"] == 4.0
    assert u1["days_since_last_event"] == pytest.approx(16 / 24)
    assert u1["days_since_last_purchase"] == pytest.approx(4 + 15 / 24)
    assert u1["tenure_days"] == pytest.approx(9.0)
    later = row(frames[0], "u1", 10)
    assert later["event_timestamp"] == AS_OF.replace(tzinfo=None)  # the as-of day is cut at as_of, so e7 is not in it
    assert (later["events_1d"], later["events_total"], later["purchases_total"]) == (1, 5, 1)
    assert later["days_since_last_event"] == pytest.approx(0.5)


def test_category_affinity_weighs_interactions_by_intent(frames):
    u1 = row(frames[0], "u1", 9)
    # A: view 1 + click 2 + purchase 5 = 8; B: rating 3
    assert u1["top_category"] == "A" and u1["top_category_share"] == pytest.approx(8 / 11)
    assert list(u1["top_categories"]) == ["A", "B"]
    assert list(u1["top_category_shares"]) == pytest.approx([8 / 11, 3 / 11])
    assert row(frames[0], "u1", 10)["top_category_share"] == pytest.approx(8 / 12)


def test_users_appear_from_signup_or_first_event(frames):
    users = frames[0]
    u2 = row(users, "u2", 9)
    assert u2["events_total"] == 0 and u2["top_category"] is None and list(u2["top_categories"]) == []
    assert u2["tenure_days"] == pytest.approx(0.5)
    assert u2["days_since_last_event"] != u2["days_since_last_event"]  # NaN: no event yet
    assert ("u3", date(2026, 3, 9)) not in users.index
    assert row(users, "u3", 10)["tenure_days"] == pytest.approx(2 / 24)


def test_item_popularity_conversion_rating_and_catalogue(frames):
    items = frames[1]
    i1, i2, i3 = (row(items, k, 9) for k in ("i1", "i2", "i3"))
    assert (i1["events_total"], i1["purchases_total"], i1["events_7d"]) == (3, 1, 1)
    assert i1["conversion_rate"] == pytest.approx(1 / 3)
    assert i2["avg_rating"] == 4.0 and i2["category"] == "B" and i2["price"] == 20.0
    assert i3["events_total"] == 0 and i3["age_days"] == pytest.approx(2.0)
    assert i3["price"] != i3["price"]  # unknown price stays null
    assert [row(items, k, 9)["popularity_rank_7d"] for k in ("i1", "i2", "i3")] == [1, 2, 3]
    # on day 10, i2 gets a view and a click before as_of and takes the lead
    assert row(items, "i2", 10)["events_1d"] == 2
    assert row(items, "i2", 10)["popularity_rank_7d"] == 1


def test_driver_memory_is_a_quarter_of_the_machine_within_bounds():
    from pipelines.batch.spark import driver_memory

    gib = 2**30
    assert driver_memory(4 * gib) == "2g"
    assert driver_memory(24 * gib) == "6g"
    assert driver_memory(256 * gib) == "8g"


def test_category_affinity_matches_a_brute_force_over_every_day(spark):
    """Top categories are computed only on days a user was active and carried forward; check every (user, day)
    against the same ranking recomputed from scratch."""
    import random
    from datetime import timedelta

    from pipelines.batch.features import AFFINITY_WEIGHTS

    rng = random.Random(5)
    items = [(f"i{k}", "ABCDE"[k % 5], 1.0, ts(1), f"item {k}") for k in range(10)]
    types = sorted(AFFINITY_WEIGHTS)
    events = [(f"e{n}", f"u{rng.randrange(6)}", f"i{rng.randrange(10)}", rng.choice(types), 1.0,
               ts(1) + timedelta(hours=rng.randrange(14 * 24)), None) for n in range(120)]
    as_of = ts(15)
    days = [date(2026, 3, d) for d in range(6, 15)]
    frame = spark.createDataFrame(events, "event_id string, user_id string, item_id string, event_type string, "
                                          "value double, ts timestamp, session_id string")
    item_frame = spark.createDataFrame(items, "item_id string, category string, price double, "
                                              "created_ts timestamp, title string")
    users = spark.createDataFrame([("u0", ts(1))], "user_id string, signup_ts timestamp")
    got = user_features(spark, frame, item_frame, users, days, as_of).toPandas().set_index(["user_id", "date"])
    category = {i[0]: i[1] for i in items}
    checked = 0
    for (user, day), features in got.iterrows():
        totals: dict[str, float] = {}
        for _, u, item, kind, _, when, _ in events:
            if u == user and when.date() <= day:
                totals[category[item]] = totals.get(category[item], 0.0) + AFFINITY_WEIGHTS[kind]
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        assert list(features["top_categories"]) == [c for c, _ in ranked], (user, day)
        assert list(features["top_category_shares"]) == pytest.approx([w / sum(totals.values()) for _, w in ranked])
        checked += 1
    assert checked >= 40  # most of the 6 users × 9 days
