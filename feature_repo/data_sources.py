"""Where feature values come from: Spark tables in the offline store, and push sources for the stream.

Each push source carries a batch source over the same offline table, so what the
stream pushes online is also what training reads offline (one definition, two paths).
The stream's log tables carry `created` (when the row was written) besides
`event_timestamp`: a late event can change a row without moving its event time, and
`created` says which of two rows with one event_timestamp is the newer.
"""

from feast import PushSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from repo_paths import offline_table

user_session_log = SparkSource(
    name="user_session_log",
    path=offline_table("user_session"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Session features the stream processor computed, logged offline in micro-batches.",
    owner="tandem",
    tags={"path": "stream"},
)

user_session_push = PushSource(
    name="user_session_push",
    batch_source=user_session_log,
    description="The stream processor pushes fresh per-user session features here.",
    owner="tandem",
    tags={"path": "stream"},
)

item_trending_log = SparkSource(
    name="item_trending_log",
    path=offline_table("item_trending"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    description="Short-window item trending counts the stream processor computed, logged offline.",
    owner="tandem",
    tags={"path": "stream"},
)

item_trending_push = PushSource(
    name="item_trending_push",
    batch_source=item_trending_log,
    description="The stream processor pushes short-window item trending counts here.",
    owner="tandem",
    tags={"path": "stream"},
)

# Batch feature tables written by pipelines/batch: one snapshot per user/item per day, stamped with the
# time the snapshot was cut (features count only events strictly before event_timestamp).

user_features_table = SparkSource(
    name="user_features_table",
    path=offline_table("user_features"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    description="Daily snapshots of each user's long-term behaviour, computed by the Spark batch job.",
    owner="tandem",
    tags={"path": "batch"},
)

item_features_table = SparkSource(
    name="item_features_table",
    path=offline_table("item_features"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    description="Daily snapshots of each item's popularity, conversion and catalogue attributes.",
    owner="tandem",
    tags={"path": "batch"},
)

user_candidates_table = SparkSource(
    name="user_candidates_table",
    path=offline_table("user_candidates"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    description="Each user's precomputed candidate list, written by the batch run's candidate step.",
    owner="tandem",
    tags={"path": "batch"},
)

item_neighbours_table = SparkSource(
    name="item_neighbours_table",
    path=offline_table("item_neighbours"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    description="Each item's strongest EASE neighbours, written by the batch run's candidate step.",
    owner="tandem",
    tags={"path": "batch"},
)

item_sequence_neighbours_table = SparkSource(
    name="item_sequence_neighbours_table",
    path=offline_table("item_sequence_neighbours"),
    file_format="parquet",
    timestamp_field="event_timestamp",
    description="Each item's nearest items in users' event sequences, written by the batch run's candidate step.",
    owner="tandem",
    tags={"path": "batch"},
)
