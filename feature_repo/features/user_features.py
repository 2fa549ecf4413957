"""A user's long-term behaviour as of each day: activity over windows, purchases and ratings, recency,
tenure and category affinity.

pipelines/batch/features.py computes these from raw events with Spark; every value at
`event_timestamp` counts only events strictly before it, so a training example at time t
joined point-in-time never sees its own future.
"""

from datetime import timedelta

from data_sources import user_features_table
from entities import user
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String

user_features_v1 = FeatureView(
    name="user_features_v1",
    entities=[user],
    # snapshots are daily; a week of slack keeps features available across a few missed runs
    ttl=timedelta(days=7),
    schema=[
        Field(name="events_1d", dtype=Int64, description="Events of any type in the last day."),
        Field(name="events_7d", dtype=Int64, description="Events of any type in the last 7 days."),
        Field(name="events_30d", dtype=Int64, description="Events of any type in the last 30 days."),
        Field(name="positives_7d", dtype=Int64, description="Clicks, carts, purchases and ratings in 7 days."),
        Field(name="positives_30d", dtype=Int64, description="Clicks, carts, purchases and ratings in 30 days."),
        Field(name="purchases_30d", dtype=Int64, description="Purchases in the last 30 days."),
        Field(name="spend_30d", dtype=Float64, description="Sum of purchase values in the last 30 days."),
        Field(name="events_total", dtype=Int64, description="Events over the user's whole history."),
        Field(name="purchases_total", dtype=Int64, description="Purchases over the whole history."),
        Field(name="purchase_rate", dtype=Float64, description="purchases_total / events_total (0 without events)."),
        Field(name="ratings_total", dtype=Int64, description="Ratings over the whole history."),
        Field(name="avg_rating", dtype=Float64, description="Mean rating the user gave; null without ratings."),
        Field(name="days_since_last_event", dtype=Float64, description="Days since the latest event; null if none."),
        Field(name="days_since_last_purchase", dtype=Float64,
              description="Days since the latest purchase; null if none."),
        Field(name="tenure_days", dtype=Float64, description="Days since signup (or the first event without one)."),
        Field(name="top_category", dtype=String, description="Category with the highest affinity; null if none."),
        Field(name="top_category_share", dtype=Float64, description="Share of affinity weight in top_category."),
        Field(name="top_categories", dtype=Array(String), description="Up to 3 categories by affinity, best first."),
        Field(name="top_category_shares", dtype=Array(Float64), description="Their shares of affinity weight."),
    ],
    online=True,
    source=user_features_table,
    description="Long-term user taste and activity, daily snapshots from the Spark batch job.",
    owner="tandem",
    tags={"path": "batch"},
)
