"""The `tandem` command line: one entry point for every stage (DESIGN.md §3)."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tandem.console import console, err_console, progress_bar
from tandem.settings import SettingsError, export_feast_environment, get_settings

# Feast flags its Spark offline store as alpha on every call; tandem pins and tests the version it uses
warnings.filterwarnings("ignore", message=r"The spark (data source API|offline store) is an experimental",
                        category=RuntimeWarning)

app = typer.Typer(help="tandem: hybrid batch + streaming personalization.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
services_app = typer.Typer(help="Start, stop and inspect the local Redis, Kafka and MLflow.", no_args_is_help=True)
data_app = typer.Typer(help="Produce datasets in tandem's event schema.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(data_app, name="data")
train_app = typer.Typer(help="Train, log and register the batch and online rankers (MLflow).", no_args_is_help=True)
app.add_typer(train_app, name="train")
batch_app = typer.Typer(help="The batch path: validate, features, feast apply, training set, materialize.",
                        no_args_is_help=True)
app.add_typer(batch_app, name="batch")
stream_app = typer.Typer(help="The stream: replay events into Kafka, run the feature processor.", no_args_is_help=True)
app.add_typer(stream_app, name="stream")

ServiceNames = Annotated[
    list[str] | None,
    typer.Argument(help="Services to act on (redis, kafka, mlflow); all when omitted.", show_default=False),
]


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _settings():
    try:
        settings = get_settings()
        export_feast_environment(settings)
        return settings
    except SettingsError as exc:
        fail(str(exc))


def _status_table(statuses) -> Table:
    table = Table(title="tandem services")
    for col in ("service", "state", "address", "pid", "detail"):
        table.add_column(col)
    colours = {"running": "green", "external": "green", "stopped": "yellow"}
    for st in statuses:
        colour = colours.get(st.state, "red")
        table.add_row(st.name, f"[{colour}]{st.state}[/]", st.address, str(st.pid or ""), st.detail)
    return table


@services_app.command("up")
def services_up(names: ServiceNames = None) -> None:
    """Start the services (idempotent): each is health-checked before this returns."""
    from tandem.services import ServiceError, services

    settings = _settings()
    try:
        statuses = [svc.up(report=lambda msg: console.print(f"  {msg}")) for svc in services(settings, names)]
    except ServiceError as exc:
        fail(str(exc))
    console.print(_status_table(statuses))


@services_app.command("down")
def services_down(names: ServiceNames = None) -> None:
    """Stop the services tandem started; external ones are left alone."""
    from tandem.services import ServiceError, services

    settings = _settings()
    try:
        for svc in reversed(services(settings, names)):
            svc.down(report=lambda msg: console.print(f"  {msg}"))
    except ServiceError as exc:
        fail(str(exc))


@services_app.command("status")
def services_status(names: ServiceNames = None) -> None:
    """Show what runs where; exits non-zero if any service is not healthy."""
    from tandem.services import ServiceError, services

    settings = _settings()
    try:
        statuses = [svc.status() for svc in services(settings, names)]
    except ServiceError as exc:
        fail(str(exc))
    console.print(_status_table(statuses))
    if not all(st.healthy for st in statuses):
        raise typer.Exit(1)


@data_app.command("generate")
def data_generate(
    out: Annotated[Path | None, typer.Option(help="Dataset directory to write (default: settings' data dir).")] = None,
    size: Annotated[str, typer.Option(help="Preset size: demo, small, medium or large.")] = "demo",
    events: Annotated[int | None, typer.Option(min=1, help="Override the number of events.")] = None,
    users: Annotated[int | None, typer.Option(min=1, help="Override the number of users.")] = None,
    items: Annotated[int | None, typer.Option(min=1, help="Override the number of items.")] = None,
    days: Annotated[int | None, typer.Option(min=1, help="Override the number of days covered.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same data).")] = None,
) -> None:
    """Generate a synthetic dataset: users with drifting taste, Zipf popularity, sessions and a purchase funnel."""
    from dataclasses import replace

    from pipelines.dataset import DatasetError
    from pipelines.generate import SIZES, generate_dataset

    settings = _settings()
    if size not in SIZES:
        fail(f"--size {size!r} is not one of {', '.join(SIZES)}")
    config = SIZES[size]
    overrides = {"n_events": events, "n_users": users, "n_items": items, "days": days,
                 "seed": seed if seed is not None else settings.seed}
    out = out or settings.data_dir
    try:
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        with progress_bar(f"generating {config.n_events:,} events", total=config.n_events) as update:
            meta = generate_dataset(config, out, progress=update)
    except (ValueError, DatasetError) as exc:
        fail(str(exc))
    _print_dataset(out, meta)


@data_app.command("movielens")
def data_movielens(
    path: Annotated[Path, typer.Option(help="Directory holding MovieLens ratings.csv and movies.csv.")],
    out: Annotated[Path | None, typer.Option(help="Dataset directory to write (default: settings' data dir).")] = None,
) -> None:
    """Map a MovieLens directory (ratings.csv, movies.csv) onto tandem's event schema."""
    from pipelines.dataset import DatasetError
    from pipelines.movielens import convert_movielens

    settings = _settings()
    out = out or settings.data_dir
    try:
        with progress_bar(f"converting {path}") as update:
            meta = convert_movielens(path, out, progress=update)
    except DatasetError as exc:
        fail(str(exc))
    _print_dataset(out, meta)


DataOption = Annotated[Path | None, typer.Option(help="Dataset directory (default: settings' data dir).")]


def _quiet_mlflow() -> None:
    """MLflow's own progress bars and run links would drown the CLI's output."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _read_dataset(data: Path):
    from models.jobs import read_dataset
    from pipelines.dataset import DatasetError

    try:
        return read_dataset(data)
    except DatasetError as exc:
        fail(str(exc))


@train_app.command("batch")
def train_batch() -> None:
    """Retrain the XGBoost batch ranker on the training set `tandem batch run` saved (Feast, GX-checked), log it to
    MLflow, register `batch-ranker`, gate `champion`. Candidate lists and neighbours come from `tandem batch run`."""
    from models.jobs import latest_training_set, train_batch_from_training_set
    from models.train import TrainingError

    settings = _settings()
    _quiet_mlflow()
    saved = latest_training_set(settings.offline_dir)
    if saved is None:
        fail(f"no saved training set under {settings.offline_dir}/training_sets: run `tandem batch run` first")
    try:
        with progress_bar(f"training the batch ranker on {saved.name}") as update:
            _, reg = train_batch_from_training_set(saved, settings.mlflow_uri)
            update(1, 1)
    except TrainingError as exc:
        fail(str(exc))
    console.print(f"[green]registered[/] {reg.model_name} v{reg.version} (run {reg.run_id}) from {saved}; "
                  "holdout: " + ", ".join(f"{k} {reg.metrics[k]:.4f}" for k in ("auc", "ndcg@10", "recall@10")))
    console.print(f"champion: {'[green]yes[/]' if reg.champion else '[yellow]no[/]'} — {reg.reason}")


@train_app.command("online")
def train_online(
    data: DataOption = None,
    window: Annotated[float, typer.Option(min=0.01, max=0.9,
                                          help="Replay this latest share of the history as the stream.")] = 0.2,
    publish_every: Annotated[int, typer.Option(min=100, help="Examples per update (one candidate version each).")
                             ] = 4_000,
) -> None:
    """Update the online ranker from the dataset's latest window replayed as the stream; register each update
    that passes its sanity check.

    The batch path runs as of the window's start in a workspace under $TANDEM_HOME/evaluate/ (the served
    champion and online store are not touched); the window's events then become the labelled examples the
    stream's sink emits, with the features serving computes."""
    from models.jobs import update_online_model
    from models.registry import RegistryError
    from models.replay_store import ReplayError
    from models.rows import FeatureSkewError
    from models.train import TrainingError
    from pipelines.batch.evaluation import online_training_examples
    from pipelines.batch.outputs import BatchOutputsError

    settings = _settings()
    _quiet_mlflow()
    data = data or settings.data_dir
    _read_dataset(data)  # a clear error for a missing or malformed dataset before any batch run
    try:
        with progress_bar("replaying the stream into labelled examples") as update:
            examples = online_training_examples(settings, data, window, log=lambda msg: console.print(f"  {msg}"),
                                                progress=update)
        with progress_bar("updating the online ranker") as update:
            result = update_online_model(examples, settings.mlflow_uri, publish_every=publish_every, progress=update)
    except (BatchOutputsError, FeatureSkewError, RegistryError, ReplayError, TrainingError) as exc:
        fail(str(exc))
    console.print(f"online ranker: {result.examples:,} examples in {result.updates} updates")
    for reg in result.registrations:
        state = f"v{reg.version} champion" if reg.champion else "not registered"
        console.print(f"  {state}: sanity AUC {reg.metrics['sanity_auc']:.4f} — {reg.reason}")


@app.command("evaluate")
def evaluate(
    data: DataOption = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON here.")] = None,
    k: Annotated[int, typer.Option(min=1, help="List length (the protocol's default is 10).")] = 10,
    online_weight: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="The hybrid's blend weight. "
                                                        "Default: chosen on the validation split (a second batch "
                                                        "run as of T_val, the history's 80th percentile, whose "
                                                        "replay also trains the online model the test replay "
                                                        "starts from; given, the online model starts untrained "
                                                        "unless --through-stack runs that replay).")] = None,
    through_stack: Annotated[bool, typer.Option("--through-stack", help="Also ask the real stack the first "
                                                "--max-queries queries after T — Kafka → `tandem stream run` → "
                                                "Redis → POST /recommend on `tandem serve`, in a Redis DB, topic, "
                                                "ports and MLflow of the evaluation's own — and report how often "
                                                "its top-k equals the in-process replay's (both with one frozen "
                                                "online model). Needs Redis and Kafka (started if local).")] = False,
    max_queries: Annotated[int, typer.Option(min=1, help="With --through-stack: how many queries after T to ask "
                                                         "through the stack.")] = 2000,
) -> None:
    """`tandem batch run` as of T (80th percentile of time) in a workspace of its own, then replay every event
    after T through serving's ranking and the stream's fold functions; HitRate/NDCG/Recall@k for popularity,
    batch-only, stream-only and hybrid in one table. Nothing touches the served champion or the online store."""
    from models.evaluate import EvaluationConfig, EvaluationError, write_report
    from models.rows import FeatureSkewError
    from models.train import TrainingError
    from pipelines.batch.evaluation import evaluate_dataset
    from pipelines.dataset import DatasetError

    settings = _settings()
    data = data or settings.data_dir
    config = EvaluationConfig(k=k, online_weight=online_weight)
    try:
        with progress_bar(f"evaluating on {data}: batch path before T, replay after") as update:
            result = evaluate_dataset(settings, data, config, log=lambda msg: console.print(f"  {msg}"),
                                      progress=update, validation_always=through_stack)
    except (DatasetError, EvaluationError, TrainingError, FeatureSkewError) as exc:
        fail(str(exc))
    if through_stack:
        from tandem.through_stack import ThroughStackError, run_through_stack

        try:
            with progress_bar(f"asking the stack the first {max_queries:,} queries after T") as update:
                result.details["through_stack"] = run_through_stack(
                    settings, data, result, max_queries, log=lambda msg: console.print(f"  {msg}"), progress=update)
        except (ThroughStackError, EvaluationError, FeatureSkewError) as exc:
            fail(f"--through-stack: {exc}")
    table = Table(title=f"tandem evaluate — {result.details['queries']:,} replayed queries after "
                        f"{result.details['split_ts']}")
    for col in ("system", f"HitRate@{k}", f"NDCG@{k}", f"Recall@{k}"):
        table.add_column(col)
    for row in result.rows:
        table.add_row(row["name"], f"{row[f'hitrate@{k}']:.4f}", f"{row[f'ndcg@{k}']:.4f}",
                      f"{row[f'recall@{k}']:.4f}")
    console.print(table)
    groups = result.details["by_user"]
    split = Table(title=f"NDCG@{k} by user: new (no event before T, they start cold) and returning")
    split.add_column("system")
    for group, g in groups.items():
        split.add_column(f"{group} ({g['queries']:,} queries)")
    for row in result.rows:
        split.add_row(row["name"], *(f"{g['ndcg'][row['name']]:.4f}" for g in groups.values()))
    console.print(split)
    choices = result.details["choices"]
    console.print("each stream signal alone (with the trend): " + ", ".join(
        f"{name} NDCG@{k} {v['ndcg']:.4f}" for name, v in result.details["stream_signals"].items()))
    console.print(f"mode: {result.mode}")
    console.print(f"hybrid online weight {choices['online_weight']:g}: {choices['chosen_on']}"
                  + (f" (T_val {choices['T_val']}, {choices['validation_queries']:,} queries)"
                     if "T_val" in choices else ""))
    stack = result.details.get("through_stack")
    if stack:
        console.print(f"through the stack: {stack['identical']:,} of {stack['asked']:,} top-{k} lists identical to "
                      f"the in-process replay's ({stack['share']:.2%}); NDCG@{k} "
                      f"{stack[f'through_stack_ndcg@{k}']:.4f} through the stack vs "
                      f"{stack[f'in_process_ndcg@{k}']:.4f} in-process, HitRate@{k} "
                      f"{stack[f'through_stack_hitrate@{k}']:.4f} vs {stack[f'in_process_hitrate@{k}']:.4f}; "
                      f"{stack['skipped_exclude_limit']:,} not asked (more seen items than one request excludes), "
                      f"{stack['skipped_seen_item']:,} about an item seen before; {stack['seconds']['total']:.0f}s")
        for d in stack["first_disagreements"]:
            console.print(f"  query {d['query']} ({d['user_id']}): in-process {d['in_process']} / through the "
                          f"stack {d['through_stack']}")
    md_path, js_path = write_report(result, settings.home / "reports", json_path)
    console.print(f"report: {md_path} and {js_path}" + (f"; JSON also at {json_path}" if json_path else ""))


@app.command("monitor")
def monitor(
    data: DataOption = None,
    reference: Annotated[str, typer.Option(help="What recent values are compared with: 'window' (the dataset's "
                                                "earliest window vs its latest), 'offline' (the offline store's "
                                                "earliest feature snapshot vs its latest) or 'offline:YYYY-MM-DD'.")
                         ] = "window",
    threshold: Annotated[float, typer.Option(min=0.0, help="PSI above which a feature is flagged as drifted.")] = 0.2,
    window: Annotated[float, typer.Option(min=0.05, max=0.5, help="Window length as a share of the event time "
                                                                  "span (reference=window).")] = 0.25,
    stream_metrics: Annotated[str | None, typer.Option(help="The stream processor's Prometheus URL (default: "
                                                            "http://127.0.0.1:$TANDEM_STREAM_METRICS_PORT/metrics, "
                                                            "port 9108).")] = None,
) -> None:
    """Feature drift (PSI), model drift over time and stream lag/freshness → HTML + JSON report; flags retraining."""
    import os

    from models.monitor import MonitorError, run_monitor, write_report
    from pipelines.dataset import DatasetError

    settings = _settings()
    data = data or settings.data_dir
    url = stream_metrics or f"http://127.0.0.1:{os.environ.get('TANDEM_STREAM_METRICS_PORT', '9108')}/metrics"
    try:
        with progress_bar(f"monitoring ({reference})", total=3) as update:
            result = run_monitor(data, settings.offline_dir, reference=reference, threshold=threshold,
                                 window=window, stream_url=url, progress=update)
    except (MonitorError, DatasetError) as exc:
        fail(str(exc))
    table = Table(title=f"feature drift (PSI, threshold {threshold})")
    for col in ("feature", "source", "PSI", "n ref", "n recent", ""):
        table.add_column(col)
    for f in result.features:
        table.add_row(f.name, f.source, f"{f.psi:.4f}", f"{f.n_reference:,}", f"{f.n_recent:,}",
                      "[red]DRIFT[/]" if f.flagged else "[green]ok[/]")
    console.print(table)
    model = result.model
    if model.get("days"):
        console.print(f"model drift: {model['metric']} reference {model['reference_hitrate']:.4f} → recent "
                      f"{model['recent_hitrate']:.4f} ({model['relative_drop']:.1%} lower) — "
                      + ("[red]DRIFT[/]" if model["flagged"] else "[green]ok[/]"))
    stream = result.stream
    console.print("stream: " + (f"lag {stream['lag_total']:,.0f}, freshness p99 ≤ {stream['freshness_p99_s']} s"
                                if stream["state"] == "running" else f"not running ({stream['url']})"))
    html_path, json_path, marker = write_report(result, settings.home / "reports")
    console.print(f"report: {html_path} and {json_path}")
    if marker:
        console.print(f"[yellow]retraining requested[/] ({', '.join(f.name for f in result.flagged)}): {marker}")


@app.command("ab-report")
def ab_report_command(
    decisions: Annotated[Path | None, typer.Option(help="Serving's decision log (default: TANDEM_DECISION_LOG).")
                         ] = None,
    events: Annotated[Path | None, typer.Option(help="Feedback events: a dataset directory, or a JSON-lines or "
                                                     "parquet file in the event schema (default: settings' data "
                                                     "dir).")] = None,
    window: Annotated[float, typer.Option(min=1.0, help="Seconds after a response in which feedback on a shown "
                                                        "item counts for it.")] = 1_800.0,
    control: Annotated[str | None, typer.Option(help="Variant the others are compared with (default: batch_only, "
                                                     "else the first by name).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """CTR and conversion per A/B variant with 95% Wilson intervals, and each variant's difference from control."""
    import json

    from models.ab_report import ABReportError, ab_report

    settings = _settings()
    decisions = decisions or settings.decision_log
    events = events or settings.data_dir
    try:
        with progress_bar("joining decisions with feedback", total=1) as update:
            report = ab_report(decisions, events, window_s=window, control=control)
            update(1)
    except ABReportError as exc:
        fail(str(exc))

    def ci(i: dict) -> str:
        return f"{i['estimate']:.4f} [{i['low']:.4f}, {i['high']:.4f}]"

    table = Table(title=f"A/B: feedback within {window:g} s of a response (95% Wilson intervals)")
    for col in ("variant", "responses", "clicked", "CTR", "converted", "conversion"):
        table.add_column(col)
    for v in report["variants"]:
        table.add_row(v["variant"], f"{v['responses']:,}", f"{v['clicked']:,}", ci(v["ctr"]), f"{v['converted']:,}",
                      ci(v["conversion"]))
    console.print(table)
    for c in report["comparisons"]:
        console.print(f"{c['variant']} − {c['control']}: CTR {ci(c['ctr_diff'])}, "
                      f"conversion {ci(c['conversion_diff'])}")
    reports = settings.home / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    from datetime import UTC, datetime

    out = reports / f"ab-report-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    for path in filter(None, (out, json_path)):
        path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"report: {out}" + (f"; also {json_path}" if json_path else ""))


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default TANDEM_SERVE_HOST, loopback).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default TANDEM_SERVE_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default TANDEM_SERVE_WORKERS).")] = None,
) -> None:
    """Serve /recommend and /feedback with BentoML (API docs at /docs, metrics at /metrics)."""
    import os
    import sys

    from tandem.settings import PROJECT_ROOT, is_loopback

    settings = _settings()
    host = host or settings.serve_host
    port = port or settings.serve_port
    if not is_loopback(host) and not settings.api_key:
        err_console.print(f"[yellow]warning:[/] binding {host} without TANDEM_API_KEY: anyone who can reach "
                          "this address can call the API")
    env = {**os.environ, "TANDEM_SERVE_HOST": host, "TANDEM_SERVE_PORT": str(port),
           "BENTOML_DO_NOT_TRACK": "True"}
    if workers:
        env["TANDEM_SERVE_WORKERS"] = str(workers)
    console.print(f"serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:Recommender", "--host", host,
           "--port", str(port), "--working-dir", str(PROJECT_ROOT)]
    os.execvpe(cmd[0], cmd, env)


@batch_app.command("run")
def batch_run(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Compute features as of this ISO time (UTC if no zone); "
                                              "default: the end of the last event's day, at most now.")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset directory (default: settings' data dir).")] = None,
    since: Annotated[str | None, typer.Option(help="Backfill: recompute each day from this date (YYYY-MM-DD).")] = None,
    history_days: Annotated[int, typer.Option(min=1, help="Days of snapshots a first run computes.")] = 35,
    train_days: Annotated[int, typer.Option(min=1, help="Days of labelled examples in the training set.")] = 28,
    negatives: Annotated[int, typer.Option(min=0, help="Sampled negatives per positive example.")] = 4,
    models: Annotated[bool, typer.Option(help="Run the model steps (train + register the batch ranker, candidate "
                                              "lists) between the training set and materialize.")] = True,
    materialize: Annotated[bool, typer.Option(help="Publish the latest rows to the online store at the end "
                                                   "(--no-materialize: offline tables and the registry only).")]
    = True,
) -> None:
    """Validate raw events, compute features, feast apply, build the training set, train, materialize."""
    from datetime import date

    from models.registry import RegistryError
    from models.train import TrainingError
    from pipelines.batch.run import BatchOptions, default_steps, insert_steps, parse_as_of, run_batch
    from pipelines.batch.sources import BatchError
    from validation.checkpoints import ValidationFailed

    settings = _settings()
    try:
        options = BatchOptions(dataset_dir=data or settings.data_dir,
                               as_of=parse_as_of(as_of) if as_of else None,
                               since=date.fromisoformat(since) if since else None, history_days=history_days,
                               train_days=train_days, negatives_per_positive=negatives)
    except ValueError as exc:
        fail(str(exc) if isinstance(exc, BatchError) else f"--since {since!r} is not a date (expected YYYY-MM-DD)")
    from models.monitor import consume_retrain_request, retrain_request

    reports = settings.home / "reports"
    request = retrain_request(reports)
    if request is not None:
        drifted = ", ".join(f"{f.get('name')} (PSI {f.get('psi')})" for f in request.get("features", []))
        console.print(f"[yellow]retraining requested[/] by `tandem monitor` at {request.get('requested')}: {drifted}")
        if not models:
            console.print("  running the model steps despite --no-models")
            models = True
    steps = default_steps()
    if models:
        from models.batch_steps import model_steps

        _quiet_mlflow()
        steps = insert_steps(steps, before="materialize", new=model_steps())
    if not materialize:
        steps = [step for step in steps if step.name != "materialize"]
    with progress_bar("batch run") as update:
        def on_step(i, total, step):
            update(i, total, description=f"batch run: {step.description}" if i < total else "batch run")

        try:
            ctx, results = run_batch(settings, options, steps=steps, log=lambda msg: console.print(f"  {msg}"),
                                     on_step=on_step)
        except ValidationFailed as exc:
            fail(f"validation failed; nothing was published\n{exc}")
        except (BatchError, TrainingError, RegistryError) as exc:
            fail(str(exc))
    total = sum(r.seconds for r in results)
    if request is not None:
        console.print(f"retrain request handled: {consume_retrain_request(reports)}")
    console.print(f"[green]batch run done[/] in {total:.1f}s as of {ctx.as_of.isoformat()}; "
                  f"data docs: {ctx.extras['validator'].docs if 'validator' in ctx.extras else '-'}")


@batch_app.command("materialize")
def batch_materialize(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Publish each entity's latest row up to this ISO time "
                                              "(UTC if no zone); default: the last batch run's as-of.")] = None,
) -> None:
    """Publish the offline store's latest rows to the online store: the materialize step of `tandem batch run`
    alone (the same views and interval), e.g. into another Redis (TANDEM_REDIS_URL) than the run wrote to."""
    from redis.exceptions import RedisError

    from pipelines.batch import feast_repo
    from pipelines.batch.outputs import last_published
    from pipelines.batch.run import ONLINE_VIEWS, materialize_interval, parse_as_of
    from pipelines.batch.sources import BatchError
    from pipelines.stream.online_format import OnlineFormatError

    settings = _settings()
    try:
        when = parse_as_of(as_of) if as_of else last_published()
    except BatchError as exc:
        fail(str(exc))
    if when is None:
        fail(f"nothing published under {settings.offline_dir} yet: run `tandem batch run` first")
    start, end = materialize_interval(when)
    try:
        summary = feast_repo.materialize(settings, start, end, list(ONLINE_VIEWS))
    except (OnlineFormatError, KeyError, ValueError, RedisError) as exc:
        fail(f"materialize into {settings.redis_url} failed: {exc}")
    console.print(f"[green]materialized[/] {', '.join(ONLINE_VIEWS)} from {start.isoformat()} to {end.isoformat()} "
                  f"into {settings.redis_url}" + (f": {summary}" if summary.strip() else ""))


@stream_app.command("run")
def stream_run(
    data: Annotated[Path | None, typer.Option(help="Dataset directory whose items.parquet gives item categories "
                                                   "(default: settings' data dir if it has one).")] = None,
    group: Annotated[str, typer.Option(help="Kafka consumer group; instances in one group split the partitions.")]
    = "tandem-stream",
    max_batch: Annotated[int, typer.Option(min=1, help="Most records per micro-batch.")] = 5000,
    linger_ms: Annotated[int, typer.Option(min=0, help="How long a micro-batch collects records after its first.")]
    = 25,
    max_wait_ms: Annotated[int, typer.Option(min=0, help="Longest the broker holds a fetch while no record is there "
                                                         "(records are returned as soon as they arrive).")] = 100,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port (0: off; default: "
                                                          "TANDEM_STREAM_METRICS_PORT or 9108).")] = None,
    session_timeout_ms: Annotated[int, typer.Option(min=6000, help="How soon the group notices a dead instance.")]
    = 10_000,
    example_sink: Annotated[str | None, typer.Option(help="Online-model example sink, package.module:factory "
                                                           "(default: none).")] = None,
    until_idle: Annotated[float | None, typer.Option(help="Stop after this many seconds without records.")] = None,
    log_level: Annotated[str, typer.Option(help="Log level of the JSON logs on stderr.")] = "INFO",
) -> None:
    """Run one stream processor: Kafka → session and trending features in Redis (and the offline log)."""
    from pipelines.stream.examples import load_example_sink
    from pipelines.stream.offline_log import ensure_offline_tables
    from pipelines.stream.processor import ProcessorConfig, StreamProcessor, configure_logging, load_catalog
    from tandem.topics import ensure_topics

    settings = _settings()
    configure_logging(log_level.upper())
    if data is None and (settings.data_dir / "items.parquet").exists():
        data = settings.data_dir
    try:
        catalog = load_catalog(data)
        sink = load_example_sink(example_sink)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    ensure_topics(settings)
    ensure_offline_tables()
    config = ProcessorConfig(group_id=group, max_batch=max_batch, linger_ms=linger_ms, max_wait_ms=max_wait_ms,
                             metrics_port=settings.stream_metrics_port if metrics_port is None else metrics_port,
                             session_timeout_ms=session_timeout_ms, stop_after_idle_s=until_idle)
    StreamProcessor(settings, config, catalog=catalog, sink=sink).run()


@stream_app.command("replay")
def stream_replay(
    data: Annotated[Path | None, typer.Option(help="Dataset directory to replay (default: settings' data dir).")]
    = None,
    rate: Annotated[float, typer.Option(min=0, help="Events per second; 0 = as fast as possible.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N events (event-time order).")]
    = None,
) -> None:
    """Replay a dataset's events into the interactions topic in event-time order, keyed by user."""
    from pipelines.dataset import DatasetError
    from pipelines.stream.producer import DeliveryError, EventProducer, load_dataset_events, replay
    from tandem.topics import ensure_topics

    settings = _settings()
    data = data or settings.data_dir
    try:
        events = load_dataset_events(data)
    except DatasetError as exc:
        fail(str(exc))
    if limit:
        events = events[:limit]
    ensure_topics(settings)
    try:
        with EventProducer(settings) as producer, \
                progress_bar(f"replaying {len(events):,} events into {settings.topic}", total=len(events)) as update:
            seconds = replay(producer, events, rate=rate or None, progress=update)
    except DeliveryError as exc:
        fail(f"replay incomplete: {exc}")
    console.print(f"[green]replayed[/] {len(events):,} events in {seconds:.1f}s "
                  f"({len(events) / max(seconds, 1e-9):,.0f} events/s) into {settings.topic}")


@app.command("demo")
def demo(
    size: Annotated[str, typer.Option(help="Preset dataset size (see `tandem data generate --help`).")] = "demo",
    users: Annotated[int, typer.Option(min=1, max=20, help="Users to show before/after streamed clicks.")] = 3,
    clicks: Annotated[int, typer.Option(min=1, max=6, help="Streamed clicks per user.")] = 4,
    keep_running: Annotated[bool, typer.Option(help="Leave the stream processor and server running.")] = False,
    data: Annotated[Path | None, typer.Option(help="Dataset directory (default: <data dir>/demo).")] = None,
) -> None:
    """Run tandem end to end, then show recommendations change after a burst of streamed clicks."""
    from tandem.demo import DemoError, DemoOptions, run_demo

    settings = _settings()
    try:
        changed = run_demo(settings, DemoOptions(size=size, users=users, clicks=clicks, keep_running=keep_running,
                                                 data_dir=data))
    except DemoError as exc:
        fail(str(exc))
    if changed == 0:
        fail("no user's recommendations changed after the streamed clicks")


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Skip the 10M-event batch run and shorten the rest "
                                        "(under 5 minutes).")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run just this benchmark (repeatable): serving, "
                                                   "online_features, stream_ingest, materialize, batch_path, "
                                                   "quality.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where the JSON and markdown go (default benchmarks/results/).")]
    = None,
) -> None:
    """Measure DESIGN.md §6: tandem's path vs the stock one, same run, same data; needs `make demo` first."""
    import warnings

    from benchmarks.run import RESULTS_DIR, BenchSetupError, run_benchmarks

    warnings.filterwarnings("ignore", message="The spark data source API is an experimental feature")
    settings = _settings()
    try:
        report, md = run_benchmarks(settings, quick=quick, names=only, out_dir=out or RESULTS_DIR,
                                    progress=console.print)
    except BenchSetupError as exc:
        fail(str(exc))
    console.print(md.read_text())
    console.print(f"[green]wrote[/] {md} and {md.with_suffix('.json')}")
    failed = [r.title for r in report.results if r.error]
    if failed:
        fail(f"{len(failed)} benchmark(s) failed: {', '.join(failed)} (their errors are in the report)")


@app.command("env")
def env() -> None:
    """Print shell exports for the settings feature_repo/feature_store.yaml reads: eval "$(tandem env)"."""
    settings = _settings()
    for key, value in settings.feast_environment().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def _print_dataset(out: Path, meta: dict) -> None:
    counts = meta.get("counts", {})

    def n(key: str) -> str:
        value = counts.get(key)
        return f"{value:,}" if isinstance(value, int) else "?"

    console.print(f"[green]wrote[/] {out}: {n('events')} events, {n('users')} users, {n('items')} items, "
                  f"{meta.get('first_ts', '?')} → {meta.get('last_ts', '?')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
