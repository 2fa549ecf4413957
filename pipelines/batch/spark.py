"""The one SparkSession a batch process uses, configured from feature_repo/feature_store.yaml.

Feast's Spark offline store and spark.engine pick up the active session, so the feature jobs,
historical retrieval and materialization all share one JVM.
"""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from tandem.settings import Settings, export_feast_environment

# small defaults suit one machine; a cluster master gets Spark's own defaults for the rest
LOCAL_CONF = {
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    # Feast and pandas read these files too: plain µs timestamps, never INT96 (DESIGN §8)
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def spark_session(settings: Settings) -> SparkSession:
    """Return the active SparkSession, or start one on settings.spark_master with tandem's configuration."""
    export_feast_environment(settings)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("tandem-batch").master(settings.spark_master)
    for key, value in _feature_store_spark_conf().items():
        builder = builder.config(key, value)
    for key, value in LOCAL_CONF.items():
        builder = builder.config(key, value)
    builder = builder.config("spark.driver.memory", os.environ.get("TANDEM_SPARK_DRIVER_MEMORY") or driver_memory())
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def driver_memory(physical_bytes: int | None = None) -> str:
    """The driver heap when TANDEM_SPARK_DRIVER_MEMORY is unset: a quarter of the machine's memory, 2g to 8g.

    In local mode the driver runs every task, and a training set is collected into it through Arrow;
    2g ran out of heap collecting the training set of a 10M-event run.
    """
    if physical_bytes is None:
        physical_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{max(2, min(8, physical_bytes // 4 // 2**30))}g"


def _feature_store_spark_conf() -> dict[str, str]:
    """spark_conf from feature_store.yaml, so the batch jobs and Feast agree on Spark's settings."""
    import yaml

    from pipelines.batch.feast_repo import FEATURE_REPO

    raw = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    conf = (raw.get("offline_store") or {}).get("spark_conf") or {}
    return {k: str(v) for k, v in conf.items() if "${" not in str(v)}
