"""Pure logic of the batch path: which days a run computes, snapshot cutoffs, as-of parsing, negative sampling."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.batch.features import days_to_compute, snapshot_cutoff
from pipelines.batch.run import Step, default_steps, insert_steps, parse_as_of
from pipelines.batch.sources import BatchError, default_as_of
from pipelines.batch.training import sample_negatives

AS_OF = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


def test_snapshot_is_cut_at_the_end_of_its_day_or_at_as_of():
    assert snapshot_cutoff(date(2026, 3, 9), AS_OF) == datetime(2026, 3, 10, tzinfo=UTC)
    assert snapshot_cutoff(date(2026, 3, 10), AS_OF) == AS_OF


def test_first_run_computes_the_history_window_up_to_the_as_of_day():
    days = days_to_compute(AS_OF, date(2026, 1, 1), existing=set(), history_days=5)
    assert days == [date(2026, 3, d) for d in range(6, 11)]
    # never before the first event
    assert days_to_compute(AS_OF, date(2026, 3, 9), existing=set(), history_days=5) == [date(2026, 3, 9),
                                                                                       date(2026, 3, 10)]


def test_incremental_run_starts_after_the_newest_complete_day_and_redoes_the_as_of_day():
    existing = {date(2026, 3, d) for d in range(1, 9)}
    assert days_to_compute(AS_OF, date(2026, 1, 1), existing) == [date(2026, 3, 9), date(2026, 3, 10)]
    # the as-of day itself was cut early last time, so it is recomputed
    existing |= {date(2026, 3, 9), date(2026, 3, 10)}
    assert days_to_compute(AS_OF, date(2026, 1, 1), existing) == [date(2026, 3, 10)]


def test_as_of_at_midnight_belongs_to_the_day_before():
    midnight = datetime(2026, 3, 10, tzinfo=UTC)
    assert days_to_compute(midnight, date(2026, 3, 1), existing={date(2026, 3, 8)}) == [date(2026, 3, 9)]


def test_backfill_recomputes_every_day_since():
    existing = {date(2026, 3, d) for d in range(1, 11)}
    assert days_to_compute(AS_OF, date(2026, 1, 1), existing, since=date(2026, 3, 7)) == [
        date(2026, 3, d) for d in range(7, 11)]


def test_default_as_of_is_the_end_of_the_last_events_day_but_never_the_future():
    last = datetime(2026, 3, 10, 9, tzinfo=UTC)
    assert default_as_of(last, now=datetime(2026, 4, 1, tzinfo=UTC)) == datetime(2026, 3, 11, tzinfo=UTC)
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    assert default_as_of(last, now=now) == now


def test_parse_as_of_accepts_dates_and_zoned_times_and_names_bad_input():
    assert parse_as_of("2026-03-10") == datetime(2026, 3, 10, tzinfo=UTC)
    assert parse_as_of("2026-03-10T12:00:00+02:00") == datetime(2026, 3, 10, 10, tzinfo=UTC)
    assert parse_as_of("2026-03-10T12:00:00Z") == datetime(2026, 3, 10, 12, tzinfo=UTC)
    with pytest.raises(BatchError, match="--as-of 'yesterday' is not an ISO-8601"):
        parse_as_of("yesterday")


def test_model_steps_go_between_training_set_and_materialize():
    train = Step("train", "train the batch ranker", lambda ctx: "ok")
    names = [s.name for s in insert_steps(default_steps(), before="materialize", new=[train])]
    assert names == ["validate", "features", "apply", "training_set", "train", "materialize"]
    with pytest.raises(ValueError, match="no step 'publish'"):
        insert_steps(default_steps(), before="publish", new=[train])


def _positives(n: int, ts: datetime) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{k % 3}" for k in range(n)], "item_id": ["a"] * n,
                         "event_timestamp": pd.to_datetime([ts] * n, utc=True)})


def test_negatives_are_distinct_unseen_and_already_existing_items():
    ts = datetime(2026, 3, 5, tzinfo=UTC)
    items = np.array(["a", "b", *[f"x{k}" for k in range(12)], "late"])
    weights = np.ones(len(items))
    created = pd.to_datetime([ts - timedelta(days=1)] * 14 + [ts + timedelta(days=1)], utc=True)
    seen = pd.DataFrame({"user_id": ["u0", "u0", "u1"], "item_id": ["a", "b", "a"]})
    pos = _positives(30, ts)
    neg = sample_negatives(pos, items, weights, created, seen, per_positive=2, seed=1)
    assert (neg["label"] == 0).all() and str(neg["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert "late" not in set(neg["item_id"])
    pairs = set(zip(neg["user_id"], neg["item_id"], strict=True))
    assert not pairs & {("u0", "a"), ("u0", "b"), ("u1", "a")}
    assert len(neg) == 60  # 2 per positive: plenty of unseen items each time
    # distinct within one positive: group rows by positive via their order of appearance
    assert neg.groupby(neg.index // 2)["item_id"].nunique().eq(2).all()


def test_negative_sampling_follows_popularity_and_is_deterministic():
    ts = datetime(2026, 3, 5, tzinfo=UTC)
    items = np.array(["hot", "cold"])
    created = pd.to_datetime([None, None], utc=True)
    seen = pd.DataFrame({"user_id": [], "item_id": []})
    pos = _positives(2000, ts).assign(user_id=[f"u{k}" for k in range(2000)])
    neg = sample_negatives(pos, items, np.array([9.0, 1.0]), created, seen, per_positive=1, seed=5)
    share = (neg["item_id"] == "hot").mean()
    assert 0.85 < share < 0.95
    again = sample_negatives(pos, items, np.array([9.0, 1.0]), created, seen, per_positive=1, seed=5)
    pd.testing.assert_frame_equal(neg, again)


def test_no_negatives_when_a_user_has_seen_everything():
    ts = datetime(2026, 3, 5, tzinfo=UTC)
    seen = pd.DataFrame({"user_id": ["u0", "u0"], "item_id": ["a", "b"]})
    pos = _positives(1, ts)
    neg = sample_negatives(pos, np.array(["a", "b"]), np.ones(2), pd.to_datetime([None, None], utc=True), seen,
                           per_positive=3, seed=0)
    assert neg.empty
