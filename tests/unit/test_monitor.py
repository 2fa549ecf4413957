"""`tandem monitor` on small generated datasets: planted drift is flagged, a stationary dataset is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from models.monitor import RETRAIN_MARKER, histogram_quantile, load_events, run_monitor, window_drift, write_report
from pipelines.dataset import events_dir, read_events, write_events_partitioned
from pipelines.generate import GeneratorConfig, generate_dataset

SMALL = dict(n_users=1_500, n_items=300, n_events=60_000, n_categories=8, days=20, seed=3)


def _plant_price_change(dataset: Path, factor: float = 1.5, recent_share: float = 0.25) -> None:
    """Raise the price on carts and purchases in the latest `recent_share` of the period."""
    table = read_events(dataset)
    micros = pc.cast(table.column("ts"), pa.int64()).to_numpy()
    cut = micros.min() + (1 - recent_share) * (micros.max() - micros.min())
    etype = table.column("event_type").to_numpy(zero_copy_only=False)
    value = table.column("value").to_numpy(zero_copy_only=False).astype(float)
    planted = (micros >= cut) & np.isin(etype, ["add_to_cart", "purchase"])
    value[planted] *= factor
    table = table.set_column(table.schema.get_field_index("value"), "value",
                             pa.array(value, type=pa.float64(), mask=np.isnan(value)))
    shutil.rmtree(events_dir(dataset))
    write_events_partitioned(table, dataset, part="planted")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("monitor")
    drifted, stationary = root / "drifted", root / "stationary"
    generate_dataset(GeneratorConfig(**SMALL, drift=1.0), drifted)
    _plant_price_change(drifted)
    generate_dataset(GeneratorConfig(**SMALL, drift=0.0, new_item_share=0.0, new_user_share=0.0), stationary)
    return {"drifted": drifted, "stationary": stationary}


def test_planted_drift_is_flagged_and_requests_retraining(datasets, tmp_path):
    result = run_monitor(datasets["drifted"], None, threshold=0.2, stream_url="http://127.0.0.1:9/metrics")
    psi = {f.name: f.psi for f in result.features}
    flagged = {f.name for f in result.flagged}
    assert {"price", "profile_affinity"} <= flagged, psi
    assert psi["price"] > 0.5 and psi["profile_affinity"] > 0.3
    assert psi["event_type"] < 0.05  # the mix of event types was not touched
    assert result.model["flagged"] and result.model["recent_hitrate"] < result.model["reference_hitrate"]
    assert result.stream["state"] == "not running"
    assert result.windows["reference"].startswith("2025-01-06T")  # GeneratorConfig's default start
    days = [d["day"] for d in result.model["days"]]
    assert len(days) >= 15 and days[0] == "2025-01-08" and days[-1] == "2025-01-25"  # after the profile window

    html_path, json_path, marker = write_report(result, tmp_path)
    assert html_path.name.startswith("monitor-") and html_path.suffix == ".html"
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == len(result.features) + 2  # PSI chart, model, one per feature
    assert "DRIFT" in page
    report = json.loads(json_path.read_text())
    assert set(report["flagged"]) == flagged
    assert marker == tmp_path / RETRAIN_MARKER
    request = json.loads(marker.read_text())
    assert {f["name"] for f in request["features"]} == flagged
    assert all(f["psi"] > 0.2 for f in request["features"])


def test_stationary_dataset_is_not_flagged(datasets, tmp_path):
    result = run_monitor(datasets["stationary"], None, threshold=0.2)
    assert result.flagged == [], {f.name: round(f.psi, 3) for f in result.features}
    assert max(f.psi for f in result.features) < 0.15
    assert not result.model["flagged"]
    _, _, marker = write_report(result, tmp_path)
    assert marker is None and not (tmp_path / RETRAIN_MARKER).exists()


def test_threshold_decides_the_flag(datasets):
    events = load_events(datasets["stationary"])
    features, windows, _ = window_drift(events, threshold=0.0)
    assert {f.name for f in features if f.flagged} == {f.name for f in features if f.psi > 0.0}
    assert set(windows) == {"reference", "recent", "profile"}


def test_histogram_quantile():
    buckets = [(0.01, 10.0), (0.05, 90.0), (0.1, 99.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == 0.05
    assert histogram_quantile(buckets, 0.99) == 0.1
    assert histogram_quantile([], 0.99) is None


def test_retrain_request_is_read_and_consumed(tmp_path):
    from models.monitor import consume_retrain_request, retrain_request

    assert retrain_request(tmp_path) is None and consume_retrain_request(tmp_path) is None
    (tmp_path / RETRAIN_MARKER).write_text(json.dumps({"features": [{"name": "price", "psi": 1.0}]}))
    assert retrain_request(tmp_path)["features"][0]["name"] == "price"
    done = consume_retrain_request(tmp_path)
    assert done.name.startswith("retrain_requested-") and done.name.endswith(".done.json")
    assert retrain_request(tmp_path) is None and json.loads(done.read_text())["features"][0]["psi"] == 1.0


def test_offline_snapshots_compare_reference_date_with_latest(tmp_path):
    import pandas as pd

    from models.monitor import MonitorError, offline_drift

    rng = np.random.default_rng(0)
    for day, shift in (("2025-01-01", 0.0), ("2025-01-02", 0.0), ("2025-01-08", 3.0)):
        part = tmp_path / "user_features" / f"date={day}"
        part.mkdir(parents=True)
        pd.DataFrame({"user_id": [f"u{i}" for i in range(500)],
                      "event_timestamp": pd.Timestamp(day, tz="UTC"),
                      "events_7d": rng.poisson(5 + shift, 500), "spend_30d": rng.lognormal(3, 1, 500),
                      "events_total": rng.poisson(50 + 10 * shift, 500)}).to_parquet(part / "part-0.parquet")
    features, windows = offline_drift(tmp_path, threshold=0.2)
    psi = {f.name: f for f in features}
    assert windows == {"user_features": "2025-01-01 → 2025-01-08"}
    assert set(psi) == {"events_7d", "spend_30d"}  # totals grow by construction: skipped
    assert psi["events_7d"].flagged and psi["events_7d"].source == "offline:user_features"
    assert not psi["spend_30d"].flagged
    _, windows = offline_drift(tmp_path, threshold=0.2, reference_date="2025-01-02")
    assert windows["user_features"].startswith("2025-01-02")
    with pytest.raises(MonitorError, match="no snapshot dated"):
        offline_drift(tmp_path, threshold=0.2, reference_date="2024-12-31")
    with pytest.raises(MonitorError, match="two snapshot dates"):
        offline_drift(tmp_path / "empty", threshold=0.2)
