"""The replay's stream state on the stream processor's own feature functions (pipelines/stream/session_features).

`tandem evaluate` and `tandem train online` fold replayed events into a StreamState
(models/session.py): `stream_processor_state` folds them with the processor's
`fold_user`/`user_features` and `fold_item`/`item_features` — the same math that fills
user_session_v1 and item_trending_v1 in Redis — and reads each user's view through
`session_view_from_features`, exactly as serving reads Redis. There is no other stream state.
"""

from __future__ import annotations

import numpy as np

from models.features import Catalog
from models.session import SessionView, StreamState, session_view_from_features
from pipelines.stream import session_features


class StreamProcessorState:
    """StreamState folding events with the stream processor's functions (user and item state as in Redis)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.category_index = {c: i for i, c in enumerate(catalog.category_names)}
        self.users: dict[int, session_features.UserState] = {}
        self.items: dict[int, session_features.ItemState] = {}
        self._views: dict[int, SessionView | None] = {}
        self._trend = np.zeros(catalog.n_items)
        self._n = 0

    def observe(self, user: int, item: int, positive: bool, ts: float, session_key: int) -> None:
        ts_us = int(round(ts * 1_000_000))
        self._n += 1
        entry = (ts_us, f"replay-{self._n}", str(self.catalog.item_ids[item]), "click" if positive else "view",
                 self.catalog.category_names[self.catalog.item_category[item]])
        self.users[user] = session_features.fold_user(self.users.get(user), [entry])
        self._views.pop(user, None)
        self.items[item] = session_features.fold_item(self.items.get(item), [(ts_us, positive)])
        # the stream publishes trend_score as of the item's latest event; serving reads it as stored
        self._trend[item] = session_features.item_features(self.items[item])["trend_score"]

    def view(self, user: int) -> SessionView | None:
        if user not in self._views:
            state = self.users.get(user)
            values = session_features.user_features(state) if state is not None and state.entries else None
            self._views[user] = session_view_from_features(values, self.category_index, self.catalog.item_index,
                                                           self.catalog.n_categories)
        return self._views[user]

    def trend(self, now: float) -> np.ndarray:
        return self._trend


def stream_processor_state(catalog: Catalog) -> StreamState:
    """StreamStateFactory over the stream processor's feature functions (pipelines.stream.session_features)."""
    return StreamProcessorState(catalog)
