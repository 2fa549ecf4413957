"""What each dataset must satisfy, as Great Expectations suites, derived from tandem's schemas.

Raw events follow tandem/schema.py; feature tables follow their Feast feature views (the
field list and types come from the view, the value rules from the field's meaning); a
training set follows the contract of pipelines/batch/training.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.row_conditions import Column

from tandem.schema import EARLIEST_TS, EVENT_FIELDS, EVENT_TYPES, MAX_FUTURE, RATING_RANGE

# features that are legitimately null: no ratings yet, no purchase yet, no activity yet, unknown price
NULLABLE_FEATURES = frozenset({"avg_rating", "days_since_last_event", "days_since_last_purchase", "top_category",
                               "price"})


def _latest_allowed(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)) + MAX_FUTURE


def raw_events_suite(now: datetime | None = None) -> list[Expectation]:
    """Raw events: the schema's columns, required fields present, unique ids, known types, sane values and times."""
    lo, hi = RATING_RANGE
    required = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("event_id", "user_id", "item_id",
                                                                       "event_type", "ts")]
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(EVENT_FIELDS), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *required,
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=EARLIEST_TS, max_value=_latest_allowed(now)),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0.0),
        gxe.ExpectColumnValuesToNotBeNull(column="value", row_condition=Column("event_type") == "rating"),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=lo, max_value=hi,
                                          row_condition=Column("event_type") == "rating"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="user_id", min_value=1, max_value=128),
        gxe.ExpectColumnValueLengthsToBeBetween(column="item_id", min_value=1, max_value=128),
    ]


def _value_rule(column: str, name: str, is_int: bool) -> Expectation | None:
    """The range a feature's values must lie in, from what the feature means."""
    lo, hi = RATING_RANGE
    if name.endswith(("_rate", "_share")):
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0.0, max_value=1.0)
    if name == "avg_rating":
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi)
    if is_int or name.startswith(("days_", "spend_")) or name.endswith("_days") or name == "price":
        # counts, ranks, ages, recencies and money are never negative
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0)
    return None


def feature_table_suite(view, key: str, now: datetime | None = None) -> list[Expectation]:
    """A feature view's offline rows: its columns, one row per key and snapshot, no future snapshots, sane values."""
    from feast.types import Int32, Int64

    columns = [key, "event_timestamp", *[f.name for f in view.features]]
    expectations: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column=key),
        gxe.ExpectColumnValuesToNotBeNull(column="event_timestamp"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[key, "event_timestamp"]),
        gxe.ExpectColumnValuesToBeBetween(column="event_timestamp", max_value=_latest_allowed(now)),
    ]
    for field in view.features:
        if field.name not in NULLABLE_FEATURES:
            expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=field.name))
        rule = _value_rule(field.name, field.name, field.dtype in (Int32, Int64))
        if rule is not None:
            expectations.append(rule)
    return expectations


def training_set_suite(feature_columns: list[str], now: datetime | None = None) -> list[Expectation]:
    """A labelled training set: keys and times present, binary labels with both classes, one row per example."""
    keys = ["user_id", "item_id", "event_timestamp"]
    expectations: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=[*keys, "label", *feature_columns], exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=2),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in [*keys, "label"]],
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
        gxe.ExpectColumnMeanToBeBetween(column="label", min_value=0.01, max_value=0.99),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=keys),
        gxe.ExpectColumnValuesToBeBetween(column="event_timestamp", max_value=_latest_allowed(now)),
    ]
    for column in feature_columns:
        # examples of users or items without a snapshot yet are legitimately null; ranges apply to the rest
        rule = _value_rule(column, column.split("__", 1)[-1], False)
        if rule is not None:
            expectations.append(rule)
    return expectations
