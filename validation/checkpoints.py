"""Run a suite as a Great Expectations checkpoint and turn the result into a report a person can act on.

The GX project lives in $TANDEM_HOME/gx (suites, validation definitions, checkpoints);
every run rebuilds the HTML data docs at $TANDEM_HOME/gx/uncommitted/data_docs/local_site/.
A pandas frame is checked by GX's pandas engine; a Spark DataFrame by its Spark engine, on
the batch's own SparkSession, so a feature table of tens of millions of rows is checked where
it was computed instead of being collected into the driver.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tandem.settings import Settings

DATASOURCE = "tandem"
SPARK_DATASOURCE = "tandem_spark"
# validation results kept per checkpoint; data docs rebuild over all of them on every run
KEEP_RESULTS = 20


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold."""

    expectation: str
    column: str | None
    unexpected_count: int | None
    element_count: int | None
    detail: str

    def describe(self) -> str:
        target = f"({self.column})" if self.column else ""
        if self.unexpected_count is not None:
            return (f"{self.expectation}{target} failed on {self.unexpected_count} of {self.element_count} rows"
                    f"{self.detail}")
        return f"{self.expectation}{target} failed{self.detail}"


@dataclass
class ValidationReport:
    """The outcome of one checkpoint."""

    name: str
    rows: int
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    docs: Path | None = None

    @property
    def success(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        if self.success:
            return f"{self.name}: {self.evaluated} expectations passed on {self.rows} rows"
        lines = [f"{self.name}: {len(self.failures)} of {self.evaluated} expectations failed on {self.rows} rows:"]
        lines += [f"  - {f.describe()}" for f in self.failures]
        if self.docs:
            lines.append(f"  data docs: {self.docs}")
        return "\n".join(lines)


class ValidationFailed(RuntimeError):
    """A checkpoint failed; the message lists each failed expectation and how many rows broke it."""

    def __init__(self, reports: list[ValidationReport]):
        self.reports = reports
        super().__init__("\n".join(r.describe() for r in reports if not r.success))


def _condition_text(condition: Any) -> str:
    """A row condition as a person reads it: event_type == 'rating'."""
    if isinstance(condition, dict) and {"column", "operator", "parameter"} <= set(condition):
        column = condition["column"].get("name") if isinstance(condition["column"], dict) else condition["column"]
        return f"{column} {condition['operator']} {condition['parameter']!r}"
    return str(condition)


def _failure(result: Any) -> Failure:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
    res = result.result or {}
    detail = ""
    if result.exception_info and result.exception_info.get("raised_exception"):
        detail = f": {result.exception_info.get('exception_message')}"
    elif res.get("partial_unexpected_list"):
        sample = ", ".join(repr(v) for v in res["partial_unexpected_list"][:3])
        detail = f" (e.g. {sample})"
    elif "observed_value" in res:
        detail = f" (observed {res['observed_value']!r})"
    bounds = {k: kwargs[k] for k in ("min_value", "max_value", "value_set", "column_set") if kwargs.get(k) is not None}
    if bounds:
        detail += "; expected " + ", ".join(f"{k}={v}" for k, v in bounds.items())
    if kwargs.get("row_condition"):
        detail += f" where {_condition_text(kwargs['row_condition'])}"
    return Failure(expectation=config.type, column=column, unexpected_count=res.get("unexpected_count"),
                   element_count=res.get("element_count"), detail=detail)


class Validator:
    """A file-backed GX project under $TANDEM_HOME/gx that checks pandas or Spark frames against tandem's suites."""

    def __init__(self, settings: Settings):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        self._gx = gx
        self.context = gx.get_context(mode="file", project_root_dir=str(settings.home))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.context.variables.save()
        self.source = self.context.data_sources.add_or_update_pandas(DATASOURCE)
        self._spark_source = None
        self.docs = Path(self.context.root_directory) / "uncommitted" / "data_docs" / "local_site" / "index.html"

    def _source_for(self, data: Any):
        if isinstance(data, pd.DataFrame):
            return self.source
        if type(data).__module__.startswith("pyspark.sql"):
            if self._spark_source is None:
                # no spark_config: GX reuses the active session (the batch run's) instead of starting its own
                self._spark_source = self.context.data_sources.add_or_update_spark(SPARK_DATASOURCE)
            return self._spark_source
        raise TypeError(f"a checkpoint checks a pandas or Spark DataFrame, not {type(data).__name__}")

    def _batch_definition(self, source, name: str):
        try:
            asset = source.get_asset(name)
        except LookupError:
            asset = source.add_dataframe_asset(name)
        try:
            return asset.get_batch_definition(name)
        except KeyError:
            return asset.add_batch_definition_whole_dataframe(name)

    def _prune_results(self, name: str) -> None:
        results = Path(self.context.root_directory) / "uncommitted" / "validations" / name
        if results.is_dir():
            files = sorted(results.rglob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in files[KEEP_RESULTS:]:
                old.unlink(missing_ok=True)

    def _forget(self, name: str) -> None:
        """Drop the stored checkpoint and validation definition called `name`.

        Each run rebuilds them; a stored one can point at an asset that no longer exists (the datasources
        are re-created per process, and a name may move between the pandas and the Spark engine), and GX
        cannot even load such a definition to replace it.
        """
        for store in (self.context.checkpoint_store, self.context.validation_definition_store):
            key = store.get_key(name=name, id=None)
            if store.has_key(key):
                store.remove_key(key)

    def run(self, name: str, df: Any, expectations: list) -> ValidationReport:
        """Run checkpoint `name` (suite, validation definition and checkpoint of that name) on a pandas or Spark
        DataFrame."""
        gx = self._gx
        source = self._source_for(df)
        self._forget(name)
        suite = self.context.suites.add_or_update(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=self._batch_definition(source, name), suite=suite))
        checkpoint = self.context.checkpoints.add_or_update(gx.Checkpoint(
            name=name, validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}))
        self._prune_results(name)
        if source is self.source:
            result = checkpoint.run(batch_parameters={"dataframe": df})
            rows = len(df)
        else:
            try:  # GX caches the frame for its passes over it; the count then reads the cache
                result = checkpoint.run(batch_parameters={"dataframe": df})
                rows = df.count()
            finally:
                df.unpersist()
        report = ValidationReport(name=name, rows=rows, evaluated=0, docs=self.docs)
        for run_result in result.run_results.values():
            for r in run_result.results:
                report.evaluated += 1
                if not r.success:
                    report.failures.append(_failure(r))
        return report
