"""The `tandem` command line: one entry point for every stage (DESIGN.md §3)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tandem.console import console, err_console, progress_bar
from tandem.settings import SettingsError, export_feast_environment, get_settings

app = typer.Typer(help="tandem: hybrid batch + streaming personalization.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
services_app = typer.Typer(help="Start, stop and inspect the local Redis, Kafka and MLflow.", no_args_is_help=True)
data_app = typer.Typer(help="Produce datasets in tandem's event schema.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(data_app, name="data")
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


@batch_app.command("run")
def batch_run(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Compute features as of this ISO time (UTC if no zone); "
                                              "default: the end of the last event's day, at most now.")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset directory (default: settings' data dir).")] = None,
    since: Annotated[str | None, typer.Option(help="Backfill: recompute each day from this date (YYYY-MM-DD).")] = None,
    history_days: Annotated[int, typer.Option(min=1, help="Days of snapshots a first run computes.")] = 35,
    train_days: Annotated[int, typer.Option(min=1, help="Days of labelled examples in the training set.")] = 28,
    negatives: Annotated[int, typer.Option(min=0, help="Sampled negatives per positive example.")] = 4,
) -> None:
    """Validate raw events, compute features, feast apply, build the training set, materialize (DESIGN.md §1)."""
    from datetime import date

    from pipelines.batch.run import BatchOptions, parse_as_of, run_batch
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
    with progress_bar("batch run") as update:
        def on_step(i, total, step):
            update(i, total, description=f"batch run: {step.description}" if i < total else "batch run")

        try:
            ctx, results = run_batch(settings, options, log=lambda msg: console.print(f"  {msg}"), on_step=on_step)
        except ValidationFailed as exc:
            fail(f"validation failed; nothing was published\n{exc}")
        except BatchError as exc:
            fail(str(exc))
    total = sum(r.seconds for r in results)
    console.print(f"[green]batch run done[/] in {total:.1f}s as of {ctx.as_of.isoformat()}; "
                  f"data docs: {ctx.extras['validator'].docs if 'validator' in ctx.extras else '-'}")


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
    from pipelines.stream.producer import EventProducer, load_dataset_events, replay
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
    with EventProducer(settings) as producer, \
            progress_bar(f"replaying {len(events):,} events into {settings.topic}", total=len(events)) as update:
        seconds = replay(producer, events, rate=rate or None, progress=update)
    console.print(f"[green]replayed[/] {len(events):,} events in {seconds:.1f}s "
                  f"({len(events) / max(seconds, 1e-9):,.0f} events/s) into {settings.topic}")


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
