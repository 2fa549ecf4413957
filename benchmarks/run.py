"""`tandem bench`: run the benchmarks of DESIGN.md §6 and write benchmarks/results/<stamp>.{json,md}.

Each benchmark measures tandem's path and the stock baseline in the same run on the same
data; the report records the machine (cores, memory, load), the versions of the stack and
the commit, so figures from different runs can be told apart. A benchmark that fails is
reported with its error and the others still run.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.core import BenchContext, Benchmark, BenchResult
from tandem.settings import PROJECT_ROOT, Settings

RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# in the order they run; each module holds a BENCHMARK
MODULES = ("serving", "online_features", "stream_ingest", "materialize", "batch_path", "quality")
STACK = ("feast", "pyspark", "mlflow", "bentoml", "great-expectations", "xgboost", "kafka-python", "redis",
         "pyarrow", "pandas", "numpy")


class BenchSetupError(RuntimeError):
    """The run cannot start (no demo dataset, services down, unknown benchmark name)."""


def load(name: str) -> Benchmark:
    return importlib.import_module(f"benchmarks.{name}").BENCHMARK


def select(names: list[str] | None, quick: bool) -> list[Benchmark]:
    """The benchmarks to run, in MODULES order: the named ones, or all (--quick: those marked in_quick)."""
    if names:
        unknown = [n for n in names if n not in MODULES]
        if unknown:
            raise BenchSetupError(f"unknown benchmark(s) {', '.join(unknown)}; expected any of {', '.join(MODULES)}")
        return [load(m) for m in MODULES if m in names]
    return [b for b in map(load, MODULES) if b.in_quick or not quick]


def machine() -> dict[str, Any]:
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1), "cpu": cpu_model,
            "python": platform.python_version(), "os": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def versions() -> dict[str, str]:
    out = {}
    for name in STACK:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    out["java"] = (java.stderr.splitlines() or ["?"])[0]
    kafka_jar = sorted((PROJECT_ROOT / ".tandem" / "kafka" / "libs").glob("kafka_2.13-*.jar"))
    if kafka_jar:
        out["kafka"] = kafka_jar[0].stem.removeprefix("kafka_2.13-")
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    out["redis-server"] = redis_v.stdout.split(" v=")[1].split()[0] if " v=" in redis_v.stdout else "?"
    return out


def commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    return {"sha": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain", "--",
                                                                             ".", ":!benchmarks/results"))}


@dataclass
class Report:
    started: str
    quick: bool
    machine: dict[str, Any]
    versions: dict[str, str]
    commit: dict[str, Any]
    results: list[BenchResult]

    def to_dict(self) -> dict[str, Any]:
        return {"started": self.started, "quick": self.quick, "machine": self.machine, "versions": self.versions,
                "commit": self.commit, "results": [r.to_dict() for r in self.results]}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def markdown(report: Report) -> str:
    m, c = report.machine, report.commit
    lines = [f"# tandem bench — {report.started}{' (--quick)' if report.quick else ''}", "",
             f"* machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}; "
             f"load average at start {m['load_average_at_start']}",
             f"* commit: {c['sha'][:12]}{' (with uncommitted changes)' if c['dirty'] else ''}",
             "* versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()), "",
             "| benchmark | metric | tandem | stock | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in report.results:
        if r.error:
            lines.append(f"| {r.title} | **failed** | | | | | {r.error.splitlines()[0][:120]} |")
            continue
        for row in r.rows:
            ratio = f"{row.ratio:.2f}× {row.ratio_label}".strip() if row.ratio is not None else "—"
            met = {True: "yes", False: "**no**", None: "—"}[row.met]
            lines.append(f"| {r.title} | {row.metric} | {_fmt(row.tandem, row.unit)} | {_fmt(row.stock, row.unit)} "
                         f"| {ratio} | {row.target or '—'} | {met} |")
    lines.append("")
    for r in report.results:
        if r.notes or r.error:
            lines.append(f"## {r.title} ({r.seconds:.0f} s)")
            lines.extend(f"* {n}" for n in r.notes)
            if r.error:
                lines.extend(["", "```", r.error.strip()[-2000:], "```"])
            lines.append("")
    return "\n".join(lines)


def check_ready(settings: Settings) -> Path:
    """The demo dataset and the services every benchmark needs; raise BenchSetupError naming what is missing."""
    from tandem.services import services

    dataset = settings.data_dir / "demo"
    if not (dataset / "dataset.json").exists():
        raise BenchSetupError(f"no demo dataset at {dataset}: run `make demo` (or `tandem demo`) first")
    down = [s.name for s in services(settings) if not s.status().healthy]
    if down:
        raise BenchSetupError(f"services not running: {', '.join(down)}; start them with `tandem services up`")
    return dataset


def run_benchmarks(settings: Settings, quick: bool, names: list[str] | None = None,
                   out_dir: Path = RESULTS_DIR, progress=print) -> tuple[Report, Path]:
    chosen = select(names, quick)
    dataset = check_ready(settings)
    started = datetime.now(UTC)
    report = Report(started=started.isoformat(timespec="seconds"), quick=quick, machine=machine(),
                    versions=versions(), commit=commit(), results=[])
    load, cores = report.machine["load_average_at_start"][0], report.machine["cores"] or 1
    if load > 0.5 * cores:
        progress(f"warning: load average {load} on {cores} cores before the run: other work will show up in the "
                 "figures (the ratios hold up better than the absolute numbers)")
    workdir = Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    try:
        for bench in chosen:
            progress(f"── {bench.title}")
            ctx = BenchContext(settings=settings, quick=quick, workdir=workdir / bench.key, dataset=dataset,
                               progress=lambda msg, key=bench.key: progress(f"   [{key}] {msg}"))
            ctx.workdir.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            try:
                result = bench.run(ctx)
            except Exception:  # noqa: BLE001 - one failed benchmark must not cost the others
                result = BenchResult(key=bench.key, title=bench.title, error=traceback.format_exc())
            result.seconds = time.monotonic() - t0
            report.results.append(result)
            progress(f"   done in {result.seconds:.0f} s" + (" — FAILED (see the report)" if result.error else ""))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if quick else "")
    (out_dir / f"{stem}.json").write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(report))
    return report, md
