"""A/B report: attribution of feedback to decisions, per-variant counts, intervals; and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.ab_report import ABReportError, VariantStats, ab_report, compare, read_decisions
from models.monitoring import wilson_interval

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _write(tmp_path: Path) -> tuple[Path, Path]:
    decisions = [
        # hybrid: 4 responses, 2 clicked (one of them bought), one click too late, one click on an unshown item
        {"ts": T0, "user_id": "u1", "variant": "hybrid", "items": ["i1", "i2"]},
        {"ts": T0 + 10, "user_id": "u2", "variant": "hybrid", "items": ["i3"]},
        {"ts": T0 + 20, "user_id": "u3", "variant": "hybrid", "items": ["i4"]},
        {"ts": T0 + 30, "user_id": "u4", "variant": "hybrid", "items": ["i5"]},
        # batch_only: 2 responses, 1 clicked; another user's click on the same item does not count
        {"ts": T0, "user_id": "u5", "variant": "batch_only", "items": ["i1"]},
        {"ts": T0, "user_id": "u6", "variant": "batch_only", "items": ["i2"]},
    ]
    events = [
        {"user_id": "u1", "item_id": "i2", "event_type": "click", "ts": _iso(T0 + 60)},
        {"user_id": "u1", "item_id": "i2", "event_type": "purchase", "ts": _iso(T0 + 300)},
        {"user_id": "u2", "item_id": "i3", "event_type": "add_to_cart", "ts": _iso(T0 + 100)},
        {"user_id": "u3", "item_id": "i4", "event_type": "click", "ts": _iso(T0 + 20 + 4000)},  # outside the window
        {"user_id": "u4", "item_id": "i9", "event_type": "click", "ts": _iso(T0 + 40)},  # not shown
        {"user_id": "u4", "item_id": "i5", "event_type": "view", "ts": _iso(T0 + 40)},  # a view is no click
        {"user_id": "u5", "item_id": "i1", "event_type": "click", "ts": _iso(T0 - 5)},  # before the response
        {"user_id": "u5", "item_id": "i1", "event_type": "click", "ts": _iso(T0 + 5)},
        {"user_id": "u1", "item_id": "i2", "event_type": "click", "ts": _iso(T0 + 7)},  # u6 saw i2, u1 clicked it
    ]
    dpath, epath = tmp_path / "decisions.jsonl", tmp_path / "events.jsonl"
    dpath.write_text("".join(json.dumps({**d, "known_user": True, "degraded": []}) + "\n" for d in decisions))
    epath.write_text("".join(json.dumps(e) + "\n" for e in events))
    return dpath, epath


def test_attribution_and_counts(tmp_path):
    dpath, epath = _write(tmp_path)
    report = ab_report(dpath, epath, window_s=1_800)
    by = {v["variant"]: v for v in report["variants"]}
    assert (by["hybrid"]["responses"], by["hybrid"]["clicked"], by["hybrid"]["converted"]) == (4, 2, 1)
    assert (by["batch_only"]["responses"], by["batch_only"]["clicked"], by["batch_only"]["converted"]) == (2, 1, 0)
    assert by["hybrid"]["ctr"] == wilson_interval(2, 4).as_json()
    (cmp,) = report["comparisons"]
    assert (cmp["variant"], cmp["control"]) == ("hybrid", "batch_only")
    assert cmp["ctr_diff"]["estimate"] == pytest.approx(0.0)
    assert cmp["conversion_diff"]["estimate"] == pytest.approx(0.25)
    # a longer window picks up u3's late click
    assert {v["variant"]: v["clicked"] for v in ab_report(dpath, epath, window_s=5_000)["variants"]}["hybrid"] == 3


def test_compare_known_counts():
    stats = [VariantStats("batch_only", 80, 48, 8), VariantStats("hybrid", 70, 56, 14)]
    (c,) = compare(stats)
    assert c.ctr_diff.estimate == pytest.approx(0.2)
    assert (round(c.ctr_diff.low, 4), round(c.ctr_diff.high, 4)) == (0.0524, 0.3339)
    with pytest.raises(ABReportError):
        compare(stats, control="nope")


def test_bad_inputs(tmp_path):
    with pytest.raises(ABReportError, match="no decision log"):
        read_decisions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": 1, "user_id": "u"}\n')
    with pytest.raises(ABReportError, match="bad.jsonl:1"):
        read_decisions(bad)


def test_cli_ab_report_and_monitor(tmp_path, monkeypatch):
    from pipelines.generate import GeneratorConfig, generate_dataset
    from tandem.cli import app

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    dpath, epath = _write(tmp_path)
    runner = CliRunner()
    out = tmp_path / "ab.json"
    result = runner.invoke(app, ["ab-report", "--decisions", str(dpath), "--events", str(epath), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "hybrid" in result.output and json.loads(out.read_text())["variants"][1]["clicked"] == 2
    assert list((tmp_path / "home" / "reports").glob("ab-report-*.json"))

    data = tmp_path / "data"
    generate_dataset(GeneratorConfig(n_users=300, n_items=100, n_events=8_000, n_categories=6, days=10), data)
    result = runner.invoke(app, ["monitor", "--data", str(data), "--stream-metrics", "http://127.0.0.1:9/metrics"])
    assert result.exit_code == 0, result.output
    assert "profile_affinity" in result.output and "not running" in result.output
    assert len(list((tmp_path / "home" / "reports").glob("monitor-*.html"))) == 1
    result = runner.invoke(app, ["monitor", "--data", str(tmp_path / "nothing")])
    assert result.exit_code == 1
