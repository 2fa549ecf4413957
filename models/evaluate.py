"""`tandem evaluate`: the evaluation protocol of DESIGN.md §5, in the fast in-process replay mode.

Protocol. T is the `split_quantile` (default 80th percentile) of event timestamps. Everything
before T is history: the batch ranker is trained on features as of t1 with labels from [t1, t2),
checked on features as of t2 with labels from [t2, T), and the online model is warmed up by
replaying [t2, T) through the stream state. Then every event after T is replayed in time order as
one query: each system is asked for its top-k for that user (items the user interacted with
before — in history or earlier in the replay — excluded), then the interaction is revealed: the
stream state folds it in and the online model gets its labelled examples.

Systems compared in one run:

* popularity — the most interacted-with items before T (recency-weighted), same for everyone;
* batch-only — the user's precomputed candidate list scored by the batch ranker on as-of-T
  features (new users: the popular list scored the same way), frozen during the replay;
* stream-only — co-visitation with the user's last items in the stream plus item trend;
* hybrid — batch candidates ∪ stream candidates ∪ the user's recent categories' popular items,
  scored by both models and blended (models/blend.py `blend_scores`, as serving does).

"In-process" means the same feature and scoring functions as the platform, without Kafka, Redis
or HTTP in between; the stream state is one injected dependency (`stream_state_factory`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from models.blend import DEFAULT_ONLINE_WEIGHT, blend_scores
from models.candidates import popular_items
from models.features import BATCH_FEATURES, Catalog, EventLog, encode_events
from models.metrics import QueryMetrics, hit_rate_at_k, ndcg_at_k
from models.online import LABEL, ONLINE_FEATURES, OnlineTrainer, coefficients, last_item_covisit, online_features
from models.online import predict_margin as online_margin
from models.session import StreamState, StreamStateFactory
from models.stream_state import stream_processor_state
from models.train import (
    BatchRanker,
    InProcessWindow,
    build_training_frame,
    build_window,
    evaluate_ranker,
    train_batch_ranker,
)

SYSTEMS: tuple[str, ...] = ("popularity", "batch-only", "stream-only", "hybrid")
MODE = "in-process replay (same feature and scoring code, no Kafka/Redis/HTTP hops)"
Progress = Callable[[int, int], None]


class EvaluationError(ValueError):
    """A dataset or configuration the evaluation cannot run on; the message says what is wrong."""


@dataclass
class EvaluationConfig:
    k: int = 10
    split_quantile: float = 0.8
    window_fraction: float = 0.2  # length of the label and check windows, as a share of the history span
    negatives: int = 4  # sampled negatives per revealed interaction (online examples)
    stream_candidates: int = 50  # top stream-scored items added to the hybrid's pool
    category_candidates: int = 30  # top items of the user's recent categories added to the hybrid's pool
    online_update_every: int = 500  # examples per online partial_fit step
    online_weight: float = DEFAULT_ONLINE_WEIGHT
    trend_weight: float = 0.1  # stream-only: weight of the normalized trend next to co-visitation
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0.5 <= self.split_quantile < 1.0:
            raise EvaluationError(f"split_quantile: expected a value in [0.5, 1), got {self.split_quantile!r}")
        if not 0.0 < self.window_fraction <= 0.45:
            raise EvaluationError(f"window_fraction: expected a value in (0, 0.45], got {self.window_fraction!r}")
        if self.k < 1:
            raise EvaluationError(f"k: expected a positive integer, got {self.k!r}")


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    k: int
    mode: str = MODE
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The DESIGN.md §5 format: {"rows": [{"name", "hitrate@k", "ndcg@k", "recall@k"}]} plus details."""
        keys = ("name", f"hitrate@{self.k}", f"ndcg@{self.k}", f"recall@{self.k}")
        return {"rows": [{key: row[key] for key in keys} for row in self.rows], "mode": self.mode,
                "details": self.details}

    def markdown(self) -> str:
        k = self.k
        lines = [f"| system | HitRate@{k} | NDCG@{k} | Recall@{k} |", "|---|---|---|---|"]
        for row in self.rows:
            lines.append(f"| {row['name']} | {row[f'hitrate@{k}']:.4f} | {row[f'ndcg@{k}']:.4f} | "
                         f"{row[f'recall@{k}']:.4f} |")
        groups = self.details.get("by_user")
        if groups:
            names = list(groups)
            lines += ["", "| system | " + " | ".join(f"NDCG@{k} {g} ({groups[g]['queries']:,} queries)"
                                                    for g in names) + " |",
                      "|---|" + "---|" * len(names)]
            for row in self.rows:
                cells = [f"{groups[g]['ndcg'][row['name']]:.4f}" for g in names]
                lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def row(self, name: str) -> dict[str, Any]:
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(name)


def _top_k(scores: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """The k items with the highest finite scores, best first."""
    finite = np.isfinite(scores)
    if not finite.all():
        scores, items = scores[finite], items[finite]
    if len(items) > k:
        part = np.argpartition(-scores, k - 1)[:k]
        return items[part[np.argsort(-scores[part], kind="stable")]]
    return items[np.argsort(-scores, kind="stable")]


def _first_unseen(ordered: np.ndarray, seen: set[int], k: int, skip: set[int] | None = None) -> list[int]:
    out: list[int] = []
    for item in ordered:
        item = int(item)
        if item in seen or (skip is not None and item in skip):
            continue
        out.append(item)
        if len(out) == k:
            break
    return out


class BatchScores:
    """The batch ranker's log-odds for every item, per user, on one window's features (computed once per user)."""

    def __init__(self, ranker: BatchRanker, window: InProcessWindow, n_items: int):
        self.ranker, self.window, self.n_items = ranker, window, n_items
        self._cache: dict[int, np.ndarray] = {}
        self._ordered: dict[int, np.ndarray] = {}

    def all_items(self, user: int) -> np.ndarray:
        scores = self._cache.get(user)
        if scores is None:
            items = np.arange(self.n_items)
            scores = self.ranker.predict_margin(self.window.rows(np.full(self.n_items, user), items))
            self._cache[user] = scores
        return scores

    def ordered_candidates(self, user: int) -> np.ndarray:
        """The user's candidate list (models/candidates.py), best batch score first."""
        ordered = self._ordered.get(user)
        if ordered is None:
            cand = self.window.candidates.of(user)
            ordered = cand[np.argsort(-self.all_items(user)[cand], kind="stable")]
            self._ordered[user] = ordered
        return ordered


class Replayer:
    """Answers top-k for each system and learns from revealed interactions, one event at a time."""

    def __init__(self, catalog: Catalog, window: InProcessWindow, batch: BatchScores, stream: StreamState,
                 trainer: OnlineTrainer, config: EvaluationConfig, rng: np.random.Generator,
                 user_ids: np.ndarray | None = None):
        self.catalog, self.window, self.batch, self.stream = catalog, window, batch, stream
        self.trainer, self.config, self.rng = trainer, config, rng
        self.user_ids = user_ids  # labels the examples' user_id column (the index as a string without it)
        self.n_items = catalog.n_items
        self.all_items = np.arange(self.n_items)
        pop = window.item_popularity
        self.popular_order = popular_items(pop, self.n_items)
        self.pop_norm = pop / pop.max() if pop.max() > 0 else pop

    def stream_scores(self, user: int, now: float) -> np.ndarray:
        """Stream-only score of every item: co-visitation with the user's last items + normalized trend."""
        view = self.stream.view(user)
        trend = self.stream.trend(now)
        top = trend.max()
        score = self.config.trend_weight * (trend / top if top > 0 else trend)
        if view is not None and view.last_items:
            last = np.asarray(view.last_items, dtype=np.int64)
            weights = 1.0 / np.arange(1, len(last) + 1)
            score = score + np.asarray(self.window.covisit[last].T @ weights).ravel()
        return score

    def hybrid_pool(self, user: int, now: float, stream_score: np.ndarray, seen: set[int]) -> np.ndarray:
        pool = set(self.window.candidates.of(user).tolist())
        pool.update(_top_k(stream_score, self.all_items, self.config.stream_candidates).tolist())
        view = self.stream.view(user)
        if view is not None:
            share = view.recent_category_share(now)
            recent = share[self.catalog.item_category] * self.pop_norm
            pool.update(_top_k(np.where(recent > 0, recent, -np.inf), self.all_items,
                               self.config.category_candidates).tolist())
        pool.difference_update(seen)
        return np.fromiter(pool, dtype=np.int64, count=len(pool))

    def online_rows(self, user: int, items: np.ndarray, batch_logit: np.ndarray, now: float) -> np.ndarray:
        view = self.stream.view(user)
        return online_features(batch_logit, items, self.catalog.item_category, view,
                               last_item_covisit(view, items, self.window.covisit), self.stream.trend(now)[items], now)

    def query(self, user: int, now: float, seen: set[int]) -> dict[str, list[int]]:
        k = self.config.k
        popular = _first_unseen(self.popular_order, seen, k)
        batch_top = _first_unseen(self.batch.ordered_candidates(user), seen, k)
        if len(batch_top) < k:  # a short list is topped up with popular items, as serving does
            batch_top += _first_unseen(self.popular_order, seen, k - len(batch_top), skip=set(batch_top))
        s = self.stream_scores(user, now)
        if seen:
            s = s.copy()
            s[np.fromiter(seen, dtype=np.int64, count=len(seen))] = -np.inf
        stream_top = _top_k(s, self.all_items, k).tolist()
        pool = self.hybrid_pool(user, now, s, seen)
        batch_logit = self.batch.all_items(user)[pool]
        if self.trainer.updates:
            online = online_margin(self.trainer.model, self.online_rows(user, pool, batch_logit, now))
            hybrid = blend_scores(batch_logit, online, self.config.online_weight)
        else:
            hybrid = batch_logit
        hybrid_top = _top_k(hybrid, pool, k).tolist()
        return {"popularity": popular, "batch-only": batch_top, "stream-only": stream_top, "hybrid": hybrid_top}

    def examples(self, user: int, item: int, now: float, seen: set[int]) -> pd.DataFrame:
        """Labelled rows for one revealed interaction: the item (1) and sampled pool items (0)."""
        s = self.stream_scores(user, now)
        pool = self.hybrid_pool(user, now, s, seen | {item})
        n_neg = min(self.config.negatives, len(pool))
        negatives = self.rng.choice(pool, size=n_neg, replace=False) if n_neg else np.zeros(0, dtype=np.int64)
        items = np.r_[np.int64(item), negatives.astype(np.int64)]
        rows = self.online_rows(user, items, self.batch.all_items(user)[items], now)
        frame = pd.DataFrame(rows, columns=list(ONLINE_FEATURES))
        frame[LABEL] = np.r_[1, np.zeros(n_neg, dtype=int)]
        frame["user_id"] = self.user_ids[user] if self.user_ids is not None else str(user)
        frame["item_id"] = self.catalog.item_ids[items].astype(str)
        return frame


def encode_dataset(events: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table) -> tuple[Catalog, EventLog]:
    """The item catalogue (items seen only in events included) and the encoded event log."""
    ev = events.to_pandas() if isinstance(events, pa.Table) else events
    if len(ev) < 100:
        raise EvaluationError(f"the dataset has {len(ev)} events; the evaluation needs at least 100")
    catalog = Catalog.from_items(items, ev["item_id"].astype(str).unique().tolist())
    return catalog, encode_events(ev, catalog)


def evaluate_events(events: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table,
                    config: EvaluationConfig | None = None,
                    stream_state_factory: StreamStateFactory | None = None,
                    progress: Progress | None = None) -> EvaluationResult:
    """Run the whole protocol on an event log and its item catalogue; return the four-row table.

    `stream_state_factory` defaults to the stream processor's own feature functions (models/stream_state.py).
    """
    config = config or EvaluationConfig()
    stream_state_factory = stream_state_factory or stream_processor_state
    started = time.perf_counter()
    catalog, log = encode_dataset(events, items)
    rng = np.random.default_rng(config.seed)
    split = float(np.quantile(log.ts, config.split_quantile))
    span = split - float(log.ts[0])
    t2 = split - config.window_fraction * span
    t1 = t2 - config.window_fraction * span
    if span <= 0:
        raise EvaluationError("all events share one timestamp: there is no time to split")

    # batch: train on (features as of t1, labels in [t1, t2)), check on (as of t2, labels in [t2, T))
    window1 = build_window(log, catalog, t1)
    train_frame = build_training_frame(log, catalog, window1, t2, seed=config.seed)
    ranker = train_batch_ranker(train_frame, list(BATCH_FEATURES))
    window2 = build_window(log, catalog, t2)
    check_frame = build_training_frame(log, catalog, window2, split, seed=config.seed + 1)
    batch_check = evaluate_ranker(ranker.predict(check_frame), check_frame, k=config.k)
    window_t = build_window(log, catalog, split)

    stream = stream_state_factory(catalog)
    seen: dict[int, set[int]] = {}
    warm_start = int(np.searchsorted(log.ts, t2, side="left"))
    replay_start = int(np.searchsorted(log.ts, split, side="left"))
    for j in range(warm_start):
        reveal_event(stream, seen, log, j)

    trainer = OnlineTrainer(update_every=config.online_update_every)
    n_replay = len(log) - replay_start
    total = (replay_start - warm_start) + n_replay
    done = 0
    # online warm-up: replay [t2, T) with batch scores on as-of-t2 features, learning as the stream would
    warm = Replayer(catalog, window2, BatchScores(ranker, window2, catalog.n_items), stream, trainer, config, rng,
                    log.user_ids)
    for j in range(warm_start, replay_start):
        user, item, now = int(log.user[j]), int(log.item[j]), float(log.ts[j])
        user_seen = seen.setdefault(user, set())
        if item not in user_seen:
            trainer.add(warm.examples(user, item, now, user_seen))
        reveal_event(stream, seen, log, j)
        done += 1
        if progress and done % 500 == 0:
            progress(done, total)
    trainer.flush()
    warm_updates = trainer.updates

    replay = Replayer(catalog, window_t, BatchScores(ranker, window_t, catalog.n_items), stream, trainer, config,
                      rng, log.user_ids)
    metrics = {name: QueryMetrics(name) for name in SYSTEMS}
    answerable = 0
    for j in range(replay_start, len(log)):
        user, item, now = int(log.user[j]), int(log.item[j]), float(log.ts[j])
        user_seen = seen.setdefault(user, set())
        if item in user_seen:
            # an item seen before is excluded from every list: a miss for all systems, no need to ask
            for m in metrics.values():
                m.ranks.append(0)
        else:
            answerable += 1
            answers = replay.query(user, now, user_seen)
            for name, top in answers.items():
                metrics[name].add(item, top)
            trainer.add(replay.examples(user, item, now, user_seen))
        reveal_event(stream, seen, log, j)
        done += 1
        if progress and done % 500 == 0:
            progress(done, total)
    if progress:
        progress(total, total)

    rows = [metrics[name].summary(config.k) for name in SYSTEMS]
    known = np.zeros(log.n_users, dtype=bool)
    known[log.user[:replay_start]] = True
    by_user = by_user_group(known[log.user[replay_start:]], {name: metrics[name].ranks for name in SYSTEMS},
                            config.k)
    per_day = replay_by_day(log.ts[replay_start:], {name: metrics[name].ranks for name in SYSTEMS}, config.k)
    details = {
        "split_ts": _iso(split),
        "train_window": {"features_as_of": _iso(t1), "labels": [_iso(t1), _iso(t2)]},
        "check_window": {"features_as_of": _iso(t2), "labels": [_iso(t2), _iso(split)]},
        "events": len(log), "history_events": replay_start, "replayed_events": n_replay,
        "queries": n_replay, "queries_with_unseen_item": answerable,
        "users": int(log.n_users), "items": int(catalog.n_items),
        "batch_ranker_check": batch_check,
        "online_updates": {"warm_up": warm_updates, "during_replay": trainer.updates - warm_updates,
                           "examples": trainer.examples_seen, "every": config.online_update_every},
        "online_coefficients": coefficients(trainer.model),
        "online_weight": config.online_weight,
        "stream_features": getattr(stream_state_factory, "__name__", type(stream_state_factory).__name__),
        "seconds": round(time.perf_counter() - started, 1),
        "per_day": per_day,
        "by_user": by_user,
    }
    mode = f"{MODE}; stream features: {details['stream_features']}"
    return EvaluationResult(rows, config.k, mode, details)


def by_user_group(returning: np.ndarray, ranks: dict[str, list[int]], k: int) -> dict[str, dict[str, Any]]:
    """Each system's quality for queries of new users (no event before T: they start cold) and of returning
    ones: {"new": {"queries", "hitrate": {system: v}, "ndcg": {system: v}}, "returning": {...}}."""
    returning = np.asarray(returning, dtype=bool)
    out: dict[str, dict[str, Any]] = {}
    for group, mask in (("new", ~returning), ("returning", returning)):
        out[group] = {"queries": int(mask.sum()),
                      "hitrate": {name: hit_rate_at_k(np.asarray(r)[mask], k) for name, r in ranks.items()},
                      "ndcg": {name: ndcg_at_k(np.asarray(r)[mask], k) for name, r in ranks.items()}}
    return out


def replay_by_day(ts: np.ndarray, ranks: dict[str, list[int]], k: int) -> list[dict[str, Any]]:
    """Quality over replay time: per UTC day, the queries and each system's HitRate@k and NDCG@k."""
    days = (np.asarray(ts, dtype=np.float64) // 86_400).astype(np.int64)
    out = []
    for day in np.unique(days):
        mask = days == day
        row: dict[str, Any] = {"day": datetime.fromtimestamp(int(day) * 86_400, tz=UTC).date().isoformat(),
                               "queries": int(mask.sum())}
        for name, r in ranks.items():
            r_day = np.asarray(r)[mask]
            row[f"{name}:hitrate@{k}"] = hit_rate_at_k(r_day, k)
            row[f"{name}:ndcg@{k}"] = ndcg_at_k(r_day, k)
        out.append(row)
    return out


def reveal_event(stream: StreamState, seen: dict[int, set[int]], log: EventLog, j: int) -> None:
    """Show event j to the stream state and mark its item seen by its user."""
    user, item = int(log.user[j]), int(log.item[j])
    stream.observe(user, item, bool(log.positive[j]), float(log.ts[j]), int(log.session[j]))
    seen.setdefault(user, set()).add(item)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def evaluate_dataset(dataset_dir: Path, config: EvaluationConfig | None = None,
                     stream_state_factory: StreamStateFactory | None = None,
                     progress: Progress | None = None) -> EvaluationResult:
    """Read a dataset directory (pipelines/dataset.py layout) and evaluate it."""
    from pipelines.dataset import read_events, read_items, read_metadata

    meta = read_metadata(dataset_dir)
    result = evaluate_events(read_events(dataset_dir), read_items(dataset_dir), config, stream_state_factory,
                             progress)
    result.details["dataset"] = {"path": str(dataset_dir), "source": meta.get("source"), "seed": meta.get("seed")}
    return result


def write_report(result: EvaluationResult, reports_dir: Path, json_path: Path | None = None) -> tuple[Path, Path]:
    """Write the table as markdown and JSON under `reports_dir` (and JSON to `json_path` too); return both paths."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = json.dumps(result.as_json(), indent=2) + "\n"
    md = (f"# tandem evaluate — {stamp}\n\nMode: {result.mode}.\n\n{result.markdown()}\n\n"
          f"```json\n{json.dumps(result.details, indent=2)}\n```\n")
    md_path, js_path = reports_dir / f"evaluate-{stamp}.md", reports_dir / f"evaluate-{stamp}.json"
    md_path.write_text(md)
    js_path.write_text(payload)
    (reports_dir / "evaluate-latest.md").write_text(md)
    (reports_dir / "evaluate-latest.json").write_text(payload)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(payload)
    return md_path, js_path
