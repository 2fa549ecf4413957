"""Online feature fetch for one user + 100 items (DESIGN.md §6: ≥ 5× faster than Feast `get_online_features`).

tandem's path is what /recommend does (serving/features.py `OnlineFeatures`): one HMGET of the user's
Feast hash plus a gather of the 100 items' rows from the in-process item snapshot (refreshed on
materialization, trending re-read in the background). The stock baseline is `FeatureStore.get_online_features`
for the same user- and item-keyed feature views, through the same Feast registry and Redis.

Feast is measured two ways, and the faster one is the baseline (the conservative choice):
* "split": one call for the user row, one for the 100 item rows — the least work Feast can be asked to do;
* "joined": one call with 100 `{user_id, item_id}` rows and both kinds of features, as a ranker's
  feature service is usually read.

Per-call latency is wall-clock over many calls after a warm-up, calls of the two paths interleaved so
a burst of load on this shared machine hits both alike. Before timing, the values both paths return for
a sample of users are compared; a mismatch is reported, never hidden.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from benchmarks.core import BenchContext, Benchmark, BenchResult, Row, peak_rss_mb, percentiles

KEY = "online_features"
TITLE = "Online features, user + 100 items"
N_ITEMS = 100
TARGET = "≥ 5× faster than get_online_features"
TARGET_SPEEDUP = 5.0
CHECK_USERS = 20  # users whose values are compared between the two paths

Values = dict[str, list[Any]]  # full feature name (view__feature) → one value per entity row


# ---- comparing what the two paths return (pure) -------------------------------------------------


def same_value(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Whether two feature values are equal as serving sees them: None ≡ NaN, ints ≡ floats, lists element-wise."""
    a_missing = a is None or (isinstance(a, float) and math.isnan(a))
    b_missing = b is None or (isinstance(b, float) and math.isnan(b))
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        if not isinstance(a, (list, tuple, np.ndarray)) or not isinstance(b, (list, tuple, np.ndarray)):
            return False
        return len(a) == len(b) and all(same_value(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):  # bools: as serving's floats
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=0.0)
    return a == b


def mismatches(tandem: Mapping[str, Sequence[Any]], stock: Mapping[str, Sequence[Any]],
               entity_ids: Sequence[str], limit: int = 5) -> tuple[int, int, list[str]]:
    """Compare tandem's values with Feast's, feature by feature and row by row.

    Only features tandem returns are compared (the item snapshot keeps what serving interprets);
    a feature tandem returns that Feast does not is a mismatch. Returns (values compared, values that
    differ, up to `limit` descriptions of the differences).
    """
    compared = differ = 0
    examples: list[str] = []
    for name in sorted(tandem):
        ours = list(tandem[name])
        theirs = stock.get(name)
        if theirs is None:
            differ += len(ours)
            compared += len(ours)
            if len(examples) < limit:
                examples.append(f"{name}: returned by tandem, not by get_online_features")
            continue
        for entity, a, b in zip(entity_ids, ours, list(theirs), strict=True):
            compared += 1
            if not same_value(a, b):
                differ += 1
                if len(examples) < limit:
                    examples.append(f"{name} of {entity}: tandem {a!r} vs Feast {b!r}")
    return compared, differ, examples


def best_of(*latencies: Mapping[str, float]) -> dict[str, float]:
    """Per percentile, the lowest latency of several ways to call the baseline (the conservative baseline)."""
    return {q: min(lat[q] for lat in latencies) for q in latencies[0]}


def speedup(stock_s: float | None, tandem_s: float | None) -> float | None:
    """stock / tandem latency (how many times faster tandem is); None when either is missing or zero."""
    if not stock_s or not tandem_s:
        return None
    return stock_s / tandem_s


# ---- the two paths ------------------------------------------------------------------------------


def tandem_fetch(features: Any, user_id: str, item_ids: Sequence[str]) -> tuple[Values, Values]:
    """What /recommend reads for a user and its candidates: the user's hash, the items' snapshot rows."""
    snapshot, columns, _ = features.item_columns()
    record = features.read_user(user_id)
    rows = np.fromiter((snapshot.index[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
    c = features.contract
    items: Values = {name: col[rows].tolist() for name, col in columns.items()}
    items["__".join(c.item_category)] = [snapshot.categories[r] for r in rows]
    items["__".join(c.neighbours)] = [list(snapshot.neighbours[i]) if i in snapshot.neighbours else None
                                      for i in item_ids]
    items["__".join(c.neighbour_scores)] = [list(snapshot.neighbour_scores[i]) if i in snapshot.neighbour_scores
                                            else None for i in item_ids]
    user: Values = {name: [value] for name, value in record.values.items()}
    return user, items


class StockFetch:
    """`FeatureStore.get_online_features` for the same views serving reads, split or joined."""

    def __init__(self, store: Any, user_refs: list[str], item_refs: list[str], user_key: str, item_key: str):
        self.store, self.user_refs, self.item_refs = store, user_refs, item_refs
        self.user_key, self.item_key = user_key, item_key

    def split(self, user_id: str, item_ids: Sequence[str]) -> tuple[Values, Values]:
        user = self.store.get_online_features(features=self.user_refs, entity_rows=[{self.user_key: user_id}],
                                              full_feature_names=True).to_dict()
        items = self.store.get_online_features(features=self.item_refs,
                                               entity_rows=[{self.item_key: i} for i in item_ids],
                                               full_feature_names=True).to_dict()
        return user, items

    def joined(self, user_id: str, item_ids: Sequence[str]) -> Values:
        return self.store.get_online_features(
            features=self.user_refs + self.item_refs,
            entity_rows=[{self.user_key: user_id, self.item_key: i} for i in item_ids],
            full_feature_names=True).to_dict()


def _timed(calls: Sequence[tuple[str, Callable[[str], Any]]], n: int, warmup: int,
           users: Sequence[str]) -> dict[str, list[float]]:
    """Latency in seconds of each named call, interleaved, over n rounds (after `warmup` untimed ones)."""
    out: dict[str, list[float]] = {name: [] for name, _ in calls}
    for i in range(warmup + n):
        user = users[i % len(users)]
        for name, fn in calls:
            t0 = time.perf_counter()
            fn(user)
            took = time.perf_counter() - t0
            if i >= warmup:
                out[name].append(took)
    return out


def _demo_ids(ctx: BenchContext, features: Any) -> tuple[list[str], list[str]]:
    """Users of the demo dataset with features in Redis, and 100 demo items in the serving snapshot."""
    users = [str(u) for u in pq.read_table(ctx.dataset / "users.parquet", columns=["user_id"]).column(0).to_pylist()]
    items = [str(i) for i in pq.read_table(ctx.dataset / "items.parquet", columns=["item_id"]).column(0).to_pylist()]
    rng = random.Random(7)
    rng.shuffle(users)
    online_users = [u for u in users[:400] if features.read_user(u).found]
    in_snapshot = [i for i in items if i in features.items.index]
    return online_users, rng.sample(in_snapshot, min(N_ITEMS, len(in_snapshot)))


def run(ctx: BenchContext) -> BenchResult:
    from pipelines.batch.feast_repo import feature_store
    from serving.features import OnlineFeatures

    result = BenchResult(key=KEY, title=TITLE)
    features = OnlineFeatures(ctx.settings)
    features.cache_file = ctx.workdir / "items.pickle"  # serving's own outage cache is left alone
    features.start()  # schema + item snapshot, and the refresher serving runs (it shares the GIL, as in serving)
    try:
        users, items = _demo_ids(ctx, features)
        if not users or len(items) < N_ITEMS:
            raise RuntimeError(f"the demo's online store holds {len(users)} of 400 sampled users and "
                               f"{len(items)} items: run `tandem demo` (or `tandem batch run`) first")
        c = features.contract
        trending = [(c.trending_view, f) for f in features.trending_fields]
        user_refs = [f"{v.name}:{f}" for v in features.user_views for f in v.fields]
        item_refs = [f"{v.name}:{f}" for v in features.item_views for f in v.fields] + \
                    [f"{v}:{f}" for v, f in trending]
        stock = StockFetch(feature_store(ctx.settings), user_refs, item_refs, c.user_key, c.item_key)
        ctx.say(f"{len(user_refs)} user and {len(item_refs)} item features; {len(users)} demo users online")

        # same values? (a sample of users, the same 100 items)
        compared = differ = 0
        examples: list[str] = []
        for user in users[:CHECK_USERS]:
            t_user, t_items = tandem_fetch(features, user, items)
            s_user, s_items = stock.split(user, items)
            for ours, theirs, ids in ((t_user, s_user, [user]), (t_items, s_items, items)):
                n, d, ex = mismatches(ours, theirs, ids)
                compared, differ = compared + n, differ + d
                examples += ex[: max(0, 5 - len(examples))]
        joined = stock.joined(users[0], items)
        _, s_items0 = stock.split(users[0], items)
        joined_same = all(same_value(joined.get(k), s_items0.get(k)) for k in s_items0 if k != c.item_key)

        n = 300 if ctx.quick else 2000
        warmup = 30 if ctx.quick else 100
        ctx.say(f"timing {n} calls of each path (after {warmup} warm-up calls)")
        lat = _timed([("tandem", lambda u: tandem_fetch(features, u, items)),
                      ("feast_split", lambda u: stock.split(u, items)),
                      ("feast_joined", lambda u: stock.joined(u, items))], n, warmup, users)
    finally:
        features.stop()

    ms = {name: {k: v * 1000 for k, v in percentiles(values).items()} for name, values in lat.items()}
    stock_ms = best_of(ms["feast_split"], ms["feast_joined"])
    for q in ("p50", "p95", "p99"):
        ratio = speedup(stock_ms[q], ms["tandem"][q])
        targeted = q != "p95"
        result.rows.append(Row(metric=f"latency {q}", unit="ms", tandem=ms["tandem"][q], stock=stock_ms[q],
                               ratio=ratio, ratio_label="speed-up vs stock", target=TARGET if targeted else "",
                               met=None if ratio is None or not targeted else ratio >= TARGET_SPEEDUP))
    result.details = {"calls": n, "warmup": warmup, "users": len(users), "items": len(items),
                      "user_features": len(user_refs), "item_features": len(item_refs),
                      "latency_ms": ms, "stock_ms": stock_ms, "values_compared": compared,
                      "values_differing": differ, "mismatch_examples": examples,
                      "joined_call_matches_split": joined_same, "peak_rss_mb": peak_rss_mb()}
    result.notes.append(
        f"one call = 1 user ({len(user_refs)} features of {len(features.user_views)} user views) + {len(items)} items "
        f"({len(item_refs)} features of {len(features.item_views) + bool(trending)} item views); {n} calls per path, "
        f"round-robin over {len(users)} demo users, after {warmup} warm-up calls; the paths interleaved call by call")
    result.notes.append(
        f"stock = at each percentile the faster of get_online_features split (user call + 100-item call: "
        f"p50 {ms['feast_split']['p50']:.2f} ms, p99 {ms['feast_split']['p99']:.2f} ms) and joined (one call, "
        f"100 user+item rows: p50 {ms['feast_joined']['p50']:.2f} ms, p99 {ms['feast_joined']['p99']:.2f} ms)")
    result.notes.append("tandem = serving/features.py as /recommend uses it: one HMGET for the user, the items' rows "
                        "gathered from the in-process snapshot (items change only on materialization)")
    if differ:
        result.notes.append(f"VALUE MISMATCH: {differ} of {compared} values differ between tandem and "
                            f"get_online_features over {min(CHECK_USERS, len(users))} users × {len(items)} items; "
                            f"e.g. {'; '.join(examples)}")
    else:
        result.notes.append(f"same values: all {compared} values tandem returns equal get_online_features' "
                            f"({min(CHECK_USERS, len(users))} users × {len(items)} items)")
    if not joined_same:
        result.notes.append("the joined get_online_features call returned different item values than the split one")
    return result


BENCHMARK = Benchmark(key=KEY, title=TITLE, run=run)
