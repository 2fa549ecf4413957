"""Each item's nearest items in users' event sequences: what people go on to (and came from) around it.

The batch run's candidate step (models/batch_steps.py) scores, over all history before the run's
`as_of`, every pair of one user's events at most 20 positions apart — what follows an item at full
weight, what precedes it at half, both decaying with the distance — normalized by the neighbour's
popularity (models/candidates.py `sequence_neighbours_matrix`), and writes each item's top neighbours
as one row per item and day. Where item_neighbours_v1 says "seen in the same session", this view
says "seen next": order and distance count. Serving reads the rows of the session's last items as
candidates and the online model's `last_item_sequence_log` / `sequence_share` from their scores.
"""

from datetime import timedelta

from data_sources import item_sequence_neighbours_table
from entities import item
from feast import FeatureView, Field
from feast.types import Array, Float64, String

item_sequence_neighbours_v1 = FeatureView(
    name="item_sequence_neighbours_v1",
    entities=[item],
    # rewritten by every batch run; a week of slack keeps the neighbours available across a few missed runs
    ttl=timedelta(days=7),
    schema=[
        Field(name="sequence_item_ids", dtype=Array(String),
              description="Items most often near this one in users' event sequences, strongest first."),
        Field(name="sequence_scores", dtype=Array(Float64),
              description="Their distance-weighted, popularity-normalized co-occurrence, same order."),
    ],
    online=True,
    source=item_sequence_neighbours_table,
    description="Per-item sequence neighbours precomputed by the batch run, for session candidates.",
    owner="tandem",
    tags={"path": "batch"},
)
