"""Each item's strongest co-visited items: what serving offers after a session's last items.

The batch run's candidate step (models/batch_steps.py) counts, over all history before the run's
`as_of`, how often two items appear in the same session, and writes each item's top neighbours
(models/candidates.py `item_neighbours_frame`) as one row per item and day. Serving reads the
neighbours of the session's last items as candidates, and the online model's `last_item_covisit_log` and
`covisit_share` from their scores (models/online.py `last_items_scores_from_lists`).
"""

from datetime import timedelta

from data_sources import item_neighbours_table
from entities import item
from feast import FeatureView, Field
from feast.types import Array, Float64, String

item_neighbours_v1 = FeatureView(
    name="item_neighbours_v1",
    entities=[item],
    # rewritten by every batch run; a week of slack keeps co-visitation available across a few missed runs
    ttl=timedelta(days=7),
    schema=[
        Field(name="neighbour_item_ids", dtype=Array(String),
              description="Items most often co-visited (same session) with this one, strongest first."),
        Field(name="neighbour_scores", dtype=Array(Float64),
              description="Their co-visitation counts, same order."),
    ],
    online=True,
    source=item_neighbours_table,
    description="Per-item co-visitation neighbours precomputed by the batch run, for session candidates.",
    owner="tandem",
    tags={"path": "batch"},
)
