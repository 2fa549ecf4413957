"""Defects planted in item_features_v1 rows, and what the feature-table suite must name for them.

Shared by the pandas-engine unit test and the Spark-engine integration test: both engines must name
the same failures with the same row counts.
"""

from datetime import datetime

PLANTED_FAILURES = {
    ("expect_compound_columns_to_be_unique", "item_id,event_timestamp", 2),
    ("expect_column_values_to_be_between", "event_timestamp", 1),
    ("expect_column_values_to_be_between", "conversion_rate", 1),
    ("expect_column_values_to_be_between", "events_7d", 1),
}


def plant_item_defects(first: dict, second: dict, future: datetime) -> list[dict]:
    """Two good rows made into three bad ones: a repeated key and snapshot (one with an out-of-range rate),
    and a snapshot from the future with a negative count."""
    return [first, {**first, "conversion_rate": 1.5},
            {**second, "event_timestamp": future, "events_7d": -1}]
