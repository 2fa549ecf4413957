"""The online model's stream sink: the stream's examples in, the features serving computes, prequential
sanity-checked updates out."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.features import epoch_seconds
from models.online import LABEL, ONLINE_FEATURES, coefficients
from models.online_sink import OnlineExampleSink
from models.ranking import candidate_ids, model_inputs, user_view
from models.replay_store import ReplayStore
from models.session import session_view_from_features
from tests.models_data import drifting_log
from tests.serving_models import batch_outputs


@dataclass(frozen=True)
class Example:  # the shape of pipelines.stream.examples.LabelledExample
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    value: float | None
    ts: datetime
    user_features: dict[str, Any] | None


def _stream(events: pd.DataFrame, items: pd.DataFrame, as_of: float) -> list[Example]:
    """The log's events from `as_of` on as the processor hands them over: each with the user's session values
    just before it (the processor's fold functions, as a replay store folds them)."""
    events = events.sort_values("ts", kind="stable").reset_index(drop=True)
    ts = epoch_seconds(events["ts"])
    state = ReplayStore(batch_outputs(events, items, as_of))
    out = []
    for j, row in enumerate(events.itertuples()):
        if ts[j] >= as_of:
            out.append(Example(f"e{j}", row.user_id, row.item_id, row.event_type, None,
                               datetime.fromtimestamp(ts[j], tz=UTC), state.sessions.get(row.user_id)))
        state.observe(f"e{j}", row.user_id, row.item_id, row.event_type, ts[j])
    return out


@pytest.fixture(scope="module")
def stream():
    events, items = drifting_log()
    as_of = float(np.quantile(epoch_seconds(events["ts"]), 0.6))
    return batch_outputs(events, items, as_of), _stream(events, items, as_of)


def test_sink_learns_from_the_stream_and_publishes_checked_updates(stream):
    outputs, examples = stream
    published = []
    sink = OnlineExampleSink(ReplayStore(outputs), publish=lambda model, sanity, n: published.append((sanity, n)),
                             negatives=3, publish_every=400)
    half = len(examples) // 2
    sink.emit(examples[:half])
    sink.emit(examples[:half])  # redelivered batch: de-duplicated by event_id
    sink.emit(examples[half:])
    sink.flush()
    once = OnlineExampleSink(ReplayStore(outputs), negatives=3, publish_every=400)
    once.emit(examples)
    once.flush()
    assert sink.examples_seen == once.examples_seen  # the redelivered batch added nothing
    # an example whose item serving would have gathered: 1 positive + 3 negatives; the others teach no ordering
    assert 0 < sink.examples_seen < 4 * len(examples) and sink.examples_seen % 4 == 0
    assert [n for _, n in published] == sorted(n for _, n in published) and published[0][1] >= 400
    sanity, _ = published[-1]
    assert sanity.success and sanity.auc > 0.6
    assert coefficients(sink.model)["last_item_neighbour_log"] > 0.1


def test_sink_rows_are_what_serving_computes(stream):
    """The positive row of an example is the ranking's own input row for that item: computed for the candidate
    list serving gathers, from the champion's log-odds on the user's batch rows and the session before the event."""
    outputs, examples = stream
    store = ReplayStore(outputs)  # nothing folded: the items' trending rows stay empty, as in a fresh sink
    for example in (e for e in examples if e.user_features and e.user_id in outputs.users):
        values = store.values(example.user_id, session=example.user_features)
        candidates = candidate_ids(user_view(example.user_id, values), store.live_items())
        if example.item_id in candidates:
            break
    else:
        raise AssertionError("no example of a returning user picked one of their candidates")
    _, x = model_inputs(candidates, values, store.live_items(), outputs.batch, example.ts.timestamp())
    row = OnlineExampleSink(ReplayStore(outputs), negatives=3, publish_every=10_000)._rows(example).iloc[0]
    assert np.allclose(row[list(ONLINE_FEATURES)].to_numpy(dtype=float), x[candidates.index(example.item_id)])
    assert row["batch_logit"] != 0.0 and row["returning"] == 1.0 and row[LABEL] == 1


def test_session_view_from_stream_values():
    view = session_view_from_features(
        {"last_item_ids": ["i3", "nope", "i1"], "last_category": "c3", "session_categories": ["c3", "zz", "c1"],
         "session_category_counts": [2, 5, 1], "last_event_epoch": 10.0, "session_events": 3, "session_clicks": 1},
        {"c1": 1, "c3": 3}, {"i1": 1, "i3": 3}, 4)
    assert view.last_items == [3, 1] and view.last_category == 3 and view.last_event_ts == 10.0
    assert list(view.session_category_counts) == [0, 1, 0, 2]
    assert session_view_from_features(None, {}, {}, 4) is None


def test_serving_rows_by_id_equal_the_dense_rows():
    """online_features_from_store (by id, from neighbour lists) equals online_features over dense indices."""
    from models.candidates import covisitation_matrix, item_neighbours_frame
    from models.features import Catalog, encode_events
    from models.online import online_features, online_features_from_store

    catalog = Catalog.from_items(pd.DataFrame({"item_id": [f"i{i}" for i in range(20)],
                                               "category": [f"c{i % 4}" for i in range(20)]}))
    ev = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["i0", "i4", "i1", "i7"], "event_type": "view",
                       "ts": pd.to_datetime(["2024-12-01T00:00:00Z", "2024-12-01T00:01:00Z", "2024-12-01T00:02:00Z",
                                             "2024-12-01T00:03:00Z"]), "session_id": ["s", "s", "t", "t"]})
    covisit = covisitation_matrix(encode_events(ev, catalog), catalog.n_items)
    lists = {r.item_id: (r.neighbour_item_ids, r.neighbour_scores)
             for r in item_neighbours_frame(covisit, catalog, pd.Timestamp("2025-01-01", tz="UTC")).itertuples()}
    values = {"last_item_ids": ["i0", "i1"], "last_category": "c0", "session_categories": ["c0", "c1"],
              "session_category_counts": [3, 1], "last_event_epoch": 1000.0, "session_events": 4, "session_clicks": 1}
    items = np.array([4, 1, 7, 0])
    batch = np.array([0.5, -0.2, 0.1, 0.0])
    trend = np.array([1.0, 0.0, 3.0, 0.5])
    cat_index = {c: i for i, c in enumerate(catalog.category_names)}
    view = session_view_from_features(values, cat_index, catalog.item_index, catalog.n_categories)
    dense = covisit.toarray()
    with_last = sum(dense[item][items] / position for position, item in enumerate(view.last_items, start=1))
    expected = online_features(batch, items, catalog.item_category, view, with_last, trend, now=1100.0)
    got = online_features_from_store(batch, [str(catalog.item_ids[i]) for i in items],
                                     [catalog.category_names[catalog.item_category[i]] for i in items], values,
                                     lists, trend, now=1100.0)
    index = {name: k for k, name in enumerate(ONLINE_FEATURES)}
    assert np.allclose(got, expected)
    assert got[:, index["last_item_neighbour_log"]].any() and got[:, index["session_category_share"]].any()
    cold = online_features_from_store(batch, ["i4", "i1", "i7", "i0"], ["c0", "c1", "c3", "c0"], None, lists,
                                      trend, now=1100.0)
    stream = [index[name] for name in ("last_item_neighbour_log", "neighbour_share", "session_category_share",
                                       "active_session_category_share", "recent_category_share", "session_active")]
    assert np.array_equal(cold[:, 0], batch) and not cold[:, stream].any()
