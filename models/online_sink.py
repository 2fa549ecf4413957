"""The online model's end of the stream: an example sink that learns from labelled events and publishes updates.

The stream processor (pipelines/stream) hands each micro-batch of labelled examples — user, item,
event type, event time and the user's session features just before the event — to an
`ExampleSink`. `OnlineExampleSink` is that sink for the online ranker. It holds what the batch path
put online (`models.replay_store.BatchOutputs`: the rows serving reads, and the batch champion) and
folds the items' trending rows from the events it sees; each example with a catalogue item becomes
the rows `models.replay_store.labelled_examples` builds — the item as a positive, `negatives` of the
candidates serving would have gathered for the user as negatives — with the ONLINE_FEATURES serving
computes, the batch champion's real log-odds among them. `tandem train online` and `tandem evaluate`
learn from the same rows.

Updates are prequential: rows accumulate until `publish_every`; the current model is then
sanity-checked on those unseen rows against the champion, published (new `online-ranker`
version, champion alias) if it passes, and only then trained on them. Delivery is at-least-once,
so examples are de-duplicated by event_id.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.online import LABEL, SanityResult, is_fitted, new_online_model, partial_fit, sanity_check
from models.ranking import candidate_ids, user_view
from models.replay_store import NEGATIVES, ReplayStore, labelled_examples

Publisher = Callable[[Any, SanityResult, int], Any]  # (model, sanity, examples_seen) -> registration
DEDUP_WINDOW = 100_000


class OnlineExampleSink:
    """Implements pipelines.stream.examples.ExampleSink for the online ranker."""

    wants_examples = True

    def __init__(self, store: ReplayStore, publish: Publisher | None = None, model: Any = None,
                 champion: Any = None, negatives: int = NEGATIVES, publish_every: int = 4_000, seed: int = 7):
        self.store = store
        self.publish, self.negatives, self.publish_every = publish, negatives, publish_every
        self.model = model if model is not None else new_online_model(seed)
        self.champion = champion
        self.rng = np.random.default_rng(seed)
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self.examples_seen = 0
        self.published: list[Any] = []

    def _rows(self, example: Any) -> pd.DataFrame | None:
        """The example's rows from the batch values, the processor's session row before the event and the
        trending rows folded so far; then the event is folded into its item's trending row."""
        store = self.store
        now = example.ts.timestamp()
        values = store.values(example.user_id, session=example.user_features or {})
        items = store.live_items()
        candidates = candidate_ids(user_view(example.user_id, values), items)
        frame = labelled_examples(example.item_id, candidates, values, items, store.outputs.batch, now,
                                  self.negatives, self.rng)
        store.observe_item(example.event_id, example.item_id, example.event_type, now)
        return frame

    def emit(self, examples: Sequence[Any]) -> None:
        for example in examples:
            if example.event_id in self._seen_ids:
                continue
            self._seen_ids[example.event_id] = None
            if len(self._seen_ids) > DEDUP_WINDOW:
                self._seen_ids.popitem(last=False)
            rows = self._rows(example)
            if rows is not None:
                self._pending.append(rows)
                self._pending_rows += len(rows)
            if self._pending_rows >= self.publish_every:
                self._update()

    def _update(self) -> None:
        batch = pd.concat(self._pending, ignore_index=True)
        self._pending, self._pending_rows = [], 0
        if is_fitted(self.model) and self.publish is not None:
            sanity = sanity_check(self.model, batch, self.champion)
            registration = self.publish(self.model, sanity, self.examples_seen)
            self.published.append(registration)
            if sanity.success:
                self.champion = copy.deepcopy(self.model)
        partial_fit(self.model, batch, batch[LABEL].to_numpy())
        self.examples_seen += len(batch)

    def flush(self) -> None:
        """On shutdown: learn from what is pending (it is published with the next update or run)."""
        if self._pending:
            batch = pd.concat(self._pending, ignore_index=True)
            self._pending, self._pending_rows = [], 0
            partial_fit(self.model, batch, batch[LABEL].to_numpy())
            self.examples_seen += len(batch)


def mlflow_publisher(tracking_uri: str, model_name: str | None = None) -> Publisher:
    """A Publisher that registers sane updates as `online-ranker` versions (models/registry.py)."""
    from models.registry import ONLINE_MODEL, register_online_ranker

    def publish(model: Any, sanity: SanityResult, examples_seen: int) -> Any:
        return register_online_ranker(model, sanity, data_window={"start": "stream", "end": "stream"},
                                      tracking_uri=tracking_uri, examples_seen=examples_seen,
                                      model_name=model_name or ONLINE_MODEL)

    return publish
