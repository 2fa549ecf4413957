"""Checking a big feature table a few days at a time (no services)."""

from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.batch.offline import partition_chunks
from validation.checkpoints import Failure, ValidationReport, merge_reports


def _table_dir(tmp_path, rows_per_day):
    for day, n in rows_per_day.items():
        part = tmp_path / f"date={day}"
        part.mkdir()
        pq.write_table(pa.table({"user_id": [f"u{i}" for i in range(n)]}), part / "part-0.parquet")
    return tmp_path


def test_chunks_hold_whole_days_up_to_the_row_bound(tmp_path):
    table_dir = _table_dir(tmp_path, {"2025-01-01": 3, "2025-01-02": 2, "2025-01-03": 7, "2025-01-04": 1})
    chunks = list(partition_chunks(table_dir, max_rows=5))
    assert [c.num_rows for c in chunks] == [5, 7, 1]  # a day larger than the bound is a chunk of its own
    assert chunks[0].column("date").to_pylist() == [date(2025, 1, 1)] * 3 + [date(2025, 1, 2)] * 2
    assert sum(c.num_rows for c in chunks) == 13


def test_merged_report_adds_rows_and_keeps_every_failure():
    failure = Failure("expect_column_values_to_not_be_null", "age", 2, 7, "2 of 7 rows are null")
    merged = merge_reports([ValidationReport("user_features_v1", 5, 15),
                            ValidationReport("user_features_v1", 7, 15, failures=[failure])])
    assert (merged.name, merged.rows, merged.evaluated, merged.failures) == ("user_features_v1", 12, 15, [failure])
    assert not merged.success
