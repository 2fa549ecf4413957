"""Small datasets in tandem's layout, written directly with pyarrow, for the batch tests."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tandem.schema import EVENT_FIELDS, EVENT_SCHEMA, ITEM_SCHEMA, USER_SCHEMA

CATEGORIES = ("books", "games", "music", "garden")
FUNNEL = (("view", 1.0), ("click", 0.35), ("add_to_cart", 0.4), ("purchase", 0.5))


def write_events(out: Path, rows: list[dict], schema: pa.Schema = EVENT_SCHEMA, name: str = "part-0") -> None:
    """Write event rows into events/date=YYYY-MM-DD/<name>.parquet by the UTC day of ts."""
    by_day: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_day[row["ts"].astimezone(UTC).date().isoformat()].append(row)
    for day, day_rows in by_day.items():
        part = out / "events" / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        cols = {f: [r.get(f) for r in day_rows] for f in EVENT_FIELDS}
        pq.write_table(pa.table(cols, schema=schema), part / f"{name}.parquet")


def write_dataset(out: Path, end: datetime, days: int = 10, n_users: int = 40, n_items: int = 30,
                  n_sessions: int = 400, seed: int = 3) -> dict:
    """A funnel-shaped dataset over `days` days ending just before `end`; returns its rows for checks."""
    rng = random.Random(seed)
    start = end - timedelta(days=days)
    items = [{"item_id": f"i{j}", "category": CATEGORIES[j % len(CATEGORIES)], "price": round(5 + 3 * j, 2),
              "created_ts": start - timedelta(days=30 - j % 7), "title": f"item {j}"} for j in range(n_items)]
    users = [{"user_id": f"u{k}", "signup_ts": start - timedelta(days=k % 20)} for k in range(n_users)]
    events = []
    for s in range(n_sessions):
        user = f"u{rng.randrange(n_users)}"
        t = start + timedelta(seconds=rng.uniform(0, days * 86400 - 3600))
        for _ in range(rng.randint(1, 4)):
            item = items[min(int(rng.paretovariate(1.2)) - 1, n_items - 1)]
            for event_type, p in FUNNEL:
                if rng.random() > p:
                    break
                t += timedelta(seconds=rng.uniform(1, 120))
                value = item["price"] if event_type == "purchase" else None
                events.append({"event_id": f"e{len(events)}", "user_id": user, "item_id": item["item_id"],
                               "event_type": event_type, "value": value, "ts": t, "session_id": f"s{s}"})
            if rng.random() < 0.1:
                t += timedelta(seconds=30)
                events.append({"event_id": f"e{len(events)}", "user_id": user, "item_id": item["item_id"],
                               "event_type": "rating", "value": float(rng.randint(1, 5)), "ts": t,
                               "session_id": f"s{s}"})
    out.mkdir(parents=True, exist_ok=True)
    write_events(out, events)
    pq.write_table(pa.Table.from_pylist(items, schema=ITEM_SCHEMA), out / "items.parquet")
    pq.write_table(pa.Table.from_pylist(users, schema=USER_SCHEMA), out / "users.parquet")
    (out / "dataset.json").write_text(json.dumps({"source": "test fixture", "counts": {
        "events": len(events), "users": n_users, "items": n_items}}))
    return {"events": events, "items": items, "users": users}
