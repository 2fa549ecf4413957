"""`tandem evaluate` end to end on generated data and on the MovieLens CSV layout (no services needed)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from pipelines.dataset import read_events, read_items
from pipelines.generate import SIZES, generate_dataset
from pipelines.movielens import convert_movielens

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "small"
    generate_dataset(replace(SIZES["demo"], n_users=500, n_items=200, n_events=12_000, days=20), out)
    return out


def test_evaluate_prints_the_four_rows_and_writes_the_reports(small_dataset, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "TANDEM_HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "tandem", "evaluate", "--data", str(small_dataset),
                             "--json", str(tmp_path / "table.json")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("popularity", "batch-only", "stream-only", "hybrid"):
        assert name in result.stdout
    assert "in-process replay" in result.stdout
    assert "validation: batch run as of T_val" in " ".join(result.stdout.split())  # the weight was chosen there
    rows = {r["name"]: r for r in json.loads((tmp_path / "table.json").read_text())["rows"]}
    assert list(rows) == ["popularity", "batch-only", "stream-only", "hybrid"]
    assert rows["hybrid"]["ndcg@10"] > rows["batch-only"]["ndcg@10"]
    reports = sorted((home / "reports").glob("evaluate-*.md"))
    assert reports and "| hybrid |" in reports[-1].read_text()


def test_evaluate_runs_on_a_movielens_directory(small_dataset, tmp_path):
    """The generated interactions written as MovieLens CSVs (ratings only, no sessions), then converted."""
    from models.evaluate import EvaluationConfig
    from pipelines.batch.evaluation import evaluate_dataset
    from tandem.settings import Settings

    ev = read_events(small_dataset).to_pandas()
    items = read_items(small_dataset).to_pandas()
    pos = ev[ev.event_type != "view"].sort_values("ts").drop_duplicates(["user_id", "item_id"])
    ml = tmp_path / "ml"
    ml.mkdir()
    pd.DataFrame({"userId": pos.user_id.str[1:].astype(int), "movieId": pos.item_id.str[1:].astype(int),
                  "rating": 4.0, "timestamp": pd.to_datetime(pos.ts).astype("int64") // 10**6}).to_csv(
        ml / "ratings.csv", index=False)
    pd.DataFrame({"movieId": items.item_id.str[1:].astype(int), "title": items.title,
                  "genres": items.category}).to_csv(ml / "movies.csv", index=False)
    convert_movielens(ml, tmp_path / "converted")
    result = evaluate_dataset(Settings(home=tmp_path / "home"), tmp_path / "converted",
                              EvaluationConfig(online_update_every=200, online_weight=0.5))
    assert [r["name"] for r in result.rows] == ["popularity", "batch-only", "stream-only", "hybrid"]
    assert result.details["queries"] > 100 and result.details["dataset"]["source"] == "movielens"
    assert result.row("hybrid")["hitrate@10"] > 0


def test_evaluate_names_a_missing_dataset(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tandem", "evaluate", "--data", str(tmp_path / "nope")],
                            cwd=ROOT, env={**os.environ, "TANDEM_HOME": str(tmp_path)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "no dataset at" in result.stderr and "nope" in result.stderr


def test_a_year_1_event_is_named_before_any_batch_run(small_dataset, tmp_path):
    import shutil
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.evaluate import EvaluationError
    from pipelines.batch.evaluation import evaluate_dataset, online_training_examples
    from tandem.schema import EVENT_SCHEMA
    from tandem.settings import Settings

    data = tmp_path / "year1"
    shutil.copytree(small_dataset, data)
    part = next((data / "events").iterdir())
    row = {"event_id": "y1", "user_id": "u1", "item_id": "i1", "event_type": "view", "value": None,
           "ts": datetime(1, 1, 1, tzinfo=UTC), "session_id": None}
    pq.write_table(pa.Table.from_pylist([row], schema=EVENT_SCHEMA), part / "year1.parquet")
    with pytest.raises(EvaluationError, match="outside 1677"):
        evaluate_dataset(Settings(home=tmp_path / "home"), data)
    # `tandem train online` reads the dataset the same way: the same error, before its batch run
    with pytest.raises(EvaluationError, match="outside 1677"):
        online_training_examples(Settings(home=tmp_path / "home"), data)
    assert not (tmp_path / "home" / "evaluate").exists()

