"""Quality: the `tandem evaluate` table on the demo dataset, and the hybrid's lift over its baselines.

The same protocol as `tandem evaluate` (`tandem batch run` as of T in its own workspace, then the
events after T replayed in time order through serving's ranking, each revealed to the stream
processor's fold functions before the next query): NDCG@10, HitRate@10 and Recall@10 for
popularity, batch-only, stream-only and the hybrid, all from this one run.
"""

from __future__ import annotations

from benchmarks.core import BenchContext, Benchmark, BenchResult, Row

LIFT_OVER_BATCH = 1.3  # DESIGN.md §6: hybrid NDCG@10 ≥ 1.3× batch-only
LIFT_OVER_POPULAR = 2.0  # and ≥ 2× popularity


def run(ctx: BenchContext) -> BenchResult:
    from models.evaluate import EvaluationConfig
    from pipelines.batch.evaluation import evaluate_dataset
    from tandem.settings import get_settings

    ctx.say(f"evaluating on {ctx.dataset}")
    last = [-1]

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth > last[0]:
            last[0] = tenth
            ctx.say(f"replay {done:,}/{total:,}")

    result = evaluate_dataset(get_settings(), ctx.dataset, EvaluationConfig(k=10), log=lambda _: None,
                              progress=progress)
    ndcg = {row["name"]: row["ndcg@10"] for row in result.rows}
    hybrid, batch, popular = ndcg.get("hybrid"), ndcg.get("batch-only"), ndcg.get("popularity")
    rows = [Row(f"NDCG@10 {name}", "", value) for name, value in ndcg.items()]
    if hybrid is not None and batch:
        rows.append(Row("hybrid vs batch-only (NDCG@10)", "", hybrid, batch, hybrid / batch, "hybrid / batch-only",
                        f"≥ {LIFT_OVER_BATCH}×", hybrid / batch >= LIFT_OVER_BATCH))
    if hybrid is not None and popular:
        rows.append(Row("hybrid vs popularity (NDCG@10)", "", hybrid, popular, hybrid / popular,
                        "hybrid / popularity", f"≥ {LIFT_OVER_POPULAR}×", hybrid / popular >= LIFT_OVER_POPULAR))
    return BenchResult(
        key="quality", title="Quality (tandem evaluate)", rows=rows,
        details={"table": result.as_json(), "markdown": result.markdown()},
        notes=[f"{result.details.get('queries', '?'):,} replayed queries after T = {result.details.get('split_ts')}"
               f" on {ctx.dataset.name} ({result.mode}); the full table is in the JSON"])


BENCHMARK = Benchmark(key="quality", title="Quality (tandem evaluate)", run=run)
