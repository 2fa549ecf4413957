"""The notebooks that run the batch path: feature_exploration.ipynb against real Feast, Spark and Redis (it builds
its own tiny batch state), evaluation.ipynb through `tandem batch run` in the evaluation's own workspace."""

from __future__ import annotations

import pytest

from tests.unit.test_notebooks import execute, images, text


@pytest.mark.slow
def test_feature_exploration_notebook_builds_state_and_reads_feast(settings, tmp_path, monkeypatch):
    """`settings`: the suite's services up, and stopped after the session if it started them."""
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))  # no snapshots here: the notebook builds them
    for key in ("TANDEM_OFFLINE_DIR", "TANDEM_FEAST_REGISTRY", "TANDEM_DATA", "TANDEM_FEAST_REDIS"):
        monkeypatch.delenv(key, raising=False)
    nb = execute("feature_exploration.ipynb", timeout=600)
    out = text(nb)
    assert "building a tiny state" in out and "materialize" in out
    assert "user_features_v1" in out and "ranker_batch_v1" in out  # listed by FeatureStore
    assert "positive" in out  # the point-in-time training set was found and summarized
    assert "features equal online and offline" in out
    equal = [line for line in out.splitlines() if "features equal online and offline" in line][0]
    counts = equal.split(": ", 1)[1].split(" features")[0].split(" of ")
    assert counts[0] == counts[1], equal  # Redis serves exactly the latest offline snapshot
    assert images(nb) >= 4  # user and item histograms, snapshot means, training set by label
    assert (tmp_path / "home" / "notebook-state" / "offline" / "user_features").is_dir()


@pytest.mark.slow
def test_evaluation_notebook_runs_and_plots(tmp_path, monkeypatch):
    monkeypatch.delenv("TANDEM_NOTEBOOK_DATA", raising=False)
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))  # the evaluation's workspace goes there
    nb = execute("evaluation.ipynb", timeout=600)
    assert images(nb) >= 3  # the table's bars, quality over replay time, queries per day
    out = text(nb)
    assert "hybrid" in out and "batch-only" in out and "replayed queries" in out
