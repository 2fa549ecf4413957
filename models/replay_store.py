"""The online store held in memory, and the online model's labelled examples computed from it.

`BatchOutputs` is what a `tandem batch run` leaves for serving (the rows materialize writes to Redis,
decoded to the Python values serving reads back, and the run's batch champion). `ReplayStore` adds
what the stream processor writes on top of them — each user's user_session_v1 row and each item's
item_trending_v1 row — by folding events with the processor's own functions
(pipelines/stream/session_features).

The online model learns from rows built here and nowhere else: `labelled_examples` turns one revealed
interaction with an item serving would have gathered into rows of that candidate list — the revealed item
(label 1) and candidates the user did not pick (label 0) — with the ONLINE_FEATURES serving computes for
the list just before the event (`models.ranking.model_inputs`, the batch champion's real log-odds included).
Its three callers are the evaluation's replay (models/evaluate.py), `tandem train online`
(`stream_examples` over a dataset's latest window) and the stream's live example sink (models/online_sink.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from models.features import Catalog, EventLog, encode_events
from models.online import LABEL, ONLINE_FEATURES
from models.ranking import (
    CONTRACT,
    ItemColumns,
    ItemState,
    Ranker,
    candidate_ids,
    default_popular,
    model_inputs,
    trending_top,
    user_view,
)
from pipelines.stream import session_features

SESSION_PREFIX = f"{CONTRACT.session_items[0]}__"
TRENDING_PREFIX = f"{CONTRACT.trending_view}__"
NEGATIVES = 4  # candidates the user did not pick, per revealed interaction
Progress = Callable[[int, int], None]


class ReplayError(ValueError):
    """A dataset or batch output a replay cannot run on; the message says what is wrong."""


@dataclass
class BatchOutputs:
    """What `tandem batch run` leaves for serving as of `as_of`, held in memory: the rows materialize writes
    online (by full name `<view>__<feature>`, Python values as Feast's Redis rows decode) and the champion."""

    as_of: float
    users: dict[str, dict[str, Any]]  # user_id → its user-keyed values (batch profile, precomputed list)
    item_ids: list[str]
    items: ItemColumns  # the item-keyed values (features, category, neighbours)
    batch: Ranker | None  # the batch champion (None: no batch model registered yet)
    run: dict[str, Any] = field(default_factory=dict)  # where the run lives and what it reported

    def item_category(self) -> dict[str, str]:
        """Each online item's category as the batch item features hold it."""
        return {item: category or session_features.UNKNOWN_CATEGORY
                for item, category in zip(self.item_ids, self.items.categories, strict=True)}


class ReplayStore:
    """The online store during a replay: the batch rows as of T plus what the stream processor writes.

    `observe` folds one event with the processor's own functions (pipelines/stream/session_features)
    and keeps the values it would write: the user's user_session_v1 row and the item's item_trending_v1 row.
    """

    def __init__(self, outputs: BatchOutputs, item_category: Mapping[str, str] | None = None):
        self.outputs = outputs
        self.item_category = outputs.item_category() if item_category is None else item_category
        self.index = {item: i for i, item in enumerate(outputs.item_ids)}
        self.users: dict[str, session_features.UserState] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.item_states: dict[str, session_features.ItemState] = {}
        # item_trending_v1 columns, one per field the processor writes (the others appear with its first row)
        self.trend = np.full(len(outputs.item_ids), np.nan)
        self.trending: dict[str, np.ndarray] = {f"{TRENDING_PREFIX}{CONTRACT.trend_score}": self.trend}
        self._trending_top: list[str] | None = None
        popular, by_category = default_popular(outputs.batch, outputs.item_ids, outputs.items.columns,
                                               outputs.items.categories)
        cols = outputs.items
        self.batch_items = ItemState(outputs.item_ids, self.index, cols.columns, cols.categories, cols.neighbours,
                                     cols.neighbour_scores, (), popular, by_category, cols.sequence,
                                     cols.sequence_scores)
        self.popular, self.by_category = popular, by_category

    def _entry(self, event_id: str, item_id: str, event_type: str, ts: float) -> tuple:
        return (int(round(ts * 1_000_000)), event_id, item_id, event_type,
                self.item_category.get(item_id, session_features.UNKNOWN_CATEGORY))

    def observe(self, event_id: str, user_id: str, item_id: str, event_type: str, ts: float) -> None:
        """Fold one event into the user's session row and, the first time it is seen, the item's trending row."""
        entry = self._entry(event_id, item_id, event_type, ts)
        state = self.users.get(user_id)
        fresh = session_features.fresh_entries(state, [entry])
        state = session_features.fold_user(state, [entry])
        self.users[user_id] = state
        self.sessions[user_id] = session_features.user_features(state)
        if fresh:  # a re-sent event counts once in trending, as the processor counts it
            self._fold_item(entry)

    def observe_item(self, event_id: str, item_id: str, event_type: str, ts: float) -> None:
        """Fold one event into the item's trending row only (the caller holds the user's session row)."""
        self._fold_item(self._entry(event_id, item_id, event_type, ts))

    def _fold_item(self, entry: tuple) -> None:
        item_id = entry[2]
        item_state = session_features.fold_item(self.item_states.get(item_id),
                                                [session_features.entry_interaction(entry)])
        self.item_states[item_id] = item_state
        row = self.index.get(item_id)
        if row is not None:  # serving reads trending for the catalogue's items only
            for name, value in session_features.item_features(item_state).items():
                self.trending.setdefault(f"{TRENDING_PREFIX}{name}", np.full(len(self.trend), np.nan))[row] = value
            self._trending_top = None

    def batch_values(self, user_id: str) -> dict[str, Any]:
        return self.outputs.users.get(user_id, {})

    def values(self, user_id: str, session: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Everything serving's HMGET returns for the user: batch rows and the stream's session row (`session`,
        by bare names, in place of the one this store folded)."""
        session = self.sessions.get(user_id) if session is None else session
        if not session:
            return self.batch_values(user_id)
        return {**self.batch_values(user_id), **{f"{SESSION_PREFIX}{k}": v for k, v in session.items()}}

    def live_items(self) -> ItemState:
        """The catalogue as serving holds it with the stream's trending values read back."""
        if self._trending_top is None:
            self._trending_top = trending_top(self.outputs.item_ids, self.trend)
        b = self.batch_items
        return replace(b, columns={**b.columns, **self.trending}, trending=self._trending_top)


def labelled_examples(item_id: str, candidates: list[str], values: Mapping[str, Any], items: ItemState,
                      batch: Ranker | None, now: float, negatives: int, rng: np.random.Generator
                      ) -> pd.DataFrame | None:
    """The online model's rows for one revealed interaction: rows of the candidate list serving would have scored
    for the user at `now` (ONLINE_FEATURES, computed for the whole list as serving computes them), the revealed
    item's row labelled 1 and `negatives` of the others' labelled 0. None when the item is not among the
    candidates: serving could not have ranked it, so there is nothing to learn about ordering them."""
    if item_id not in candidates:
        return None
    _, x = model_inputs(candidates, values, items, batch, now)
    positive = candidates.index(item_id)
    others = np.delete(np.arange(len(candidates)), positive)
    chosen = rng.choice(others, size=min(negatives, len(others)), replace=False) if len(others) else others
    frame = pd.DataFrame(x[np.r_[positive, chosen].astype(np.int64)], columns=list(ONLINE_FEATURES))
    frame[LABEL] = np.r_[1, np.zeros(len(chosen), dtype=int)]
    return frame


def encode_dataset(events: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table) -> tuple[Catalog, EventLog]:
    """The item catalogue (items seen only in events included) and the encoded event log."""
    ev = events.to_pandas() if isinstance(events, pa.Table) else events
    if len(ev) < 100:
        raise ReplayError(f"the dataset has {len(ev)} events; a replay needs at least 100")
    catalog = Catalog.from_items(items, ev["item_id"].astype(str).unique().tolist())
    return catalog, encode_events(ev, catalog)


def stream_examples(events: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table, outputs: BatchOutputs,
                    negatives: int = NEGATIVES, seed: int = 7, progress: Progress | None = None) -> pd.DataFrame:
    """The labelled examples the stream's sink would emit for the events at or after `outputs.as_of`, in time order.

    Events before it are history (they only mark what each user has seen); every later interaction with an item
    new to the user gives `labelled_examples` over the candidates serving would have gathered just before it,
    then the event is folded into the store. Columns: ONLINE_FEATURES, label, user_id, item_id, event_timestamp.
    """
    catalog, log = encode_dataset(events, items)
    start = int(np.searchsorted(log.ts, outputs.as_of, side="left"))
    if start == len(log):
        raise ReplayError("no event at or after the batch outputs' as-of time: nothing to learn from")
    item_ids, user_ids = catalog.item_ids.astype(str), log.user_ids.astype(str)
    category = {str(i): catalog.category_names[c] for i, c in zip(item_ids, catalog.item_category, strict=True)}
    store = ReplayStore(outputs, category)
    rng = np.random.default_rng(seed)
    seen: dict[str, set[str]] = {}
    for j in range(start):
        seen.setdefault(user_ids[log.user[j]], set()).add(item_ids[log.item[j]])
    frames = []
    for done, j in enumerate(range(start, len(log)), start=1):
        user, item, now = user_ids[log.user[j]], item_ids[log.item[j]], float(log.ts[j])
        user_seen = seen.setdefault(user, set())
        if item not in user_seen:
            values = store.values(user)
            live = store.live_items()
            frame = labelled_examples(item, candidate_ids(user_view(user, values), live, user_seen), values, live,
                                      outputs.batch, now, negatives, rng)
            if frame is not None:
                frames.append(frame.assign(user_id=user, item_id=item, event_timestamp=now))
        store.observe(f"replay-{j}", user, item, str(log.event_type[j]), now)
        user_seen.add(item)
        if progress and done % 500 == 0:
            progress(done, len(log) - start)
    if not frames:
        raise ReplayError("no interaction with an item new to its user after the as-of time: no examples")
    out = pd.concat(frames, ignore_index=True)
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], unit="s", utc=True).astype("datetime64[us, UTC]")
    return out
