"""Batch path on 10M synthetic events: wall time per stage of `tandem batch run` (not in --quick).

The run is isolated from the demo: the `large` preset (10M events, 500k users, 50k items) is
generated into the benchmark's scratch directory, and the batch run gets its own TANDEM_HOME,
Redis and MLflow (started by tandem's service manager on free ports, stopped afterwards), so
its features and its champion never reach the demo's online store or registry. The stages are
the ones `tandem batch run` runs (validate, features, feast apply, training set, train and
register, candidates, materialize); each one's seconds come from the run itself, and the peak
memory of the driver and of its largest child (Spark's JVM) from the kernel's accounting.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.core import BenchContext, Benchmark, BenchResult, Row, free_port
from tandem.settings import PROJECT_ROOT

TARGET_S = 600.0  # DESIGN.md §6: features + training set + model ≤ 10 min on 10M events
PRESET = "large"


def _env(ctx: BenchContext) -> dict[str, str]:
    home = ctx.workdir / "home"
    # nothing of the demo's settings may leak in (this process exports TANDEM_OFFLINE_DIR, TANDEM_FEAST_* for
    # Feast): everything else derives from the benchmark's own home, Redis and MLflow
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("TANDEM_", "MLFLOW_"))}
    env = {**inherited, "TANDEM_HOME": str(home), "TANDEM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "PYTHONWARNINGS": "ignore", "COLUMNS": "120"}
    libs = ctx.settings.home / "kafka" / "libs"
    if libs.exists():  # not started here, but `services` checks the broker's jars exist
        (home / "kafka").mkdir(parents=True, exist_ok=True)
        if not (home / "kafka" / "libs").exists():
            os.symlink(libs, home / "kafka" / "libs")
    return env


def _tandem(env: dict[str, str], *args: str, timeout: float, log: Path) -> subprocess.CompletedProcess:
    with open(log, "ab") as out:
        return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)


def run(ctx: BenchContext) -> BenchResult:
    env = _env(ctx)
    data = ctx.workdir / "large"
    log = ctx.workdir / "batch.log"
    ctx.say(f"generating the {PRESET} preset (10M events) into {data}")
    t0 = time.monotonic()
    done = _tandem(env, "tandem", "data", "generate", "--size", PRESET, "--out", str(data), timeout=1800, log=log)
    if done.returncode != 0:
        raise RuntimeError(f"tandem data generate failed; see {log}:\n{log.read_text()[-3000:]}")
    generate_s = time.monotonic() - t0
    ctx.say(f"generated in {generate_s:.0f}s; starting an isolated Redis and MLflow")
    if _tandem(env, "tandem", "services", "up", "redis", "mlflow", timeout=300, log=log).returncode != 0:
        raise RuntimeError(f"could not start the benchmark's Redis/MLflow; see {log}")
    try:
        ctx.say("tandem batch run on 10M events (features, feast apply, training set, model, materialize)")
        out = ctx.workdir / "stages.json"
        done = _tandem(env, "benchmarks.batch_path", "--worker", str(data), str(out), timeout=3 * 3600, log=log)
        if done.returncode != 0:
            killed = " (killed by SIGKILL: out of memory? see `dmesg`)" if done.returncode == -9 else ""
            raise RuntimeError(f"the batch run failed with exit code {done.returncode}{killed}; last lines of "
                               f"{log}:\n{log.read_text()[-3000:]}")
        stages = json.loads(out.read_text())
    finally:
        _tandem(env, "tandem", "services", "down", "redis", "mlflow", timeout=300, log=log)
    total = sum(s["seconds"] for s in stages["steps"])
    rows = [Row(f"stage: {s['name']}", "s", s["seconds"]) for s in stages["steps"]]
    rows.append(Row("batch run, all stages", "s", total, target="≤ 600 s", met=total <= TARGET_S))
    rows.append(Row("driver peak RSS", "MiB", stages["driver_peak_rss_mib"]))
    rows.append(Row("largest child (Spark JVM) peak RSS", "MiB", stages["children_peak_rss_mib"]))
    notes = [f"dataset: `tandem data generate --size {PRESET}` ({generate_s:.0f}s to generate, not counted)",
             *(f"{s['name']}: {s['summary']}" for s in stages["steps"])]
    return BenchResult(key="batch_path", title="Batch path, 10M events", rows=rows,
                       details={"generate_seconds": generate_s, **stages}, notes=notes)


def worker(data: Path, out: Path) -> None:
    """Run `tandem batch run`'s steps (models included) in this process; write per-step seconds as JSON."""
    from models.batch_steps import model_steps
    from pipelines.batch.run import BatchOptions, default_steps, insert_steps, run_batch
    from tandem.settings import get_settings

    steps = insert_steps(default_steps(), before="materialize", new=model_steps())
    _, results = run_batch(get_settings(), BatchOptions(dataset_dir=data), steps=steps)
    doc: dict[str, Any] = {
        "steps": [{"name": r.name, "seconds": r.seconds, "summary": r.summary} for r in results],
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    out.write_text(json.dumps(doc, indent=2, default=str))


BENCHMARK = Benchmark(key="batch_path", title="Batch path, 10M events", run=run, in_quick=False)

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--worker":
        sys.exit("usage: python -m benchmarks.batch_path --worker DATASET_DIR OUT_JSON (run by `tandem bench`)")
    worker(Path(sys.argv[2]), Path(sys.argv[3]))
