"""`tandem evaluate`: the evaluation protocol of DESIGN.md §5, replayed in-process over the platform's own parts.

Protocol. T is the `split_quantile` (default 80th percentile) of event timestamps. Everything
before T is history: `tandem batch run --as-of T` runs on it (pipelines/batch/evaluation.py does,
in a workspace of its own) — Spark feature views, the training set through Feast, the batch ranker
trained, gated and registered, the candidate lists and item neighbours. What that run would
materialize into Redis is held in memory (`BatchOutputs`), with its registered champion. Then every
event after T is replayed in time order as one query: each system is asked for its top-k for that
user (items the user interacted with before — in history or earlier in the replay — excluded),
then the interaction is revealed to the stream processor's fold functions, which write what the
processor would write (user_session_v1, item_trending_v1), and the online model gets its
labelled examples.

Systems compared in one run:

* popularity — the most interacted-with items before T (recency-weighted), same for everyone;
* batch-only — serving's ranking (`models.ranking.rank`) on the batch path's rows alone, online
  weight 0: the user's precomputed list (a new user: the batch champion's default-profile picks)
  scored by the batch ranker, frozen during the replay;
* stream-only — the item neighbours (EASE weights, the batch path's `item_neighbours_v1`) of the user's last
  items in the stream, plus the items' trend;
* hybrid — serving's ranking on everything serving reads: batch rows, the stream's session and
  trending values, both models blended with the hybrid variant's online weight.

"In-process" means the same functions serving and the stream processor run, without Kafka, Redis
or HTTP in between. The online model learns from the replay as the stream sink would (prequential: each query
is answered before its interaction is learned from). After T it starts from the model the validation replay
learned on [T_val, T), as the stream's online ranker carries on across a batch run (`online_start`); the
validation replay, with no stream before it, starts untrained.

`tandem evaluate --through-stack` checks that claim (tandem/through_stack.py): it asks the real stack
the first queries after T and compares its lists with this replay's. For that the replay takes a frozen
online model (`online_model`: every query scored with it, nothing learned — the stack's champion does
not move either), stops after `max_queries`, and hands each query to `on_query` (`ReplayedQuery`: what
was asked, what the hybrid answered, the event to reveal next).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from models.candidates import popularity
from models.metrics import QueryMetrics, hit_rate_at_k, ndcg_at_k
from models.online import (
    ONLINE_FEATURES,
    OnlineTrainer,
    coefficients,
    encode_neighbour_lists,
    is_fitted,
    last_items_scores_encoded,
)
from models.ranking import Ranker, Ranking, blend_top_k, rank, user_view
from models.registry import ONLINE_MODEL, LoadedModel
from models.replay_store import BatchOutputs, ReplayError, ReplayStore, encode_dataset, labelled_examples

SYSTEMS: tuple[str, ...] = ("popularity", "batch-only", "stream-only", "hybrid")
STREAM_SIGNALS: tuple[str, ...] = ("neighbours", "sequence")  # each stream signal alone, in details["stream_signals"]
ONLINE_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # what the validation replay chooses from
MODE = "in-process replay (the batch run's rows and champion, the stream's fold functions, serving's ranking)"
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ReplayedQuery:
    """One query of the replay: the event it is about, the items excluded and the hybrid's answer.

    `hybrid` is empty when the item was seen before (no system is asked: a miss for all). `event_id` is the one
    the replay folds the event under; a stack that folds it under the same id keeps the same tie order."""

    position: int  # the event's index in the time-ordered log
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: float
    seen: frozenset[str]
    hybrid: tuple[str, ...]


class EvaluationError(ReplayError):
    """A dataset or configuration the evaluation cannot run on; the message says what is wrong."""


@dataclass
class EvaluationConfig:
    k: int = 10
    split_quantile: float = 0.8
    negatives: int = 4  # sampled negatives per revealed interaction (online examples)
    online_update_every: int = 500  # examples per online partial_fit step
    online_weight: float | None = None  # the hybrid's blend weight; None: chosen on the validation split
    trend_weight: float = 0.1  # stream-only: weight of the normalized trend next to the neighbour score
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0.5 <= self.split_quantile < 1.0:
            raise EvaluationError(f"split_quantile: expected a value in [0.5, 1), got {self.split_quantile!r}")
        if self.online_weight is not None and not 0.0 <= self.online_weight <= 1.0:
            raise EvaluationError(f"online_weight: expected a value in [0, 1], got {self.online_weight!r}")
        if self.k < 1:
            raise EvaluationError(f"k: expected a positive integer, got {self.k!r}")


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    k: int
    mode: str = MODE
    details: dict[str, Any] = field(default_factory=dict)
    # not in the report: what a through-stack run continues from
    online_model: Any = field(default=None, repr=False)  # the online model as the replay left it (None: untrained)
    outputs: BatchOutputs | None = field(default=None, repr=False)  # the batch run's outputs it replayed against
    validation: EvaluationResult | None = field(default=None, repr=False)  # the validation replay, if one ran

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
        choices = self.details.get("choices")
        if choices:
            lines += ["", f"Hybrid online weight {choices['online_weight']:g}: {choices['chosen_on']}"
                      + (f" (T_val {choices['T_val']}; NDCG@{k} by weight: "
                         + ", ".join(f"{w}: {v:.4f}" for w, v in choices["ndcg_by_online_weight"].items()) + ")"
                         if "T_val" in choices else "") + "."]
        signals = self.details.get("stream_signals")
        if signals:
            lines += ["", "Each stream signal alone (with the trend): " + ", ".join(
                f"{name} NDCG@{k} {v['ndcg']:.4f} (HitRate@{k} {v['hitrate']:.4f})" for name, v in signals.items())
                + "."]
        stack = self.details.get("through_stack")
        if stack:
            lines += ["", f"Through the stack (Kafka → stream processor → Redis → POST /recommend), the first "
                      f"{stack['queries']:,} queries after T with the frozen {stack['online_model']}: "
                      f"{stack['identical']:,} of {stack['asked']:,} top-{k} lists identical to the in-process "
                      f"replay's ({stack['share']:.2%}); NDCG@{k} {stack[f'through_stack_ndcg@{k}']:.4f} through the "
                      f"stack, {stack[f'in_process_ndcg@{k}']:.4f} in-process (HitRate@{k} "
                      f"{stack[f'through_stack_hitrate@{k}']:.4f} and {stack[f'in_process_hitrate@{k}']:.4f}); "
                      f"{stack['seconds']['total']:.0f} s."]
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


def _first_unseen(ordered: np.ndarray, seen: set[str], k: int) -> list[str]:
    out: list[str] = []
    for item in ordered:
        if item not in seen:
            out.append(item)
            if len(out) == k:
                break
    return out


def _online_ranker(trainer: OnlineTrainer) -> Ranker | None:
    """The online model as the replay has trained it so far, scored the way serving scores a champion."""
    if not is_fitted(trainer.model):
        return None
    return Ranker(LoadedModel(ONLINE_MODEL, f"replay-{trainer.updates}", "", trainer.model, list(ONLINE_FEATURES)))


@dataclass(frozen=True)
class FrozenInputsRanker(Ranker):
    """The batch champion, remembering its score of every input row it has seen: the replay freezes the batch
    rows after T, so the same (user, candidate) row comes back query after query, and each new user's is the
    default profile's. A remembered score is the model's own for that exact row (XGBoost scores each row on
    its own), so the tables do not change; the replay only stops asking for it again. At most `max_rows` rows
    are remembered (a few hundred bytes each); rows beyond are scored every time."""

    max_rows: int = 1_000_000
    memo: dict[bytes, float] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, ranker: Ranker | None) -> Ranker | None:
        return None if ranker is None else cls(ranker.loaded)

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        keys = [row.tobytes() for row in x]
        memo = self.memo
        new = [i for i, key in enumerate(keys) if key not in memo]
        scored = dict(zip((keys[i] for i in new), super().score(x[new]).tolist(), strict=True)) if new else {}
        if len(memo) + len(scored) <= self.max_rows:
            memo.update(scored)
        return np.fromiter((memo[key] if key in memo else scored[key] for key in keys), dtype=np.float64,
                           count=len(keys))


class Systems:
    """Each system's top-k for one query, over one ReplayStore."""

    def __init__(self, store: ReplayStore, popular_order: np.ndarray, config: EvaluationConfig):
        self.store, self.config = store, config
        self.popular_order = popular_order
        self.all_items = list(store.outputs.item_ids)
        self.item_array = np.asarray(self.all_items, dtype=object)
        cols = store.outputs.items
        self.encoded = {"neighbours": encode_neighbour_lists(cols.neighbours, cols.neighbour_scores, self.all_items),
                        "sequence": encode_neighbour_lists(cols.sequence, cols.sequence_scores, self.all_items)}

    def stream_only(self, user_id: str, seen: set[str], signal: str = "neighbours") -> list[str]:
        """A stream signal of every item with the user's last items (newer weigh more) plus the normalized trend:
        item neighbours (item_neighbours_v1, the stream-only row) or sequence neighbours
        (item_sequence_neighbours_v1, `details["stream_signals"]`)."""
        store = self.store
        trend = np.nan_to_num(store.trend, nan=0.0)
        top = trend.max() if len(trend) else 0.0
        score = self.config.trend_weight * (trend / top if top > 0 else trend)
        session = store.sessions.get(user_id)
        last = [str(i) for i in (session or {}).get("last_item_ids") or ()]
        if last:
            score = score + last_items_scores_encoded(last, len(self.all_items), self.encoded[signal])
        order = self.item_array[np.argsort(-score, kind="stable")]
        return _first_unseen(order, seen, self.config.k)

    def answer(self, user_id: str, now: float, seen: set[str], online: Ranker | None
               ) -> tuple[dict[str, list[str]], Ranking]:
        """Top-k per system, and the hybrid's ranking (its candidates are what serving would have scored)."""
        k, store = self.config.k, self.store
        batch_values = store.batch_values(user_id)
        batch_only = rank(user_view(user_id, batch_values), batch_values, store.batch_items, store.outputs.batch,
                          None, 0.0, k, now, seen)
        values = store.values(user_id)
        hybrid = rank(user_view(user_id, values), values, store.live_items(), store.outputs.batch, online,
                      self.config.online_weight, k, now, seen)
        answers = {"popularity": _first_unseen(self.popular_order, seen, k),
                   "batch-only": [r.item_id for r in batch_only.items],
                   "stream-only": self.stream_only(user_id, seen),
                   "hybrid": [r.item_id for r in hybrid.items]}
        return answers, hybrid


def choose_online_weight(result: EvaluationResult) -> float:
    """The blend weight with the best hybrid NDCG@k in a replay's sweep (the smaller weight on a tie)."""
    sweep = result.details.get("online_weight_sweep") or {}
    if not sweep:
        raise EvaluationError("the replay ranked no sweep of online weights to choose from")
    return float(max(sorted(sweep, key=float), key=lambda w: sweep[w]))


def split_time(ts: np.ndarray, quantile: float) -> float:
    """T: the `quantile` of the event timestamps, in whole microseconds (what `--as-of` is given)."""
    split = float(np.quantile(np.asarray(ts, dtype=np.float64), quantile))
    return np.floor(split * 1_000_000) / 1_000_000


def replay(events: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table, outputs: BatchOutputs,
           config: EvaluationConfig | None = None, progress: Progress | None = None,
           online_weights: tuple[float, ...] = (), online_model: Ranker | None = None,
           max_queries: int | None = None, on_query: Callable[[ReplayedQuery], None] | None = None,
           online_start: Any = None) -> EvaluationResult:
    """Replay the events at or after `outputs.as_of` (T) against the batch run's outputs; return the table.

    `online_weights`: the hybrid is also ranked with each of these blend weights, on the same candidates and
    model scores (`details["online_weight_sweep"]`: NDCG@k per weight) — how the validation replay chooses.
    `online_model`: a frozen online model scoring every query (none is trained); `max_queries`: replay only the
    first that many events after T; `on_query`: called with each query once it is answered; `online_start`: the
    online model to go on learning from (a copy is trained; None: an untrained one).
    """
    config = config or EvaluationConfig()
    if config.online_weight is None:
        raise EvaluationError("the replay needs an online weight: choose one on the validation split first")
    if max_queries is not None and max_queries < 1:
        raise EvaluationError(f"max_queries: expected a positive integer, got {max_queries!r}")
    started = time.perf_counter()
    catalog, log = encode_dataset(events, items)
    split = outputs.as_of
    replay_start = int(np.searchsorted(log.ts, split, side="left"))
    if replay_start == 0 or replay_start == len(log):
        raise EvaluationError(f"T = {iso_time(split)} leaves no history or nothing to replay")
    item_ids = catalog.item_ids.astype(str)
    user_ids = log.user_ids.astype(str)
    category = {str(i): catalog.category_names[c] for i, c in zip(item_ids, catalog.item_category, strict=True)}
    frozen = replace(outputs, batch=FrozenInputsRanker.of(outputs.batch))
    store = ReplayStore(frozen, category)
    pop = popularity(log, catalog.n_items, split)
    systems = Systems(store, item_ids[np.argsort(-pop, kind="stable")], config)
    rng = np.random.default_rng(config.seed)
    seen: dict[str, set[str]] = {}
    for j in range(replay_start):
        seen.setdefault(user_ids[log.user[j]], set()).add(item_ids[log.item[j]])

    start = {} if online_start is None else {"model": copy.deepcopy(online_start)}
    trainer = OnlineTrainer(update_every=config.online_update_every, **start)
    metrics = {name: QueryMetrics(name) for name in SYSTEMS}
    sweep = {w: QueryMetrics(f"hybrid@{w}") for w in online_weights}
    signals = {name: QueryMetrics(name) for name in STREAM_SIGNALS}
    replay_end = len(log) if max_queries is None else min(len(log), replay_start + max_queries)
    n_replay = replay_end - replay_start
    answerable = 0
    for done, j in enumerate(range(replay_start, replay_end), start=1):
        user, item, now = user_ids[log.user[j]], item_ids[log.item[j]], float(log.ts[j])
        user_seen = seen.setdefault(user, set())
        hybrid_top: tuple[str, ...] = ()
        if item in user_seen:
            # an item seen before is excluded from every list: a miss for all systems, no need to ask
            for m in (*metrics.values(), *sweep.values()):
                m.ranks.append(0)
            for m in signals.values():
                m.ranks.append(0)
        else:
            answerable += 1
            online = online_model if online_model is not None else _online_ranker(trainer)
            answers, hybrid = systems.answer(user, now, user_seen, online)
            hybrid_top = tuple(answers["hybrid"])
            for name, top in answers.items():
                metrics[name].add(item, top)
            for name, m in signals.items():
                m.add(item, systems.stream_only(user, user_seen, name))
            for w, m in sweep.items():
                m.add(item, [r.item_id for r in blend_top_k(hybrid.candidate_ids, hybrid.batch_logit,
                                                            hybrid.online_logit, w, config.k)])
            frame = None if online_model is not None else labelled_examples(
                item, hybrid.candidate_ids, store.values(user), store.live_items(), frozen.batch, now,
                config.negatives, rng)
            if frame is not None:
                trainer.add(frame)
        if on_query is not None:
            on_query(ReplayedQuery(j, f"replay-{j}", user, item, str(log.event_type[j]), now, frozenset(user_seen),
                                   hybrid_top))
        store.observe(f"replay-{j}", user, item, str(log.event_type[j]), now)
        user_seen.add(item)
        if progress and done % 500 == 0:
            progress(done, n_replay)
    if progress:
        progress(n_replay, n_replay)

    rows = [metrics[name].summary(config.k) for name in SYSTEMS]
    known = np.zeros(log.n_users, dtype=bool)
    known[log.user[:replay_start]] = True
    ranks = {name: metrics[name].ranks for name in SYSTEMS}
    details = {
        "split_ts": iso_time(split),
        "batch_run": outputs.run,
        "batch_ranker": {"name": outputs.batch.name, "version": outputs.batch.version,
                         "feature_service": outputs.batch.feature_service,
                         "columns": len(outputs.batch.feature_columns)},
        "events": len(log), "history_events": replay_start, "replayed_events": n_replay,
        "queries": n_replay, "queries_with_unseen_item": answerable,
        "users": int(log.n_users), "items": int(catalog.n_items),
        "online_updates": {"during_replay": trainer.updates, "examples": trainer.examples_seen,
                           "every": config.online_update_every,
                           "started": "untrained" if online_start is None else "from the given online model",
                           **({"frozen": f"{online_model.name} v{online_model.version}"} if online_model else {})},
        "online_coefficients": coefficients(online_model.loaded.model if online_model else trainer.model),
        "online_weight": config.online_weight,
        "stream_signals": {name: {key: m.summary(config.k)[f"{key}@{config.k}"] for key in ("ndcg", "hitrate")}
                           for name, m in signals.items()},
        "online_weight_sweep": {str(w): m.summary(config.k)[f"ndcg@{config.k}"] for w, m in sweep.items()},
        "seconds": round(time.perf_counter() - started, 1),
        "per_day": replay_by_day(log.ts[replay_start:replay_end], ranks, config.k),
        "by_user": by_user_group(known[log.user[replay_start:replay_end]], ranks, config.k),
    }
    return EvaluationResult(rows, config.k, MODE, details,
                            online_model=trainer.model if is_fitted(trainer.model) else None, outputs=outputs)


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


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


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
