"""What every benchmark shares: its context, its result, and the statistics it reports.

A benchmark is a module under benchmarks/ with a `BENCHMARK = Benchmark(...)` whose `run(ctx)`
measures the tandem path and the stock baseline *in the same run, on the same data*, and
returns a BenchResult. Benchmarks measure; they never assert a timing. Whether a DESIGN.md §6
target is met is recorded next to the figures (`met`), never turned into a failure.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tandem.settings import Settings


@dataclass
class BenchContext:
    """What a benchmark may use: settings of the running services, the demo dataset, a scratch dir."""

    settings: Settings
    quick: bool
    workdir: Path  # scratch space, removed after the run
    dataset: Path  # the demo dataset (`make demo` writes it)
    progress: Callable[[str], None] = print

    def say(self, message: str) -> None:
        self.progress(message)


@dataclass
class Row:
    """One measured quantity: tandem's figure, the stock baseline's, and the §6 target it answers to."""

    metric: str
    unit: str
    tandem: float | None
    stock: float | None = None
    ratio: float | None = None  # how the target reads it (e.g. stock_ms / tandem_ms for "5x faster")
    ratio_label: str = ""  # what `ratio` is, e.g. "speed-up vs stock" or "tandem / no-op"
    target: str = ""
    met: bool | None = None  # None: no target for this row, or it could not be measured


@dataclass
class BenchResult:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # the raw numbers behind the rows
    notes: list[str] = field(default_factory=list)  # what limits a figure, how it was measured
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    run: Callable[[BenchContext], BenchResult]
    in_quick: bool = True


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of values (p50, p95, p99 by default); empty input gives {}."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {}
    for q in qs:
        rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
        out[f"p{q:g}"] = ordered[rank - 1]
    return out


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak resident memory (VmHWM) of a process in MiB; this process when pid is None."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """`with Stopwatch() as sw: ...; sw.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
