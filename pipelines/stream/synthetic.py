"""Synthetic live events for exercising the stream: the delivery tests and `tandem bench` replay these.

Unlike `tandem data generate` (a whole history with users' tastes), these are a recent burst
(the last ~3 hours) in roughly event-time order, with a share of late, out-of-order events,
over a small item catalogue with Pareto-skewed popularity.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tandem.schema import Event

CATEGORIES = ("books", "music", "garden", "toys", "sports")


def make_events(prefix: str, n: int, n_users: int = 40, n_items: int = 60, seed: int = 1,
                late_fraction: float = 0.1) -> list[Event]:
    """Synthetic events over the last ~3 hours, in roughly event-time order with some late (out-of-order) ones."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=3)
    step = timedelta(hours=3) / n
    types = ("view", "view", "view", "click", "add_to_cart", "purchase", "rating")
    events = []
    for i in range(n):
        ts = start + step * i
        if rng.random() < late_fraction:
            ts -= timedelta(minutes=rng.uniform(1, 90))  # arrives late, behind later events of the same user
        etype = rng.choice(types)
        events.append(Event(
            event_id=f"{prefix}-e{i}", user_id=f"{prefix}-u{rng.randrange(n_users)}",
            item_id=f"{prefix}-i{int(rng.paretovariate(1.2)) % n_items}", event_type=etype, ts=ts,
            value=float(rng.randint(1, 5)) if etype == "rating" else None, session_id=None))
    return events


def make_catalog(prefix: str, n_items: int = 60) -> dict[str, str]:
    """item_id → category for make_events' items."""
    return {f"{prefix}-i{i}": CATEGORIES[i % len(CATEGORIES)] for i in range(n_items)}


def write_catalog(directory: Path, catalog: dict[str, str]) -> Path:
    """A dataset dir holding just items.parquet (what the processor reads for categories)."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = list(catalog)
    pq.write_table(pa.table({"item_id": ids, "category": [catalog[i] for i in ids]}), directory / "items.parquet")
    return directory
