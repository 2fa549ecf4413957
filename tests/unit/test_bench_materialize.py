"""The materialize benchmark's pure parts: its Feast config, row counting, key handling (no services)."""

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from benchmarks.materialize import (
    bench_store_config,
    compare_hashes,
    descendants,
    entity_part,
    frame_totals,
    latest_rows,
    rate,
    rows_in_store,
)

CONFIG = {"project": "tandem", "provider": "local",
          "registry": {"registry_type": "file", "path": "${TANDEM_FEAST_REGISTRY}", "cache_ttl_seconds": 5},
          "online_store": {"type": "redis", "connection_string": "${TANDEM_FEAST_REDIS}"},
          "offline_store": {"type": "spark", "spark_conf": {"spark.master": "${TANDEM_SPARK_MASTER}"}},
          "batch_engine": {"type": "spark.engine"}, "entity_key_serialization_version": 3}


def test_bench_config_changes_project_registry_and_engine_only():
    out = bench_store_config(CONFIG, "tandem_bench_local", Path("/scratch/local/registry.db"), "local")
    assert out["project"] == "tandem_bench_local"
    assert out["registry"] == {"registry_type": "file", "path": "/scratch/local/registry.db", "cache_ttl_seconds": 5}
    assert out["batch_engine"] == {"type": "local"}
    assert out["online_store"] == CONFIG["online_store"] and out["offline_store"] == CONFIG["offline_store"]
    assert CONFIG["project"] == "tandem" and CONFIG["batch_engine"] == {"type": "spark.engine"}  # not edited
    spark = bench_store_config(CONFIG, "tandem_bench_spark", Path("/r.db"), "spark.engine")
    assert spark["batch_engine"] == {"type": "spark.engine"}


def _ts(day: int) -> datetime:
    return datetime(2025, 2, day, tzinfo=UTC)


def test_latest_rows_counts_entities_in_the_inclusive_range():
    table = pa.table({"user_id": ["a", "a", "b", "c", "d"],
                      "event_timestamp": pa.array([_ts(1), _ts(5), _ts(5), _ts(6), _ts(2)],
                                                  type=pa.timestamp("us", tz="UTC"))})
    # [Feb 2, Feb 5] both ends included, as Feast's BETWEEN: a (Feb 5), b (Feb 5), d (Feb 2); c is after the end
    assert latest_rows(table, "user_id", _ts(2), _ts(5)) == 3
    assert latest_rows(table, "user_id", _ts(7), _ts(8)) == 0


def test_rows_in_store_counts_timestamp_fields_per_view():
    hashes = [[b"_ts:user_features_v1", b"\x01\x02", b"_ts:user_candidates_v1"], [b"_ts:user_features_v1"], []]
    assert rows_in_store(hashes) == {"user_features_v1": 2, "user_candidates_v1": 1}


def test_entity_part_strips_the_project_and_rejects_other_projects():
    assert entity_part(b"\x01keytandem_bench_spark", "tandem_bench_spark") == b"\x01key"
    with pytest.raises(ValueError):
        entity_part(b"\x01keytandem", "tandem_bench_spark")


def test_compare_hashes_reports_missing_and_different_entities():
    a = {b"u1": {b"f": b"1"}, b"u2": {b"f": b"2"}, b"u3": {b"f": b"3"}}
    b = {b"u1": {b"f": b"1"}, b"u2": {b"f": b"9"}, b"u4": {b"f": b"4"}}
    differ, examples = compare_hashes(a, b)
    assert differ == 3
    assert any("u2" in e and "differ" in e for e in examples)
    assert compare_hashes(a, dict(a)) == (0, [])


def test_descendants_walks_the_whole_tree():
    parent_of = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1}
    assert sorted(descendants(10, parent_of)) == [11, 12, 13]
    assert descendants(12, parent_of) == []


def test_frame_totals_sums_named_calls_counting_recursion_once():
    def frame(cls, fn, t, *children):
        return SimpleNamespace(class_name=cls, function=fn, time=t, children=list(children))

    write = frame("SparkWriteNode", "execute", 3.0,
                  frame(None, "_convert_arrow_to_proto", 2.0, frame(None, "_convert_arrow_to_proto", 1.5)))
    root = frame(None, "worker", 5.0, write, frame("SparkReadNode", "execute", 1.0), frame(None, "other", 0.5))
    assert frame_totals(root) == {"SparkWriteNode.execute": 3.0, "_convert_arrow_to_proto": 2.0,
                                  "SparkReadNode.execute": 1.0}


def test_rate_guards_zero_time():
    assert rate(100, 2.0) == 50.0
    assert rate(100, 0.0) is None


def test_hash_digest_ignores_field_order_and_sees_values():
    from benchmarks.materialize import hash_digest

    assert hash_digest({b"a": b"1", b"b": b"2"}) == hash_digest({b"b": b"2", b"a": b"1"})
    assert hash_digest({b"a": b"1"}) != hash_digest({b"a": b"2"})
    assert hash_digest({b"ab": b""}) != hash_digest({b"a": b"b"})
    differ, examples = compare_hashes({b"u1": hash_digest({b"a": b"1"})}, {b"u1": hash_digest({b"a": b"2"})})
    assert differ == 1 and "differ" in examples[0]
