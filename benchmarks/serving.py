"""Serving benchmark (DESIGN.md §6): /recommend over HTTP against a no-op BentoML endpoint, in the same run.

Both servers are started the way `tandem serve` starts one (`python -m bentoml serve ... --working-dir
<project root>`, same workers, threads, host and timeout: serving/server.py), one after the other, and
get the same load from benchmarks/loadgen.py in this process:

1. a warm-up at the target rate (discarded);
2. open loop at a fixed 300 req/s, latency from each request's scheduled send time (no coordinated omission);
3. closed loop with CONCURRENCY connections: maximum throughput.

Requests ask for k = 100 items for real users of the demo dataset, so each one scores the whole candidate
budget (models.ranking.MAX_CANDIDATES = 100) and returns all of it; the no-op answers 100 fixed items,
so both move the same bodies. The server's CPU per request and peak memory come from /proc.

Then the /recommend hot path is profiled in-process with pyinstrument (a subprocess runs
`python -m benchmarks.serving profile`), and what dominates goes into the notes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.core import BenchContext, Benchmark, BenchResult, Row, free_port, percentiles
from benchmarks.loadgen import JSON_HEADERS, PhaseStats, closed_loop, open_loop
from tandem.settings import PROJECT_ROOT

RATE = 300.0  # req/s, the §6 operating point
P99_TARGET_MS = 15.0
P99_RATIO_TARGET = 1.5  # tandem p99 ≤ 1.5 × the no-op's
THROUGHPUT_RATIO_TARGET = 0.6  # tandem max throughput ≥ 0.6 × the no-op's
K = 100  # items asked for: the whole candidate budget
CONCURRENCY = 16  # closed-loop connections (the server has THREADS × workers request threads)
MAX_CONNECTIONS = 64  # the open-loop connection pool's bound
READY_TIMEOUT_S = 120.0
TIMEOUT_S = 10.0  # per request: an answer later than this counts as an error
TANDEM_APP = "serving.service:Recommender"
NOOP_APP = "benchmarks.noop_service:NoopRecommender"


def request_bodies(dataset: Path, k: int = K, seed: int = 7) -> list[bytes]:
    """One /recommend body per user of the dataset, in a seeded shuffle (the same order for both servers)."""
    import pandas as pd

    users = pd.read_parquet(dataset / "users.parquet", columns=["user_id"])["user_id"].astype(str).tolist()
    random.Random(seed).shuffle(users)
    return [json.dumps({"user_id": u, "k": k}).encode() for u in users]


class Server:
    """A `bentoml serve` subprocess in its own process group, with its process tree's CPU and memory."""

    def __init__(self, app: str, port: int, log: Path, env: dict[str, str]):
        self.app, self.port, self.log = app, port, log
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "bentoml", "serve", app, "--host", "127.0.0.1", "--port", str(port),
               "--working-dir", str(PROJECT_ROOT)]
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds until /readyz answered 200 (the tandem service is ready once its batch champion is loaded)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.app} not ready after {timeout_s:.0f} s: "
                           f"{self.log.read_text(errors='replace')[-2000:]}")

    def processes(self) -> list[Any]:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole tree (arbiter and workers) so far."""
        import psutil

        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak resident memory (VmHWM) per process of the tree, by pid and command, in MiB."""
        from benchmarks.core import peak_rss_mb

        out = {}
        for p in self.processes():
            mb = peak_rss_mb(p.pid)
            if mb is not None:
                out[f"{p.pid}"] = round(mb, 1)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@contextmanager
def serving(app: str, ctx: BenchContext, name: str) -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "TANDEM_HOME": str(ctx.settings.home), "TANDEM_SERVE_HOST": "127.0.0.1",
           "TANDEM_SERVE_PORT": str(port),
           "BENTOML_DO_NOT_TRACK": "True", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(PROJECT_ROOT),
           # the decision log stays on (it is part of the hot path) but goes to scratch, not the demo's log
           "TANDEM_DECISION_LOG": str(ctx.workdir / f"{name}-decisions.jsonl")}
    server = Server(app, port, ctx.workdir / f"{name}.log", env)
    try:
        yield server
    finally:
        server.stop()


def _check_answer(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    req = urllib.request.Request(url + "/recommend", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
    if len(answer.get("items", ())) != json.loads(body)["k"]:
        raise RuntimeError(f"/recommend answered {len(answer.get('items', ()))} items, asked for {K}: {answer}")
    return answer


def measure(ctx: BenchContext, app: str, name: str, bodies: list[bytes], headers: dict[str, str]) -> dict[str, Any]:
    """Start one server, load it (warm-up, fixed rate, max throughput), and return the raw figures."""
    fixed_s = 10.0 if ctx.quick else 30.0
    warm_s = 3.0 if ctx.quick else 5.0
    closed_s = 4.0 if ctx.quick else 10.0
    decision_log = ctx.workdir / f"{name}-decisions.jsonl"
    with serving(app, ctx, name) as server:
        ready_s = server.wait_ready()
        ctx.say(f"{name}: ready in {ready_s:.0f} s on port {server.port}")
        answer = _check_answer(server.url, bodies[0], headers)
        url = server.url + "/recommend"
        warm = open_loop(url, bodies, RATE, warm_s, MAX_CONNECTIONS, TIMEOUT_S)
        cpu0, logged, load = server.cpu_seconds(), _decisions(decision_log), os.getloadavg()[0]
        fixed = open_loop(url, bodies, RATE, fixed_s, MAX_CONNECTIONS, TIMEOUT_S)
        server_cpu = server.cpu_seconds() - cpu0
        degraded = _degraded(_decisions(decision_log)[len(logged):])
        ctx.say(f"{name}: {RATE:.0f} req/s → p50 {fixed.latency_ms.get('p50', 0):.1f} ms, "
                f"p99 {fixed.latency_ms.get('p99', 0):.1f} ms, {fixed.errors} errors")
        cpu0 = server.cpu_seconds()
        most = closed_loop(url, bodies, CONCURRENCY, closed_s, TIMEOUT_S)
        closed_cpu = server.cpu_seconds() - cpu0
        ctx.say(f"{name}: max throughput {most.achieved_rate:.0f} req/s at {CONCURRENCY} connections")
        rss = server.peak_rss_mb()
    return {"app": app, "workers": ctx.settings.serve_workers, "ready_s": round(ready_s, 1),
            "degraded": answer.get("degraded"),
            "degraded_reasons": answer.get("degraded_reasons"), "warmup": asdict(warm), "fixed": asdict(fixed),
            "closed": asdict(most), "degraded_in_fixed_phase": degraded,
            "load_average_before_fixed_phase": round(load, 2),
            "server_cpu_s_fixed": server_cpu, "server_cpu_s_closed": closed_cpu,
            "server_cpu_ms_per_request": 1000 * server_cpu / max(fixed.requests, 1),
            "peak_rss_mb_by_pid": rss, "peak_rss_mb_total": round(sum(rss.values()), 1)}


def _decisions(path: Path) -> list[str]:
    """The lines of a decision log so far (the no-op writes none)."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _degraded(lines: list[str]) -> dict[str, int]:
    """How many logged answers were degraded, by reason (e.g. the online store timing out under load)."""
    out: dict[str, int] = {}
    for line in lines:
        try:
            reasons = json.loads(line).get("degraded") or []
        except json.JSONDecodeError:  # a line cut by a worker still writing
            continue
        for reason in reasons:
            out[reason] = out.get(reason, 0) + 1
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rows(tandem: dict[str, Any], stock: dict[str, Any]) -> list[Row]:
    """The §6 rows from the raw figures of both servers."""
    tf, sf = PhaseStats(**tandem["fixed"]), PhaseStats(**stock["fixed"])
    tc, sc = PhaseStats(**tandem["closed"]), PhaseStats(**stock["closed"])
    t99, s99 = tf.latency_ms.get("p99"), sf.latency_ms.get("p99")
    p99_ratio = _ratio(t99, s99)
    p99_met = None if t99 is None or p99_ratio is None else (
        tf.errors == 0 and t99 <= P99_TARGET_MS and p99_ratio <= P99_RATIO_TARGET)
    tput_ratio = _ratio(tc.achieved_rate, sc.achieved_rate)
    return [
        Row(f"p99 at {RATE:.0f} req/s", "ms", t99, s99, p99_ratio, "tandem / no-op",
            f"≤ {P99_TARGET_MS:g} ms and ≤ {P99_RATIO_TARGET:g}× no-op", p99_met),
        Row(f"p50 at {RATE:.0f} req/s", "ms", tf.latency_ms.get("p50"), sf.latency_ms.get("p50"),
            _ratio(tf.latency_ms.get("p50"), sf.latency_ms.get("p50")), "tandem / no-op"),
        Row(f"errors at {RATE:.0f} req/s", "req", float(tf.errors), float(sf.errors)),
        Row(f"max throughput ({CONCURRENCY} connections)", "req/s", tc.achieved_rate, sc.achieved_rate, tput_ratio,
            "tandem / no-op", f"≥ {THROUGHPUT_RATIO_TARGET:g}× no-op",
            None if tput_ratio is None else tput_ratio >= THROUGHPUT_RATIO_TARGET),
        Row(f"server CPU per request at {RATE:.0f} req/s", "ms", tandem["server_cpu_ms_per_request"],
            stock["server_cpu_ms_per_request"],
            _ratio(tandem["server_cpu_ms_per_request"], stock["server_cpu_ms_per_request"]), "tandem / no-op"),
        Row("server peak RSS (all processes)", "MiB", tandem["peak_rss_mb_total"], stock["peak_rss_mb_total"],
            _ratio(tandem["peak_rss_mb_total"], stock["peak_rss_mb_total"]), "tandem / no-op"),
    ]


def _workers_note(figures: dict[str, Any]) -> str:
    """How many cores the server can use: one per worker process (the GIL), at most the machine's."""
    workers = figures.get("workers", 1)
    return f"{workers} worker process{'es' if workers != 1 else ''} (≤ {min(workers, os.cpu_count() or 1)} core(s))"


def notes(tandem: dict[str, Any], stock: dict[str, Any], quick: bool) -> list[str]:
    tf, sf = PhaseStats(**tandem["fixed"]), PhaseStats(**stock["fixed"])
    cores = os.cpu_count()
    out = [
        f"Load generator (asyncio + aiohttp) and server share this machine's {cores} cores; the generator used "
        f"{tf.client_cpu_s:.1f} CPU-s over the {tf.seconds:.0f} s tandem phase and {sf.client_cpu_s:.1f} over the "
        f"no-op's ({100 * (tf.client_cpu_s or 0) / max(tf.seconds, 1e-9):.0f} % / "
        f"{100 * (sf.client_cpu_s or 0) / max(sf.seconds, 1e-9):.0f} % of a core). Load average (1 min) before "
        f"the fixed-rate phase: tandem {tandem['load_average_before_fixed_phase']:.1f}, no-op "
        f"{stock['load_average_before_fixed_phase']:.1f}: other work on the machine shows up in the tails.",
        f"Open loop at {RATE:.0f} req/s for {tf.seconds:.0f} s ({'--quick' if quick else 'full'} run) after a "
        f"discarded warm-up; latency counts from each request's scheduled send time. The generator's own lateness "
        f"(send lag p99 / max): tandem {tf.send_lag_ms.get('p99', 0):.1f} / {tf.send_lag_ms.get('max', 0):.1f} ms, "
        f"no-op {sf.send_lag_ms.get('p99', 0):.1f} / {sf.send_lag_ms.get('max', 0):.1f} ms — it is inside the "
        "latencies, so a client-bound tail inflates both sides alike.",
        f"Requests: k = {K} for real demo users (the whole 100-candidate budget scored and returned, ~12 KB "
        f"answers); the no-op parses the same RecommendRequest and returns the same RecommendResponse with {K} "
        "fixed items, with the same BentoML settings (serving/server.py) and without tandem's ASGI middleware.",
        f"Max throughput: closed loop, {CONCURRENCY} connections; with {cores} cores the client takes a share of "
        "the CPU the server could use, so it understates both servers (the ratio is the figure to read). "
        f"Server CPU per request ({tandem['server_cpu_ms_per_request']:.2f} vs "
        f"{stock['server_cpu_ms_per_request']:.2f} ms) depends much less on the machine's other load than the "
        "latencies do.",
    ]
    for label, phase in (("tandem", tf), ("no-op", sf)):
        if phase.errors:
            out.append(f"{label}: {phase.errors} of {phase.requests} requests at {RATE:.0f} req/s failed, by status "
                       f"{phase.statuses} (0 = no answer within the client's {TIMEOUT_S:g} s timeout, or a refused "
                       "connection).")
    cpu_ms = tandem["server_cpu_ms_per_request"]
    if tf.achieved_rate < 0.95 * RATE or tf.seconds > 1.2 * tf.requests / RATE:
        out.append(f"tandem did not keep up with {RATE:.0f} req/s (answered {tf.achieved_rate:.0f} req/s, the phase "
                   f"took {tf.seconds:.0f} s for {tf.requests} requests): the backlog is in its latencies. At "
                   f"{cpu_ms:.2f} ms of server CPU per request, {RATE:.0f} req/s needs {RATE * cpu_ms / 1000:.2f} "
                   f"cores, against {_workers_note(tandem)} and a client sharing {cores} cores.")
    if tandem.get("degraded"):
        out.append(f"tandem answered degraded ({tandem.get('degraded_reasons')}): figures are for the fallback path")
    if tandem.get("degraded_in_fixed_phase"):
        out.append(f"Degraded answers during the {RATE:.0f} req/s phase (from the decision log): "
                   f"{tandem['degraded_in_fixed_phase']} of {tf.requests}.")
    return out


# ---- in-process profile of the hot path ----------------------------------------------------------------------

def profile_hot_path(users: list[str], k: int = K, n: int = 400, warmup: int = 50) -> dict[str, Any]:
    """Call the service's /recommend logic directly (no HTTP) n times: its timing, and where the time goes.

    Runs in its own process (`python -m benchmarks.serving profile`): the service starts threads and
    attaches the decision log at import, which must not leak into the benchmark runner.
    """
    from pyinstrument import Profiler

    from serving.service import Recommender

    service = Recommender.inner()
    try:
        for u in users[:warmup]:
            service.recommend(u, k)
        timings, json_timings = [], []
        degraded: dict[str, int] = {}
        cpu = time.process_time()  # this process's CPU: the calls, plus the service's (mostly idle) refresh threads
        for i in range(n):
            t0 = time.perf_counter()
            answer = service.recommend(users[i % len(users)], k)
            t1 = time.perf_counter()
            answer.model_dump_json()  # what BentoML then does with the answer
            timings.append((t1 - t0) * 1000)
            json_timings.append((time.perf_counter() - t1) * 1000)
            for reason in answer.degraded_reasons:
                degraded[reason] = degraded.get(reason, 0) + 1
        cpu_ms = 1000 * (time.process_time() - cpu) / n
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for i in range(n):
            service.recommend(users[i % len(users)], k).model_dump_json()
        session = profiler.stop()
    finally:
        service.features.stop()
        service.models.stop()
    total, parts_s = breakdown(session.root_frame(), "_recommend")
    parts = [{"frame": name, "share": round(t / total, 3), "ms_per_request": round(1000 * t / n, 3)}
             for name, t in sorted(parts_s.items(), key=lambda kv: kv[1], reverse=True)[:8]] if total else []
    return {"requests": n, "k": k, "recommend_ms": percentiles(timings) | {"mean": sum(timings) / n},
            "response_json_ms": percentiles(json_timings) | {"mean": sum(json_timings) / n},
            "cpu_ms_per_request": cpu_ms,
            "degraded": degraded, "breakdown": parts,
            "profile_text": profiler.output_text(unicode=False, color=False)[-6000:]}


def breakdown(root: Any, function: str) -> tuple[float, dict[str, float]]:
    """Seconds spent in every frame of `function` in a pyinstrument tree, and in each of its direct callees
    (by function and file; "(own code)" for its own lines), summed over every call path it appears on."""
    total = 0.0
    parts: dict[str, float] = {}
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        if frame.function == function:
            total += frame.time
            for child in frame.children:
                name = ("(own code)" if child.function == "[self]" or child.is_synthetic
                        else f"{child.function} ({Path(child.file_path_short or '?').name})")
                parts[name] = parts.get(name, 0.0) + child.time
            continue  # a recursive call inside it is already counted in its time
        stack.extend(frame.children)
    return total, parts


def run_profile(ctx: BenchContext, bodies: list[bytes], n: int) -> dict[str, Any]:
    users = [json.loads(b)["user_id"] for b in bodies]
    users_file = ctx.workdir / "profile-users.json"
    users_file.write_text(json.dumps(users))
    out = ctx.workdir / "profile.json"
    env = {**os.environ, "TANDEM_HOME": str(ctx.settings.home), "PYTHONWARNINGS": "ignore",
           "TANDEM_DECISION_LOG": str(ctx.workdir / "profile-decisions.jsonl")}
    done = subprocess.run([sys.executable, "-m", "benchmarks.serving", "profile", "--users", str(users_file),
                           "--requests", str(n), "--out", str(out)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"profiling /recommend failed: {done.stderr[-2000:]}")
    return json.loads(out.read_text())


def run(ctx: BenchContext) -> BenchResult:
    result = BenchResult(key="serving", title="/recommend over HTTP")
    bodies = request_bodies(ctx.dataset)
    headers = dict(JSON_HEADERS)
    if ctx.settings.api_key:
        headers["X-API-Key"] = ctx.settings.api_key
    ctx.say(f"{len(bodies)} users; profiling the hot path in-process")
    profile = run_profile(ctx, bodies, 200 if ctx.quick else 1000)
    stock = measure(ctx, NOOP_APP, "noop", bodies, headers)
    tandem = measure(ctx, TANDEM_APP, "tandem", bodies, headers)
    result.rows = rows(tandem, stock)
    result.rows.append(Row("/recommend in-process, no HTTP (p50)", "ms", profile["recommend_ms"]["p50"]))
    result.details = {"rate": RATE, "k": K, "concurrency": CONCURRENCY, "max_connections": MAX_CONNECTIONS,
                      "workers": ctx.settings.serve_workers, "users": len(bodies), "tandem": tandem, "noop": stock,
                      "profile": {k: v for k, v in profile.items() if k != "profile_text"},
                      "profile_text": profile["profile_text"]}
    result.notes = notes(tandem, stock, ctx.quick)
    result.notes.append(_profile_note(profile, tandem, stock))
    return result


def _profile_note(profile: dict[str, Any], tandem: dict[str, Any], stock: dict[str, Any]) -> str:
    parts = ", ".join(f"{p['frame']} {100 * p['share']:.0f} %" for p in profile["breakdown"][:6])
    extra_cpu = tandem["server_cpu_ms_per_request"] - stock["server_cpu_ms_per_request"]
    return (f"Hot path in-process (pyinstrument, {profile['requests']} requests, k = {profile['k']}): "
            f"recommend p50 {profile['recommend_ms']['p50']:.2f} ms + response JSON "
            f"{profile['response_json_ms']['p50']:.2f} ms; {profile['cpu_ms_per_request']:.2f} ms CPU per request, "
            f"against {extra_cpu:.2f} ms more server CPU per request than the no-op over HTTP (the difference is "
            f"tandem's middleware, its refresh threads and noise). Inside recommend (wall time, so Redis round "
            f"trips count): {parts}.")


BENCHMARK = Benchmark(key="serving", title="/recommend over HTTP", run=run)


def main() -> None:
    ap = argparse.ArgumentParser(description="Profile /recommend in-process (used by the serving benchmark).")
    sub = ap.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile")
    prof.add_argument("--users", type=Path, required=True, help="JSON list of user ids")
    prof.add_argument("--requests", type=int, default=400)
    prof.add_argument("--k", type=int, default=K)
    prof.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    figures = profile_hot_path(json.loads(args.users.read_text()), args.k, args.requests)
    args.out.write_text(json.dumps(figures, indent=2))
    print(figures["profile_text"])


if __name__ == "__main__":
    main()
