"""User and item features as of each day, computed from raw events with Spark.

Every snapshot is cut at a time `cutoff` (the end of its day, or `as_of` for the day that
contains it) and counts only events strictly before the cutoff; the snapshot's
`event_timestamp` is the cutoff. So Feast's point-in-time join, which picks the latest
snapshot with event_timestamp <= an example's time, can never leak the future.

The work is linear in (keys x days): events are first rolled up per key and day, then a
dense grid of keys x days carries windowed and running sums; history before the grid
arrives as one pre-aggregated base row per key.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from tandem.schema import POSITIVE_EVENT_TYPES

WINDOW_DAYS: tuple[int, ...] = (1, 7, 30)
MAX_WINDOW_DAYS = max(WINDOW_DAYS)
# how much each kind of interaction says about a user's taste for the item's category
AFFINITY_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0, "rating": 3.0}
TOP_CATEGORIES = 3
UNKNOWN_CATEGORY = "unknown"
SECONDS_PER_DAY = 86400.0


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def snapshot_cutoff(day: date, as_of: datetime) -> datetime:
    """When the snapshot of `day` is cut: the end of the day, or as_of if that comes first."""
    return min(day_start(day + timedelta(days=1)), as_of.astimezone(UTC))


def snapshot_days(first: date, last: date) -> list[date]:
    """Every day from first to last, inclusive."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def days_to_compute(as_of: datetime, first_event_day: date, existing: set[date], since: date | None = None,
                    history_days: int = 35) -> list[date]:
    """Which daily snapshots a run as of `as_of` (re)computes.

    With `since`, the range since..as_of (a backfill; existing days are recomputed). Otherwise
    incremental: from the day after the newest existing snapshot, or on a first run the last
    `history_days` days; the day containing as_of is always recomputed, as it may have been cut early.
    """
    as_of = as_of.astimezone(UTC)
    last = (as_of - timedelta(microseconds=1)).date()
    if since is not None:
        first = since
    else:
        done = sorted(d for d in existing if d < last)
        first = done[-1] + timedelta(days=1) if done else last - timedelta(days=history_days - 1)
    first = max(first, first_event_day)
    return snapshot_days(first, last) if first <= last else []


def _is(event_type: str) -> Column:
    return F.col("event_type") == F.lit(event_type)


def _count_if(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("bigint")


def daily_rollup(events: DataFrame, key: str) -> DataFrame:
    """Per key and day: counts by kind of event, rating and spend sums, first/last times."""
    positive = F.col("event_type").isin(list(POSITIVE_EVENT_TYPES))
    return (events.groupBy(key, "day").agg(
        F.count(F.lit(1)).cast("bigint").alias("events"),
        _count_if(positive).alias("positives"),
        _count_if(_is("purchase")).alias("purchases"),
        _count_if(_is("view")).alias("views"),
        _count_if(_is("rating") & F.col("value").isNotNull()).alias("ratings"),
        F.sum(F.when(_is("rating"), F.col("value"))).alias("rating_sum"),
        F.sum(F.when(_is("purchase"), F.coalesce(F.col("value"), F.lit(0.0)))).alias("spend"),
        F.min("ts").alias("first_ts"),
        F.max("ts").alias("last_ts"),
        F.max(F.when(_is("purchase"), F.col("ts"))).alias("last_purchase_ts"),
    ))


_SUMMED = ("events", "positives", "purchases", "views", "ratings", "rating_sum", "spend")


def _day_index(col: str) -> Column:
    return F.datediff(F.col(col), F.lit("1970-01-01").cast("date"))


def windowed_activity(spark: SparkSession, daily: DataFrame, keys: DataFrame, key: str, days: list[date],
                      as_of: datetime) -> DataFrame:
    """Dense (key, day) rows for `days` with N-day window sums, running totals and recency inputs."""
    first, last = min(days), max(days)
    grid_start = first - timedelta(days=MAX_WINDOW_DAYS - 1)
    grid_days = spark.createDataFrame([(d,) for d in snapshot_days(grid_start, last)], "day date")
    base = (daily.where(F.col("day") < F.lit(grid_start))
            .groupBy(key).agg(*[F.sum(c).alias(f"base_{c}") for c in _SUMMED],
                              F.max("last_ts").alias("base_last_ts"),
                              F.max("last_purchase_ts").alias("base_last_purchase_ts")))
    grid = (keys.select(key).distinct().crossJoin(grid_days)
            .join(daily.where(F.col("day") >= F.lit(grid_start)), [key, "day"], "left")
            .join(base, key, "left")
            .withColumn("day_idx", _day_index("day")))
    ordered = Window.partitionBy(key).orderBy("day_idx")
    running = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    cols = []
    for n in WINDOW_DAYS:
        w = ordered.rangeBetween(-(n - 1), 0)
        cols += [F.coalesce(F.sum("events").over(w), F.lit(0)).cast("bigint").alias(f"events_{n}d"),
                 F.coalesce(F.sum("positives").over(w), F.lit(0)).cast("bigint").alias(f"positives_{n}d"),
                 F.coalesce(F.sum("purchases").over(w), F.lit(0)).cast("bigint").alias(f"purchases_{n}d"),
                 F.coalesce(F.sum("spend").over(w), F.lit(0.0)).alias(f"spend_{n}d")]
    for c in _SUMMED:
        total = F.coalesce(F.sum(c).over(running), F.lit(0)) + F.coalesce(F.col(f"base_{c}"), F.lit(0))
        cols.append(total.alias(f"{c}_total"))
    cols += [F.greatest(F.max("last_ts").over(running), F.col("base_last_ts")).alias("last_ts_total"),
             F.greatest(F.max("last_purchase_ts").over(running), F.col("base_last_purchase_ts"))
             .alias("last_purchase_ts_total")]
    windowed = grid.select(key, "day", *cols).where(F.col("day") >= F.lit(first))
    cutoffs = spark.createDataFrame([(d, snapshot_cutoff(d, as_of)) for d in days],
                                    "day date, event_timestamp timestamp")
    return windowed.join(F.broadcast(cutoffs), "day")


def _days_between(later: Column, earlier: Column) -> Column:
    return (later.cast("double") - earlier.cast("double")) / F.lit(SECONDS_PER_DAY)


def _ratio(num: str, den: str) -> Column:
    return F.when(F.col(den) > 0, F.col(num) / F.col(den)).otherwise(F.lit(0.0))


def category_affinity(spark: SparkSession, events: DataFrame, days: list[date]) -> DataFrame:
    """Per (user_id, day): the user's top categories by weighted interactions over all history up to the cutoff.

    Rows only for the days the answer can change: the first of `days` and each day the user was active
    after it (cumulative weights only move on those days). `user_features` carries each row forward to
    the user's following days.
    """
    weights = F.create_map(*[x for et, w in AFFINITY_WEIGHTS.items() for x in (F.lit(et), F.lit(w))])
    daily = (events.withColumn("weight", F.coalesce(weights[F.col("event_type")], F.lit(0.0)))
             .groupBy("user_id", "category", "day").agg(F.sum("weight").alias("weight")))
    first, last = min(days), max(days)
    base = daily.where(F.col("day") < F.lit(first)).groupBy("user_id", "category").agg(F.sum("weight").alias("base"))
    recent = daily.where((F.col("day") >= F.lit(first)) & (F.col("day") <= F.lit(last)))
    changes = (recent.select("user_id", "day")
               .unionByName(daily.select("user_id").withColumn("day", F.lit(first).cast("date")))
               .distinct())
    pairs = daily.select("user_id", "category").distinct()
    grid = (pairs.join(changes, "user_id")
            .join(recent, ["user_id", "category", "day"], "left")
            .join(base, ["user_id", "category"], "left"))
    running = Window.partitionBy("user_id", "category").orderBy("day").rowsBetween(Window.unboundedPreceding, 0)
    cum = grid.select("user_id", "category", "day",
                      (F.coalesce(F.sum("weight").over(running), F.lit(0.0)) + F.coalesce("base", F.lit(0.0)))
                      .alias("weight")).where(F.col("weight") > 0)
    per_user = Window.partitionBy("user_id", "day")
    ranked = (cum.withColumn("share", F.col("weight") / F.sum("weight").over(per_user))
              .withColumn("rank", F.row_number().over(per_user.orderBy(F.desc("weight"), F.asc("category"))))
              .where(F.col("rank") <= TOP_CATEGORIES))
    top = ranked.groupBy("user_id", "day").agg(
        F.sort_array(F.collect_list(F.struct("rank", "category", "share"))).alias("top"))
    return top.select("user_id", "day",
                      F.col("top")[0]["category"].alias("top_category"),
                      F.col("top")[0]["share"].alias("top_category_share"),
                      F.transform("top", lambda s: s["category"]).alias("top_categories"),
                      F.transform("top", lambda s: s["share"]).alias("top_category_shares"))


AFFINITY_COLUMNS = ("top_category", "top_category_share", "top_categories", "top_category_shares")


def carry_forward(df: DataFrame, key: str, columns: tuple[str, ...]) -> DataFrame:
    """Fill each key's null `columns` from its latest earlier day that had them (rows ordered by day)."""
    earlier = Window.partitionBy(key).orderBy("day").rowsBetween(Window.unboundedPreceding, 0)
    return df.withColumns({c: F.last(c, ignorenulls=True).over(earlier) for c in columns})


def with_catalogue(events: DataFrame, items: DataFrame) -> DataFrame:
    """Events with the item's category ('unknown' for items missing from the catalogue) and their UTC day."""
    return (events.join(F.broadcast(items.select("item_id", "category")), "item_id", "left")
            .withColumn("category", F.coalesce("category", F.lit(UNKNOWN_CATEGORY)))
            .withColumn("day", F.to_date("ts")))


def user_features(spark: SparkSession, events: DataFrame, items: DataFrame, users: DataFrame, days: list[date],
                  as_of: datetime) -> DataFrame:
    """user_features_v1 rows (user_id, event_timestamp, date, features) for each of `days`.

    `events` must already exclude everything at or after as_of. A user appears from the first
    snapshot after their signup or first event.
    """
    events = with_catalogue(events, items)
    daily = daily_rollup(events, "user_id")
    first_seen = (events.groupBy("user_id").agg(F.min("ts").alias("first_ts"))
                  .join(users.select("user_id", "signup_ts"), "user_id", "full"))
    activity = windowed_activity(spark, daily, first_seen, "user_id", days, as_of)
    affinity = category_affinity(spark, events, days)
    joined = (carry_forward(activity.join(affinity, ["user_id", "day"], "left"), "user_id", AFFINITY_COLUMNS)
              .join(first_seen, "user_id", "left")
              .withColumn("since", F.coalesce("signup_ts", "first_ts"))
              .where((F.col("events_total") > 0) | (F.col("since") < F.col("event_timestamp"))))
    cutoff = F.col("event_timestamp")
    return joined.select(
        "user_id", "event_timestamp", F.col("day").alias("date"),
        "events_1d", "events_7d", "events_30d", "positives_7d", "positives_30d", "purchases_30d", "spend_30d",
        F.col("events_total").cast("bigint").alias("events_total"),
        F.col("purchases_total").cast("bigint").alias("purchases_total"),
        _ratio("purchases_total", "events_total").alias("purchase_rate"),
        F.col("ratings_total").cast("bigint").alias("ratings_total"),
        F.when(F.col("ratings_total") > 0, F.col("rating_sum_total") / F.col("ratings_total")).alias("avg_rating"),
        _days_between(cutoff, F.col("last_ts_total")).alias("days_since_last_event"),
        _days_between(cutoff, F.col("last_purchase_ts_total")).alias("days_since_last_purchase"),
        F.greatest(_days_between(cutoff, F.col("since")), F.lit(0.0)).alias("tenure_days"),
        "top_category",
        F.coalesce("top_category_share", F.lit(0.0)).alias("top_category_share"),
        F.coalesce("top_categories", F.array().cast("array<string>")).alias("top_categories"),
        F.coalesce("top_category_shares", F.array().cast("array<double>")).alias("top_category_shares"),
    )


def item_features(spark: SparkSession, events: DataFrame, items: DataFrame, days: list[date],
                  as_of: datetime) -> DataFrame:
    """item_features_v1 rows (item_id, event_timestamp, date, features) for each of `days`.

    `events` must already exclude everything at or after as_of. An item appears from the first
    snapshot after its creation or first interaction.
    """
    events = with_catalogue(events, items)
    daily = daily_rollup(events, "item_id")
    first_seen = (events.groupBy("item_id").agg(F.min("ts").alias("first_ts"))
                  .join(items.select("item_id", "category", "price", "created_ts"), "item_id", "full"))
    activity = windowed_activity(spark, daily, first_seen, "item_id", days, as_of)
    joined = (activity.join(first_seen, "item_id", "left")
              .withColumn("since", F.coalesce("created_ts", "first_ts"))
              .where((F.col("events_total") > 0) | (F.col("since") < F.col("event_timestamp"))))
    popularity = Window.partitionBy("day").orderBy(F.desc("positives_7d"), F.desc("events_7d"), F.asc("item_id"))
    cutoff = F.col("event_timestamp")
    return joined.select(
        "item_id", "event_timestamp", F.col("day").alias("date"),
        "events_1d", "events_7d", "events_30d", "positives_7d", "positives_30d", "purchases_30d",
        F.col("events_total").cast("bigint").alias("events_total"),
        F.col("purchases_total").cast("bigint").alias("purchases_total"),
        _ratio("purchases_total", "events_total").alias("conversion_rate"),
        F.col("ratings_total").cast("bigint").alias("ratings_total"),
        F.when(F.col("ratings_total") > 0, F.col("rating_sum_total") / F.col("ratings_total")).alias("avg_rating"),
        F.row_number().over(popularity).cast("bigint").alias("popularity_rank_7d"),
        F.coalesce("category", F.lit(UNKNOWN_CATEGORY)).alias("category"),
        "price",
        F.greatest(_days_between(cutoff, F.col("since")), F.lit(0.0)).alias("age_days"),
    )
