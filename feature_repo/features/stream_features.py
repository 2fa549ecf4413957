"""Features the stream keeps current: a user's live session and items trending right now.

The stream processor (pipelines/stream) computes these per event and writes them
through the push sources, online for serving and offline for training.
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
        Field(name="session_events", dtype=Int64, description="Events in the user's current session."),
        Field(name="session_clicks", dtype=Int64, description="Clicks, carts and purchases in the current session."),
        Field(name="last_item_ids", dtype=Array(String), description="Most recent distinct items, newest first."),
        Field(name="last_category", dtype=String, description="Category of the most recent item."),
        Field(name="last_event_epoch", dtype=Float64, description="Event time of the latest event (Unix seconds)."),
        Field(name="events_1h", dtype=Int64, description="Events in the hour before the latest event."),
        Field(name="clicks_1h", dtype=Int64, description="Clicks/carts/purchases in that hour."),
    ],
    online=True,
    source=user_session_push,
    description="Live session state per user, pushed by the stream processor.",
    owner="tandem",
    tags={"path": "stream"},
)

item_trending_v1 = FeatureView(
    name="item_trending_v1",
    entities=[item],
    ttl=timedelta(days=2),
    schema=[
        Field(name="events_1h", dtype=Int64, description="Interactions with the item in the last hour."),
        Field(name="clicks_1h", dtype=Int64, description="Clicks/carts/purchases in the last hour."),
        Field(name="trend_score", dtype=Float64, description="Exponentially decayed interaction rate."),
    ],
    online=True,
    source=item_trending_push,
    description="Short-window popularity per item, pushed by the stream processor.",
    owner="tandem",
    tags={"path": "stream"},
)
