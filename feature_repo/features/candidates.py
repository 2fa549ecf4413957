"""Each user's precomputed candidate list: the items serving scores first for that user.

The batch run's candidate step writes one row per user and day (best candidates first);
serving reads it online and merges it with the session's item neighbours and trending items.
"""

from datetime import timedelta

from data_sources import user_candidates_table
from entities import user
from feast import FeatureView, Field
from feast.types import Array, Float64, String

user_candidates_v1 = FeatureView(
    name="user_candidates_v1",
    entities=[user],
    ttl=timedelta(days=7),
    schema=[
        Field(name="candidate_item_ids", dtype=Array(String), description="Candidate items, best first."),
        Field(name="candidate_scores", dtype=Array(Float64), description="Their scores, same order."),
        Field(name="candidate_source", dtype=String, description="What produced the list (e.g. a model version)."),
    ],
    online=True,
    source=user_candidates_table,
    description="Per-user candidate lists precomputed by the batch run.",
    owner="tandem",
    tags={"path": "batch"},
)
