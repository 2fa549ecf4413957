"""An item's popularity and quality as of each day, with its catalogue attributes.

pipelines/batch/features.py computes these from raw events and items.parquet with Spark;
every value at `event_timestamp` counts only events strictly before it.

The interaction counts and the mean rating carry the tag `monotone`: the batch ranker's score may
only rise with them ("increasing") or, for a rank, fall ("decreasing") — pipelines/batch/training.py
reads it.
A ranker free of that learns a jagged function of each count that forecasts the next day and
ages badly over the weeks a list stays in use.
"""

from datetime import timedelta

from data_sources import item_features_table
from entities import item
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

MORE = {"monotone": "increasing"}  # more of it never lowers the batch ranker's score
LESS = {"monotone": "decreasing"}

item_features_v1 = FeatureView(
    name="item_features_v1",
    entities=[item],
    # snapshots are daily; a week of slack keeps features available across a few missed runs
    ttl=timedelta(days=7),
    schema=[
        Field(name="events_1d", dtype=Int64, description="Interactions of any type in the last day.", tags=MORE),
        Field(name="events_7d", dtype=Int64, description="Interactions of any type in the last 7 days.", tags=MORE),
        Field(name="events_30d", dtype=Int64, description="Interactions of any type in the last 30 days.", tags=MORE),
        Field(name="positives_7d", dtype=Int64,
              description="Clicks, carts, purchases and ratings in 7 days.", tags=MORE),
        Field(name="positives_30d", dtype=Int64,
              description="Clicks, carts, purchases and ratings in 30 days.", tags=MORE),
        Field(name="purchases_30d", dtype=Int64, description="Purchases in the last 30 days.", tags=MORE),
        Field(name="events_total", dtype=Int64, description="Interactions over the item's whole history.", tags=MORE),
        Field(name="purchases_total", dtype=Int64, description="Purchases over the whole history.", tags=MORE),
        Field(name="conversion_rate", dtype=Float64, description="purchases_total / events_total (0 without events)."),
        Field(name="ratings_total", dtype=Int64, description="Ratings over the whole history.", tags=MORE),
        Field(name="avg_rating", dtype=Float64, description="Mean rating; null without ratings.", tags=MORE),
        Field(name="popularity_rank_7d", dtype=Int64,
              description="Rank by positives_7d among all items (1 = top).", tags=LESS),
        Field(name="category", dtype=String, description="Catalogue category ('unknown' if not in items.parquet)."),
        Field(name="price", dtype=Float64, description="Catalogue price; null if unknown."),
        Field(name="age_days", dtype=Float64, description="Days since the item was created (or first seen)."),
    ],
    online=True,
    source=item_features_table,
    description="Item popularity, conversion, rating and catalogue attributes, daily snapshots from Spark.",
    owner="tandem",
    tags={"path": "batch"},
)
