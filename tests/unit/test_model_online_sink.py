"""The online model's stream sink: stream features in, prequential sanity-checked updates out."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from models.candidates import covisitation_matrix
from models.features import Catalog, encode_events
from models.online import coefficients
from models.online_sink import OnlineExampleSink
from models.session import session_view_from_features


@dataclass(frozen=True)
class Example:  # the shape of pipelines.stream.examples.LabelledExample
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    value: float | None
    ts: datetime
    user_features: dict[str, Any] | None


ITEMS = pd.DataFrame({"item_id": [f"i{i}" for i in range(20)], "category": [f"c{i % 4}" for i in range(20)]})


def _stream(n: int, seed: int) -> list[Example]:
    """Users click items of their session's category."""
    rng = np.random.default_rng(seed)
    out = []
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    for j in range(n):
        cat = int(rng.integers(4))
        item = f"i{cat + 4 * int(rng.integers(5))}"
        feats = {"last_item_ids": [f"i{cat + 4}"], "last_category": f"c{cat}", "session_categories": [f"c{cat}"],
                 "session_category_counts": [3], "last_event_epoch": (t0 + timedelta(seconds=j)).timestamp() - 30,
                 "session_events": 3, "session_clicks": 1}
        out.append(Example(f"e{seed}-{j}", f"u{j % 7}", item, "click", None, t0 + timedelta(seconds=j), feats))
    return out


def _sink(publish):
    catalog = Catalog.from_items(ITEMS)
    ev = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["i0", "i4", "i1"], "event_type": "view",
                       "ts": pd.to_datetime(["2024-12-01T00:00:00Z", "2024-12-01T00:01:00Z", "2024-12-01T00:02:00Z"]),
                       "session_id": ["s", "s", "t"]})
    covisit = covisitation_matrix(encode_events(ev, catalog), catalog.n_items)
    return OnlineExampleSink(catalog, covisit, lambda user, items: np.zeros(len(items)), np.ones(catalog.n_items),
                             publish=publish, negatives=3, publish_every=400)


def test_sink_learns_session_category_and_publishes_checked_updates():
    published = []
    sink = _sink(lambda model, sanity, n: published.append((sanity, n)) or sanity.success)
    stream = _stream(400, 1)
    sink.emit(stream[:200])
    sink.emit(stream[:200])  # redelivered batch: de-duplicated by event_id
    sink.emit(stream[200:])
    # 400 events x (1 positive + 3 negatives) in updates of 400 rows; the first has nothing earlier to check
    assert sink.examples_seen == 1600
    assert [n for _, n in published] == [400, 800, 1200]
    sink.emit(_stream(100, 2))
    sanity, seen = published[-1]
    assert seen == 1600 and sanity.success and sanity.auc > 0.7 and sanity.rows == 400
    coef = coefficients(sink.model)
    assert coef["session_category_share"] > 0.1 or coef["active_session_category_share"] > 0.1


def test_session_view_from_stream_values():
    view = session_view_from_features(
        {"last_item_ids": ["i3", "nope", "i1"], "last_category": "c3", "session_categories": ["c3", "zz", "c1"],
         "session_category_counts": [2, 5, 1], "last_event_epoch": 10.0, "session_events": 3, "session_clicks": 1},
        {"c1": 1, "c3": 3}, {"i1": 1, "i3": 3}, 4)
    assert view.last_items == [3, 1] and view.last_category == 3 and view.last_event_ts == 10.0
    assert list(view.session_category_counts) == [0, 1, 0, 2]
    assert session_view_from_features(None, {}, {}, 4) is None


def test_serving_rows_by_id_equal_the_replay_rows():
    from models.candidates import item_neighbours_frame
    from models.online import last_item_covisit, online_features, online_features_from_store

    sink = _sink(None)
    catalog, covisit = sink.catalog, sink.covisit
    lists = {r.item_id: (r.neighbour_item_ids, r.neighbour_scores)
             for r in item_neighbours_frame(covisit, catalog, pd.Timestamp("2025-01-01", tz="UTC")).itertuples()}
    values = {"last_item_ids": ["i0", "i1"], "last_category": "c0", "session_categories": ["c0", "c1"],
              "session_category_counts": [3, 1], "last_event_epoch": 1000.0, "session_events": 4, "session_clicks": 1}
    items = np.array([4, 1, 7, 0])
    batch = np.array([0.5, -0.2, 0.1, 0.0])
    trend = np.array([1.0, 0.0, 3.0, 0.5])
    cat_index = {c: i for i, c in enumerate(catalog.category_names)}
    view = session_view_from_features(values, cat_index, catalog.item_index, catalog.n_categories)
    expected = online_features(batch, items, catalog.item_category, view, last_item_covisit(view, items, covisit),
                               trend, now=1100.0)
    got = online_features_from_store(batch, [str(catalog.item_ids[i]) for i in items],
                                     [catalog.category_names[catalog.item_category[i]] for i in items], values,
                                     lists, trend, now=1100.0)
    assert np.allclose(got, expected) and got[:, 2].any() and got[:, 1].any()
    cold = online_features_from_store(batch, ["i4", "i1", "i7", "i0"], ["c0", "c1", "c3", "c0"], None, lists,
                                      trend, now=1100.0)
    assert np.array_equal(cold[:, 0], batch) and not cold[:, 1:6].any()
