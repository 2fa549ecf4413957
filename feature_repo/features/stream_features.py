"""Features the stream keeps current: a user's live session and items trending right now.

The stream processor (pipelines/stream) folds each event into per-user and per-item
state (pipelines/stream/session_features.py holds the math) and writes these views
online in Feast's Redis format and offline, through the push sources' batch tables,
so training reads what serving saw. Every value is as of the entity's latest *event
time*; the row's event_timestamp is that time. This file is the single definition:
the processor's online encoding and the offline log schema are derived from it.
"""

from datetime import timedelta

from data_sources import item_trending_push, user_session_push
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String

user_session_v1 = FeatureView(
    name="user_session_v1",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="session_events", dtype=Int64,
              description="Events in the current session (gaps <= 30 min, within the last 4 h, at most 200)."),
        Field(name="session_clicks", dtype=Int64,
              description="Positive events (click, add_to_cart, purchase, rating) in the current session."),
        Field(name="session_duration_s", dtype=Float64, description="Seconds from the session's first to last event."),
        Field(name="last_item_ids", dtype=Array(String),
              description="Most recent distinct items, newest first (<= 10)."),
        Field(name="last_category", dtype=String, description="Category of the most recent item."),
        Field(name="session_categories", dtype=Array(String),
              description="Categories seen in the session, most frequent first."),
        Field(name="session_category_counts", dtype=Array(Int64),
              description="Events per category, aligned with session_categories."),
        Field(name="last_event_epoch", dtype=Float64, description="Event time of the latest event (Unix seconds)."),
        Field(name="seconds_since_prev_event", dtype=Float64,
              description="Event-time gap between the latest event and the one before (-1 if none)."),
        Field(name="events_5m", dtype=Int64, description="Events in the 5 minutes up to the latest event."),
        Field(name="clicks_5m", dtype=Int64, description="Positive events in those 5 minutes."),
        Field(name="events_1h", dtype=Int64, description="Events in the hour up to the latest event."),
        Field(name="clicks_1h", dtype=Int64, description="Positive events in that hour."),
    ],
    online=True,
    source=user_session_push,
    description="Live session state per user, written by the stream processor.",
    owner="tandem",
    tags={"path": "stream"},
)

item_trending_v1 = FeatureView(
    name="item_trending_v1",
    entities=[item],
    ttl=timedelta(days=2),
    schema=[
        Field(name="events_5m", dtype=Int64, description="Interactions in the 5 one-minute buckets up to the latest."),
        Field(name="events_1h", dtype=Int64, description="Interactions in the 60 one-minute buckets up to the latest."),
        Field(name="clicks_1h", dtype=Int64, description="Positive interactions in those 60 buckets."),
        Field(name="trend_score", dtype=Float64,
              description="Interactions in the last hour, decayed with a 15-minute half-life."),
    ],
    online=True,
    source=item_trending_push,
    description="Short-window popularity per item, written by the stream processor.",
    owner="tandem",
    tags={"path": "stream"},
)

STREAM_FEATURE_VIEWS = (user_session_v1, item_trending_v1)
