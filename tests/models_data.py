"""Small synthetic interaction logs for the model tests: sessions within a category, taste that drifts."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

START = datetime(2025, 3, 3, tzinfo=UTC)


def drifting_log(n_users: int = 120, n_items: int = 80, n_categories: int = 4, days: int = 20,
                 sessions_per_user: int = 10, drift: float = 0.8, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, items): each session stays in one category: the user's first one, or — with a chance that
    grows linearly to `drift` by the end of the period — a second one the user's taste drifts toward.

    Items are Zipf-popular within their category; a view is followed by a click 40% of the time.
    """
    rng = np.random.default_rng(seed)
    item_cat = np.arange(n_items) % n_categories
    pop = 1.0 / (np.arange(n_items) // n_categories + 1.0)
    start_s = START.timestamp()
    rows = []
    for u in range(n_users):
        first, second = rng.choice(n_categories, size=2, replace=False)
        for s in range(sessions_per_user):
            t = start_s + rng.uniform(0, days * 86_400)
            cat = second if rng.random() < drift * (t - start_s) / (days * 86_400) else first
            in_cat = np.flatnonzero(item_cat == cat)
            p = pop[in_cat] / pop[in_cat].sum()
            for item in rng.choice(in_cat, size=rng.integers(3, 7), replace=False, p=p):
                t += rng.uniform(10, 120)
                rows.append((f"u{u:04d}", f"i{item:04d}", "view", t, f"s{u}-{s}"))
                if rng.random() < 0.4:
                    rows.append((f"u{u:04d}", f"i{item:04d}", "click", t + 5, f"s{u}-{s}"))
    ev = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "t", "session_id"])
    ev["ts"] = pd.to_datetime(ev.pop("t"), unit="s", utc=True).astype("datetime64[us, UTC]")
    ev.insert(0, "event_id", [f"e{i:07d}" for i in range(len(ev))])
    ev["value"] = np.nan
    items = pd.DataFrame({
        "item_id": [f"i{i:04d}" for i in range(n_items)],
        "category": [f"cat{c}" for c in item_cat],
        "price": rng.uniform(5, 50, n_items).round(2),
        "created_ts": pd.Series([pd.Timestamp("2024-01-01", tz="UTC")] * n_items, dtype="datetime64[us, UTC]"),
        "title": [f"item {i}" for i in range(n_items)],
    })
    return ev.sort_values("ts", ignore_index=True), items
