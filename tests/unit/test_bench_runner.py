"""`tandem bench`'s runner and report (no services: the benchmarks themselves need `make demo`)."""

from dataclasses import replace

import pytest

from benchmarks.core import BenchResult, Row, percentiles
from benchmarks.run import MODULES, BenchSetupError, Report, check_ready, markdown, select
from tandem.settings import get_settings


def test_quick_skips_the_batch_path_and_names_select_in_report_order():
    assert [b.key for b in select(None, quick=True)] == [m for m in MODULES if m != "batch_path"]
    assert [b.key for b in select(None, quick=False)] == list(MODULES)
    assert [b.key for b in select(["quality", "serving"], quick=True)] == ["serving", "quality"]


def test_an_unknown_benchmark_is_named_with_the_known_ones():
    with pytest.raises(BenchSetupError, match=r"unknown benchmark\(s\) servng; expected any of serving, "):
        select(["servng"], quick=True)


def test_without_the_demo_dataset_the_run_says_to_make_demo(tmp_path):
    settings = replace(get_settings(), home=tmp_path)
    if settings.data_dir.parent != tmp_path:
        pytest.skip("TANDEM_DATA points outside TANDEM_HOME")
    with pytest.raises(BenchSetupError, match="make demo"):
        check_ready(settings)


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentiles(values) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentiles([]) == {}


def test_markdown_shows_targets_ratios_and_failures():
    ok = BenchResult("stream_ingest", "Stream ingest", rows=[
        Row("sustained ingest", "events/s", 12_345.0, 8_000.0, 1.543, "tandem / Feast push", "≥ 20,000 events/s",
            False)], notes=["one processor"])
    failed = BenchResult("serving", "/recommend over HTTP", error="Traceback ...\nRuntimeError: server died")
    report = Report(started="2026-11-26T10:00:00+00:00", quick=True,
                    machine={"cores": 2, "cpu": "x", "memory_gib": 23.5, "python": "3.11",
                             "load_average_at_start": [0.5, 0.4, 0.3]},
                    versions={"feast": "0.67.0"}, commit={"sha": "abc" * 10, "dirty": False}, results=[ok, failed])
    text = markdown(report)
    assert "| Stream ingest | sustained ingest | 12,345 events/s | 8,000 events/s | 1.54× tandem / Feast push " \
           "| ≥ 20,000 events/s | **no** |" in text
    assert "| /recommend over HTTP | **failed** |" in text and "RuntimeError: server died" in text
    assert "(--quick)" in text and "feast 0.67.0" in text and "* one processor" in text


def test_every_benchmark_module_declares_its_key():
    for name in MODULES:
        assert select([name], quick=False)[0].key == name
