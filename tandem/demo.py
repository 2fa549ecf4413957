"""`tandem demo`: the whole path end to end on a small synthetic dataset, then the effect of live clicks.

Every step runs the same `tandem` commands a user would type, so the demo shows
what the product does rather than a special path: services, data, a validated
batch run with training and registration, the online model, the stream
processor and the BentoML server. It then asks for recommendations for a few
users, streams a burst of clicks in a category they never touched through
`POST /feedback` → Kafka → the stream processor → Redis, and asks again.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from tandem.console import console
from tandem.settings import PROJECT_ROOT, Settings


class DemoError(RuntimeError):
    """A demo step that failed; the message names the step and why."""


@dataclass
class DemoOptions:
    size: str = "demo"
    users: int = 3
    clicks: int = 4
    keep_running: bool = False
    data_dir: Path | None = None
    steps_done: list[str] = field(default_factory=list)


def _tandem(*args: str) -> list[str]:
    return [sys.executable, "-m", "tandem", *args]


def run_step(name: str, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> None:
    """Run one CLI step with its output shown; raise DemoError naming the step if it fails."""
    console.rule(f"[bold]{name}")
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DemoError(f"step '{name}' did not finish within {timeout:.0f}s ({' '.join(cmd[2:])})") from None
    if result.returncode != 0:
        raise DemoError(f"step '{name}' failed with exit code {result.returncode} ({' '.join(cmd[2:])}); "
                        "its error is printed above")
    console.print(f"[green]✓[/] {name} ({time.monotonic() - started:.0f}s)")


class Background:
    """A long-running CLI process (stream processor, server) with its log under .tandem/run/."""

    def __init__(self, name: str, cmd: list[str], settings: Settings, env: dict[str, str], prefix: str = "demo"):
        self.name = name
        self.log_path = settings.run_dir / f"{prefix}-{name}.log"
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise DemoError(f"the {self.name} exited with code {self.proc.returncode}; last lines of "
                            f"{self.log_path}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self._log.close()


class Api:
    """A small client for the running server."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.base = f"http://{settings.serve_host}:{settings.serve_port}"
        self.headers = {"Content-Type": "application/json"}
        if settings.api_key:
            self.headers["X-API-Key"] = settings.api_key

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 5.0) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.strip().startswith(b"{") else {}
        except urllib.error.HTTPError as exc:
            return exc.code, {"error": exc.read().decode(errors="replace")}

    def wait_ready(self, server: Background, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server.check_alive()
            try:
                if self.call("GET", "/readyz", timeout=2)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise DemoError(f"the server at {self.base} was not ready after {timeout:.0f}s; see {server.log_path}")

    def recommend(self, user_id: str, k: int = 5) -> dict:
        status, body = self.call("POST", "/recommend", {"user_id": user_id, "k": k})
        if status != 200:
            raise DemoError(f"POST /recommend for {user_id} answered {status}: {body}")
        return body


def pick_demo_users(data_dir: Path, n: int, settings: Settings) -> list[tuple[str, str, list[str]]]:
    """Active users in a variant that uses the online model, each with a category they never touched and
    that category's most popular items."""
    from pipelines.dataset import read_events, read_items
    from serving.recommend import assign_variant

    events = read_events(data_dir).select(["user_id", "item_id"]).to_pandas()
    items = read_items(data_dir).select(["item_id", "category"]).to_pandas()
    events = events.merge(items, on="item_id", how="left")
    popularity = events.groupby(["category", "item_id"]).size().rename("n").reset_index()
    active = events.groupby("user_id").size().sort_values(ascending=False)
    # a fresh draw among the active users each run: users clicked in an earlier run carry that session
    pool = list(active.index[: max(n * 40, 100)])
    random.shuffle(pool)
    variants = settings.ab_variants
    if any(v.online_weight > 0 for v in variants):
        # a batch-only user would not show the stream's effect; the demo shows the blended variant
        pool = [u for u in pool if assign_variant(str(u), variants).online_weight > 0]
    picked = []
    for user_id in pool:
        touched = set(events.loc[events.user_id == user_id, "category"])
        untouched = sorted(set(items.category) - touched)
        if not untouched:
            continue
        category = untouched[len(picked) % len(untouched)]
        top = popularity[popularity.category == category].sort_values("n", ascending=False).item_id.head(6).tolist()
        if len(top) >= 3:
            picked.append((str(user_id), category, [str(i) for i in top]))
        if len(picked) == n:
            break
    return picked


def burst_of_clicks(api: Api, user_id: str, items: list[str], clicks: int) -> None:
    session = f"demo-{uuid.uuid4().hex[:8]}"
    for item_id in items[:clicks]:
        event = {"event_id": f"demo-{uuid.uuid4().hex}", "user_id": user_id, "item_id": item_id,
                 "event_type": "click", "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                 "session_id": session}
        deadline = time.monotonic() + 15
        status, body = api.call("POST", "/feedback", event)
        while status == 503 and time.monotonic() < deadline:  # not produced: retry, the event_id keeps it once
            time.sleep(0.5)
            status, body = api.call("POST", "/feedback", event)
        if status >= 300:
            raise DemoError(f"POST /feedback answered {status}: {body}")


def _rec_table(title: str, body: dict, categories: dict[str, str]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("item", "category", "score", "batch", "online"):
        table.add_column(col, justify="right" if col in ("score", "batch", "online") else "left")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for it in body["items"]:
        table.add_row(it["item_id"], categories.get(it["item_id"], "?"), fmt(it.get("score")),
                      fmt(it.get("batch_score")), fmt(it.get("online_score")))
    versions = body.get("model_versions", {})
    table.caption = (f"variant {body.get('variant')} · batch-ranker v{versions.get('batch')} · online-ranker "
                     f"v{versions.get('online')} · degraded {body.get('degraded')} · feature age "
                     f"{body.get('feature_age_s', 0):.1f}s")
    return table


def show_before_and_after(api: Api, data_dir: Path, options: DemoOptions) -> int:
    """Recommendations before and after a burst of streamed clicks; returns how many users' lists changed."""
    from pipelines.dataset import read_items

    categories = dict(zip(*read_items(data_dir).select(["item_id", "category"]).to_pydict().values(), strict=True))
    changed = 0
    for user_id, category, items in pick_demo_users(data_dir, options.users, api.settings):
        console.rule(f"[bold]{user_id}: {options.clicks} streamed clicks in '{category}', a category they never "
                     "touched")
        before = api.recommend(user_id)
        console.print(_rec_table("before", before, categories))
        burst_of_clicks(api, user_id, items, options.clicks)
        sent = time.monotonic()
        after = before
        while time.monotonic() - sent < 5:
            time.sleep(0.2)
            after = api.recommend(user_id)
            if [i["item_id"] for i in after["items"]] != [i["item_id"] for i in before["items"]]:
                break
        waited = time.monotonic() - sent
        console.print(_rec_table(f"after ({waited:.1f}s later)", after, categories))
        in_category = sum(categories.get(i["item_id"]) == category for i in after["items"])
        same = [i["item_id"] for i in after["items"]] == [i["item_id"] for i in before["items"]]
        if not same:
            changed += 1
        console.print(f"{'[green]changed' if not same else '[yellow]unchanged'}[/]: {in_category} of "
                      f"{len(after['items'])} now from '{category}'")
    return changed


def run_demo(settings: Settings, options: DemoOptions, report: Callable[[str], None] = console.print) -> int:
    data_dir = options.data_dir or settings.data_dir / "demo"
    # every step, and the example sink's item lookup, works on the demo dataset
    env = {**os.environ, **settings.feast_environment(), "TANDEM_DATA": str(data_dir)}
    run_step("1/6 services: Redis, Kafka (KRaft), MLflow", _tandem("services", "up"), 600, env)
    run_step(f"2/6 data: synthetic '{options.size}' dataset", _tandem("data", "generate", "--size", options.size,
                                                                      "--out", str(data_dir)), 600, env)
    run_step("3/6 batch: validate → features → feast apply → training set → train + register → candidates → "
             "materialize", _tandem("batch", "run", "--data", str(data_dir)), 1200, env)
    run_step("4/6 online model: incremental updates from labelled events, versioned in MLflow",
             _tandem("train", "online", "--data", str(data_dir)), 900, env)
    console.rule("[bold]5/6 stream processor and server")
    stream = Background("stream", _tandem("stream", "run", "--data", str(data_dir), "--example-sink",
                                          "pipelines.stream.online_learning:from_settings"), settings, env)
    server = Background("server", _tandem("serve"), settings, env)
    api = Api(settings)
    try:
        api.wait_ready(server, timeout=240)
        stream.check_alive()
        console.print(f"[green]✓[/] stream processor (log {stream.log_path}) and server at {api.base} are up")
        console.rule("[bold]6/6 recommendations before and after streamed clicks")
        changed = show_before_and_after(api, data_dir, options)
        stream.check_alive()
    finally:
        if not options.keep_running:
            server.stop()
            stream.stop()
    console.rule("[bold]where to look")
    host = settings.serve_host
    console.print(f"MLflow UI      {settings.mlflow_uri}  (registered models batch-ranker, online-ranker)")
    console.print(f"API docs       http://{host}:{settings.serve_port}/docs"
                  + ("" if options.keep_running else "  (run `tandem serve` to bring the API back)"))
    console.print(f"data docs (GX) {settings.home / 'gx' / 'uncommitted' / 'data_docs' / 'local_site' / 'index.html'}")
    console.print(f"reports        {settings.home / 'reports'}  (tandem evaluate writes the quality table here)")
    console.print(f"logs           {settings.run_dir}")
    console.print(f"[bold]{changed} of {options.users} users' recommendations changed after their streamed clicks")
    return changed
