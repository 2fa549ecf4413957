"""The batch path's handle on feature_repo/: load its definitions, `feast apply` it, materialize it.

`apply_repo` runs the same code as `feast apply` in feature_repo/ (including its check that
every SparkSource can be read), so what tandem publishes is what a Feast user would.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path

import pyarrow as pa

from tandem.settings import PROJECT_ROOT, Settings, export_feast_environment

FEATURE_REPO = PROJECT_ROOT / "feature_repo"
TIMESTAMP_FIELD = "event_timestamp"


@contextlib.contextmanager
def _in_repo() -> Iterator[Path]:
    """Feast imports repo files as top-level modules relative to the working directory."""
    cwd = os.getcwd()
    if str(FEATURE_REPO) not in sys.path:
        sys.path.append(str(FEATURE_REPO))
    os.chdir(FEATURE_REPO)
    try:
        yield FEATURE_REPO
    finally:
        os.chdir(cwd)


def _forget_repo_modules() -> None:
    """Drop feature_repo/'s modules from sys.modules: their sources bake in paths from settings at import."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(FEATURE_REPO):
            del sys.modules[name]


def repo_contents():
    """Every Feast object defined in feature_repo/, as the current settings place them."""
    return _repo_contents(os.environ.get("TANDEM_OFFLINE_DIR", ""), os.environ.get("TANDEM_HOME", ""))


@cache
def _repo_contents(_offline_dir: str, _home: str):
    from feast.repo_operations import parse_repo

    _forget_repo_modules()
    with _in_repo() as repo:
        return parse_repo(repo)


def feature_view(name: str):
    """The FeatureView called `name` in feature_repo/; KeyError lists the ones that exist."""
    views = {fv.name: fv for fv in repo_contents().feature_views}
    if name not in views:
        raise KeyError(f"no feature view {name!r} in {FEATURE_REPO}; defined: {', '.join(sorted(views))}")
    return views[name]


def feature_service(name: str):
    """The FeatureService called `name` in feature_repo/."""
    services = {fs.name: fs for fs in repo_contents().feature_services}
    if name not in services:
        raise KeyError(f"no feature service {name!r} in {FEATURE_REPO}; defined: {', '.join(sorted(services))}")
    return services[name]


def feature_names(view_name: str) -> list[str]:
    """The feature columns of a view, in schema order."""
    return [f.name for f in feature_view(view_name).features]


def arrow_schema(view_name: str) -> pa.Schema:
    """The parquet schema of a view's offline table, derived from the view: join keys, event_timestamp, features."""
    from feast.type_map import feast_value_type_to_pa
    from feast.types import from_feast_to_pyarrow_type

    fv = feature_view(view_name)
    entities = {e.name: e for e in repo_contents().entities}
    fields = [pa.field(entities[name].join_key, feast_value_type_to_pa(entities[name].value_type), nullable=False)
              for name in fv.entities]
    fields.append(pa.field(TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC"), nullable=False))
    fields += [pa.field(f.name, from_feast_to_pyarrow_type(f.dtype)) for f in fv.features]
    created = fv.batch_source.created_timestamp_column
    if created:  # the stream's log tables say when each row was written (see data_sources.py)
        fields.append(pa.field(created, pa.timestamp("us", tz="UTC"), nullable=False))
    return pa.schema(fields)


def source_path(view_name: str) -> Path:
    """The offline table (parquet directory) a view's batch source reads."""
    source = feature_view(view_name).batch_source
    return Path(source.path)


def feature_store(settings: Settings):
    """A FeatureStore over feature_repo/ with the placeholders filled from settings."""
    from feast import FeatureStore

    export_feast_environment(settings)
    return FeatureStore(repo_path=str(FEATURE_REPO))


def apply_repo(settings: Settings) -> str:
    """Run `feast apply` for feature_repo/ in this process; return what it printed."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    export_feast_environment(settings)
    out = io.StringIO()
    _forget_repo_modules()
    with _in_repo() as repo, contextlib.redirect_stdout(out):
        config = load_repo_config(repo, repo / "feature_store.yaml")
        apply_total(config, repo, skip_source_validation=False)
    return out.getvalue()


def materialize(settings: Settings, start: datetime, end: datetime, views: list[str] | None = None) -> str:
    """`feast materialize start end [views]`; return a summary of what was written.

    With TANDEM_MATERIALIZER=tandem (the default) tandem's column-wise writer
    (pipelines/batch/materialize.py) writes the same Redis bytes and registry record as Feast;
    with `feast` it is Feast's own FeatureStore.materialize through feature_store.yaml's batch engine.
    """
    store = feature_store(settings)
    if settings.materializer == "tandem":
        from pipelines.batch.materialize import materialize as tandem_materialize

        reports = tandem_materialize(store, start, end, views)
        return "; ".join(f"{r.view}: {r.written:,} of {r.rows:,} rows written"
                         + (f" ({r.skipped_not_newer:,} not newer than online)" if r.skipped_not_newer else "")
                         + f" in {r.seconds:.2f} s" for r in reports)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        store.materialize(start_date=start, end_date=end, feature_views=views)
    return out.getvalue()
