"""Per-user session state and per-item trending, updated event by event: the stream side of the in-process replay.

This is the feature math the online model and the stream-only ranker read. The stream processor
(pipelines/stream) keeps the same state in Redis; `tandem evaluate` takes the state as one
injected dependency (`StreamState` protocol, `StreamStateFactory`), so the evaluation runs on the
stream's own functions once they are wired in, and on `SessionTracker` (this module) otherwise.

What a user's `SessionView` holds: the last distinct items (newest first), the current session's
length and category counts, category counts decayed with a RECENT_HALF_LIFE_S half-life (recent
taste, which drifts), and the time of the last event. Items carry a trend score: interactions
decayed with a TREND_HALF_LIFE_S half-life.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.features import SESSION_GAP_S, Catalog

LAST_ITEMS = 10
RECENT_HALF_LIFE_S = 24 * 3600.0
TREND_HALF_LIFE_S = 6 * 3600.0


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

    def recent_category_share(self, now: float, half_life_s: float = RECENT_HALF_LIFE_S) -> np.ndarray:
        # decay is a common factor for all categories, so shares do not depend on `now`
        total = self.recent_category_counts.sum()
        return self.recent_category_counts / total if total > 0 else self.recent_category_counts


def update_session(view: SessionView, item: int, category: int, positive: bool, ts: float, session_key: int,
                   half_life_s: float = RECENT_HALF_LIFE_S) -> SessionView:
    """Fold one event into a user's view (in place) and return it."""
    if session_key != view.session_key:
        view.session_key = session_key
        view.session_events = 0
        view.session_clicks = 0
        view.session_category_counts[:] = 0.0
    if np.isfinite(view.last_event_ts) and ts > view.last_event_ts:
        view.recent_category_counts *= 0.5 ** ((ts - view.last_event_ts) / half_life_s)
    weight = 2.0 if positive else 1.0
    view.recent_category_counts[category] += weight
    view.session_category_counts[category] += weight
    view.session_events += 1
    view.session_clicks += int(positive)
    if item in view.last_items:
        view.last_items.remove(item)
    view.last_items.insert(0, item)
    del view.last_items[LAST_ITEMS:]
    view.last_category = category
    view.last_event_ts = max(ts, view.last_event_ts) if np.isfinite(view.last_event_ts) else ts
    return view


class StreamState(Protocol):
    """The stream features the replay needs: fold events in, read a user's view and the items' trend."""

    def observe(self, user: int, item: int, positive: bool, ts: float, session_key: int) -> None: ...

    def view(self, user: int) -> SessionView | None: ...

    def trend(self, now: float) -> np.ndarray: ...


StreamStateFactory = Callable[[Catalog], StreamState]


class SessionTracker:
    """In-memory StreamState: a SessionView per user and a decayed interaction count per item."""

    def __init__(self, item_category: np.ndarray, n_categories: int, trend_half_life_s: float = TREND_HALF_LIFE_S):
        self.item_category = np.asarray(item_category)
        self.n_categories = n_categories
        self.half_life = trend_half_life_s
        self.views: dict[int, SessionView] = {}
        self._trend = np.zeros(len(self.item_category))
        self._trend_ts = np.zeros(len(self.item_category))

    def observe(self, user: int, item: int, positive: bool, ts: float, session_key: int) -> None:
        view = self.views.get(user)
        if view is None:
            view = self.views[user] = SessionView(self.n_categories)
        update_session(view, item, int(self.item_category[item]), positive, ts, session_key)
        self._trend[item] = self._trend[item] * 0.5 ** (max(ts - self._trend_ts[item], 0.0) / self.half_life) + 1.0
        self._trend_ts[item] = ts

    def view(self, user: int) -> SessionView | None:
        return self.views.get(user)

    def trend(self, now: float) -> np.ndarray:
        """Each item's interaction count decayed to `now`."""
        return self._trend * 0.5 ** (np.maximum(now - self._trend_ts, 0.0) / self.half_life)


def session_tracker(catalog: Catalog) -> StreamState:
    """StreamStateFactory for the in-memory reference state (`SessionTracker`)."""
    return SessionTracker(catalog.item_category, catalog.n_categories)


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
