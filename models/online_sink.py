"""The online model's end of the stream: an example sink that learns from labelled events and publishes updates.

The stream processor (pipelines/stream) hands each micro-batch of labelled examples — user, item,
event type, event time and the user's session features just before the event — to an
`ExampleSink`. `OnlineExampleSink` is that sink for the online ranker: each example with an item
becomes one positive row and `negatives` sampled items as negatives (the stream has no record of
what was shown, so negatives are drawn by popularity), scored by the injected batch scorer and
turned into ONLINE_FEATURES rows with the same functions serving uses.

Updates are prequential: rows accumulate until `publish_every`; the current model is then
sanity-checked on those unseen rows against the champion, published (new `online-ranker`
version, champion alias) if it passes, and only then trained on them. Delivery is at-least-once,
so examples are de-duplicated by event_id.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.features import Catalog
from models.online import (
    LABEL,
    ONLINE_FEATURES,
    SanityResult,
    is_fitted,
    last_item_covisit,
    new_online_model,
    online_features,
    partial_fit,
    sanity_check,
)
from models.session import session_view_from_features

BatchScorer = Callable[[str, list[str]], np.ndarray]  # (user_id, item_ids) -> batch log-odds per item
Publisher = Callable[[Any, SanityResult, int], Any]  # (model, sanity, examples_seen) -> registration
DEDUP_WINDOW = 100_000


class OnlineExampleSink:
    """Implements pipelines.stream.examples.ExampleSink for the online ranker."""

    wants_examples = True

    def __init__(self, catalog: Catalog, covisit: Any, batch_scorer: BatchScorer, item_popularity: np.ndarray,
                 publish: Publisher | None = None, model: Any = None, champion: Any = None, negatives: int = 4,
                 publish_every: int = 4_000, trend_lookup: Callable[[np.ndarray], np.ndarray] | None = None,
                 seed: int = 7):
        self.catalog, self.covisit, self.batch_scorer = catalog, covisit, batch_scorer
        self.category_index = {c: i for i, c in enumerate(catalog.category_names)}
        pop = np.asarray(item_popularity, dtype=float) + 1.0
        self.pop_p = pop / pop.sum()
        self.publish, self.negatives, self.publish_every = publish, negatives, publish_every
        self.model = model if model is not None else new_online_model(seed)
        self.champion = champion
        self.trend_lookup = trend_lookup
        self.rng = np.random.default_rng(seed)
        self._pending: list[pd.DataFrame] = []
        self._pending_rows = 0
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self.examples_seen = 0
        self.published: list[Any] = []

    def _rows(self, example: Any) -> pd.DataFrame | None:
        item = self.catalog.item_index.get(example.item_id)
        if item is None:
            return None
        n_neg = min(self.negatives, self.catalog.n_items - 1)
        negatives = self.rng.choice(self.catalog.n_items, size=n_neg + 1, replace=False, p=self.pop_p)
        negatives = negatives[negatives != item][:n_neg]
        items = np.r_[np.int64(item), negatives.astype(np.int64)]
        now = example.ts.timestamp()
        view = session_view_from_features(example.user_features, self.category_index, self.catalog.item_index,
                                          self.catalog.n_categories)
        batch = np.asarray(self.batch_scorer(example.user_id, [str(self.catalog.item_ids[i]) for i in items]),
                           dtype=float)
        trend = self.trend_lookup(items) if self.trend_lookup else np.zeros(len(items))
        rows = online_features(batch, items, self.catalog.item_category, view,
                               last_item_covisit(view, items, self.covisit), trend, now)
        frame = pd.DataFrame(rows, columns=list(ONLINE_FEATURES))
        frame[LABEL] = np.r_[1, np.zeros(len(negatives), dtype=int)]
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
                import copy

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


def from_settings() -> OnlineExampleSink:
    """Factory for `tandem stream run --example-sink models.online_sink:from_settings`.

    Batch scores come from the batch champion on in-process features of the settings' dataset;
    the online champion (if any) is continued; sane updates are published to MLflow.
    """
    import logging

    from models.evaluate import encode_dataset
    from models.features import BATCH_FEATURES
    from models.jobs import read_dataset
    from models.registry import BATCH_MODEL, ONLINE_MODEL, champion_version, load_champion
    from models.train import build_window
    from tandem.settings import get_settings

    settings = get_settings()
    events, items = read_dataset(settings.data_dir)
    catalog, log = encode_dataset(events, items)
    window = build_window(log, catalog, float(log.ts[-1]) + 1e-6)
    ranker = load_champion(BATCH_MODEL, settings.mlflow_uri).model
    online = load_champion(ONLINE_MODEL, settings.mlflow_uri).model \
        if champion_version(ONLINE_MODEL, settings.mlflow_uri) else None

    in_process = list(ranker.feature_columns) == list(BATCH_FEATURES)
    if not in_process:
        logging.getLogger("tandem.models").warning(
            "batch champion reads Feast features (%d columns), not the in-process set: the stream's online "
            "examples carry a neutral batch score (0); `tandem train online` scores them through Feast",
            len(ranker.feature_columns))

    def batch_scorer(user_id: str, item_ids: list[str]) -> np.ndarray:
        if not in_process:
            return np.zeros(len(item_ids))
        user = log.user_index.get(user_id, log.n_users)  # unknown users get the cold profile
        idx = np.array([catalog.item_index[i] for i in item_ids], dtype=np.int64)
        return ranker.predict_margin(window.rows(np.full(len(idx), user), idx))

    import copy

    return OnlineExampleSink(catalog, window.covisit, batch_scorer, window.item_popularity,
                             publish=mlflow_publisher(settings.mlflow_uri),
                             model=copy.deepcopy(online) if online is not None else None, champion=online)
