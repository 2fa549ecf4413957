"""Events as dense integer arrays: the encoding the candidate step and the replays work on.

`Catalog` numbers the items (with their category, price and creation time), `EventLog` holds events
as parallel arrays sorted by time with users and items as dense indices, and `sessionize` numbers
sessions where the events name none. The candidate step (models/candidates.py, run by `tandem batch
run`) and the replays of `tandem evaluate` and `tandem train online` (models/replay_store.py) read
events this way; the batch features themselves come from Spark through Feast (pipelines/batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from tandem.schema import POSITIVE_EVENT_TYPES

SECONDS_PER_DAY = 86_400.0
SESSION_GAP_S = 30 * 60.0  # events of a user further apart than this start a new session when none is given

def epoch_seconds(values: pd.Series) -> np.ndarray:
    """Timestamps (any pandas resolution, tz-aware or UTC-naive) as float Unix seconds; NaT becomes NaN."""
    ts = pd.to_datetime(values, utc=True)
    return ((ts - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=float)


class FeatureError(ValueError):
    """Inputs the feature math cannot use; the message names the column or value."""


@dataclass
class Catalog:
    """Items as dense indices with their category, price and creation time."""

    item_ids: np.ndarray  # (n_items,) object array of str
    item_category: np.ndarray  # (n_items,) int index into category_names
    category_names: list[str]
    item_price: np.ndarray  # float, NaN = unknown
    item_created_s: np.ndarray  # float epoch seconds, NaN = unknown

    def __post_init__(self) -> None:
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    @classmethod
    def from_items(cls, items: pd.DataFrame | pa.Table, extra_item_ids: list[str] | None = None) -> Catalog:
        """Build from an ITEM_SCHEMA table; items only seen in events (`extra_item_ids`) get category 'unknown'."""
        df = items.to_pandas() if isinstance(items, pa.Table) else items
        for col in ("item_id", "category"):
            if col not in df.columns:
                raise FeatureError(f"items: missing column {col!r} (expected tandem.schema.ITEM_SCHEMA)")
        df = df.drop_duplicates("item_id")
        ids = df["item_id"].astype(str).tolist()
        cats = df["category"].fillna("unknown").astype(str).tolist()
        price = df["price"].astype(float).tolist() if "price" in df else [np.nan] * len(ids)
        created = epoch_seconds(df["created_ts"]).tolist() if "created_ts" in df else [np.nan] * len(ids)
        known = set(ids)
        for item in extra_item_ids or []:
            if item not in known:
                known.add(item)
                ids.append(item)
                cats.append("unknown")
                price.append(np.nan)
                created.append(np.nan)
        names = sorted(set(cats))
        cat_index = {c: i for i, c in enumerate(names)}
        return cls(np.array(ids, dtype=object), np.array([cat_index[c] for c in cats], dtype=np.int64), names,
                   np.array(price, dtype=float), np.array(created, dtype=float))


@dataclass
class EventLog:
    """Events as parallel arrays sorted by time, users and items as dense indices."""

    user: np.ndarray  # int
    item: np.ndarray  # int (Catalog index)
    ts: np.ndarray  # float epoch seconds, non-decreasing
    positive: np.ndarray  # bool: click, cart, purchase or rating
    session: np.ndarray  # int session number (global)
    event_type: np.ndarray  # object array of str
    user_ids: np.ndarray  # (n_users,) object array of str

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def before(self, t: float) -> EventLog:
        """The events strictly before time t (same user indexing)."""
        n = int(np.searchsorted(self.ts, t, side="left"))
        return self.slice(0, n)

    def between(self, start: float, end: float) -> EventLog:
        lo, hi = np.searchsorted(self.ts, [start, end], side="left")
        return self.slice(int(lo), int(hi))

    def slice(self, lo: int, hi: int) -> EventLog:
        out = EventLog.__new__(EventLog)
        out.user, out.item, out.ts = self.user[lo:hi], self.item[lo:hi], self.ts[lo:hi]
        out.positive, out.session, out.event_type = self.positive[lo:hi], self.session[lo:hi], self.event_type[lo:hi]
        out.user_ids, out.user_index = self.user_ids, self.user_index
        return out


def encode_events(events: pd.DataFrame | pa.Table, catalog: Catalog, user_ids: list[str] | None = None) -> EventLog:
    """Encode EVENT_SCHEMA rows (any order) into an EventLog sorted by ts.

    Items missing from the catalog raise FeatureError (build the Catalog with `extra_item_ids`).
    Events without a session_id are sessionized per user with a SESSION_GAP_S inactivity gap.
    """
    df = events.to_pandas() if isinstance(events, pa.Table) else events
    for col in ("user_id", "item_id", "event_type", "ts"):
        if col not in df.columns:
            raise FeatureError(f"events: missing column {col!r} (expected tandem.schema.EVENT_SCHEMA)")
    ts = epoch_seconds(df["ts"])
    order = np.argsort(ts, kind="stable")
    df = df.iloc[order]
    ts = ts[order]
    items = df["item_id"].astype(str).to_numpy()
    item = np.fromiter((catalog.item_index.get(i, -1) for i in items), dtype=np.int64, count=len(items))
    if (item < 0).any():
        missing = sorted(set(items[item < 0]))[:5]
        raise FeatureError(f"events: item_id(s) {', '.join(missing)} are not in the item catalogue")
    users = df["user_id"].astype(str).to_numpy()
    known = list(user_ids) if user_ids is not None else []
    seen = set(known)
    for u in pd.unique(users):
        if u not in seen:
            seen.add(u)
            known.append(u)
    index = {u: i for i, u in enumerate(known)}
    user = np.fromiter((index[u] for u in users), dtype=np.int64, count=len(users))
    event_type = df["event_type"].astype(str).to_numpy(dtype=object)
    positive = np.isin(event_type, POSITIVE_EVENT_TYPES)
    session = sessionize(user, ts, df["session_id"].to_numpy(dtype=object) if "session_id" in df else None)
    return EventLog(user, item, ts, positive, session, event_type, np.array(known, dtype=object))


def sessionize(user: np.ndarray, ts: np.ndarray, session_id: np.ndarray | None, gap_s: float = SESSION_GAP_S
               ) -> np.ndarray:
    """A global session number per event: the given session_id where present, else a new one after `gap_s` idle."""
    n = len(user)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    by_user = np.lexsort((ts, user))
    u, t = user[by_user], ts[by_user]
    new = np.r_[True, (u[1:] != u[:-1]) | (t[1:] - t[:-1] > gap_s)]
    if session_id is not None:
        sid = pd.Series(session_id[by_user])
        has = sid.notna().to_numpy()
        changed = np.r_[True, (sid.to_numpy()[1:] != sid.to_numpy()[:-1])]
        new = np.where(has, changed | np.r_[True, u[1:] != u[:-1]], new)
    out = np.empty(n, dtype=np.int64)
    out[by_user] = np.cumsum(new) - 1
    return out
