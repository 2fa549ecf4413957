"""A user's stream session as the online model reads it: `SessionView` over the user_session_v1 values.

`session_view_from_features` turns the values the stream processor writes (what serving reads from
Redis, the stream's example sink receives, a replay folds with the processor's functions) into a
`SessionView`: the last distinct items (newest first), the current session's length and category
counts, and the time of the last event, with items and categories as dense indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.features import SESSION_GAP_S


@dataclass
class SessionView:
    """What the stream knows about one user right now (item and category as dense indices)."""

    n_categories: int
    last_items: list[int] = field(default_factory=list)  # distinct, newest first
    last_category: int = -1
    last_event_ts: float = float("nan")
    session_key: int = -1
    session_events: int = 0
    session_clicks: int = 0
    session_category_counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    recent_category_counts: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.session_category_counts is None:
            self.session_category_counts = np.zeros(self.n_categories)
        if self.recent_category_counts is None:
            self.recent_category_counts = np.zeros(self.n_categories)

    def is_active(self, now: float, gap_s: float = SESSION_GAP_S) -> bool:
        """True while the session is live: its last event is less than `gap_s` before `now`."""
        return bool(np.isfinite(self.last_event_ts) and now - self.last_event_ts <= gap_s)

    def session_category_share(self) -> np.ndarray:
        total = self.session_category_counts.sum()
        return self.session_category_counts / total if total > 0 else self.session_category_counts

    def recent_category_share(self, now: float) -> np.ndarray:
        # the stream keeps the live session only: its counts stand in for recent taste (see below)
        total = self.recent_category_counts.sum()
        return self.recent_category_counts / total if total > 0 else self.recent_category_counts


def session_view_from_features(values: dict | None, category_index: dict[str, int], item_index: dict[str, int],
                               n_categories: int) -> SessionView | None:
    """A SessionView from the stream's user_session_v1 values (what serving reads from Redis, the sink receives).

    Unknown items and categories are dropped. The stream keeps the live session only, so the
    session's category counts also stand in for the decayed recent counts.
    """
    if not values:
        return None
    view = SessionView(n_categories)
    view.last_items = [item_index[i] for i in values.get("last_item_ids") or [] if i in item_index]
    view.last_category = category_index.get(values.get("last_category") or "", -1)
    epoch = values.get("last_event_epoch")
    view.last_event_ts = float(epoch) if epoch is not None else float("nan")
    view.session_events = int(values.get("session_events") or 0)
    view.session_clicks = int(values.get("session_clicks") or 0)
    for cat, count in zip(values.get("session_categories") or [], values.get("session_category_counts") or [],
                          strict=False):
        if cat in category_index:
            view.session_category_counts[category_index[cat]] += float(count)
    view.recent_category_counts = view.session_category_counts.copy()
    return view
