"""Each item's strongest EASE neighbours: what serving offers after a session's last items.

The batch run's candidate step (models/batch_steps.py) fits EASE item-item weights (models/candidates.py
`ease_matrix`: a ridge regression of every item on all others over the users' interactions before the run's
`as_of`) and writes each item's 100 strongest positive weights (`item_neighbours_frame`) as one row per item
and day. Serving reads the neighbours of the session's last items as candidates, and the online model's
`last_item_neighbour_log` and `neighbour_share` from their weights (models/online.py
`last_items_scores_from_lists`).
"""

from datetime import timedelta

from data_sources import item_neighbours_table
from entities import item
from feast import FeatureView, Field
from feast.types import Array, Float64, String

item_neighbours_v1 = FeatureView(
    name="item_neighbours_v1",
    entities=[item],
    # rewritten by every batch run; a week of slack keeps the neighbours available across a few missed runs
    ttl=timedelta(days=7),
    schema=[
        Field(name="neighbour_item_ids", dtype=Array(String),
              description="Items with the largest EASE weight from this one, strongest first."),
        Field(name="neighbour_scores", dtype=Array(Float64),
              description="Their EASE weights (positive), same order."),
    ],
    online=True,
    source=item_neighbours_table,
    description="Per-item EASE neighbours precomputed by the batch run, for session candidates.",
    owner="tandem",
    tags={"path": "batch"},
)
