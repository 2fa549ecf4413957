"""Behavioural tests of the batch ranker (Made-With-ML style): direction, invariance, point-in-time features."""

import numpy as np
import pytest

from models.features import BATCH_FEATURES, Catalog, compute_batch_features, encode_events
from models.train import (
    TrainingError,
    build_training_frame,
    build_window,
    check_training_frame,
    evaluate_ranker,
    monotone_constraints,
    train_batch_ranker,
)
from tests.models_data import drifting_log


@pytest.fixture(scope="module")
def trained():
    events, items = drifting_log()
    catalog = Catalog.from_items(items)
    log = encode_events(events, catalog)
    end = float(log.ts[-1]) + 1
    span = end - float(log.ts[0])
    t1, t2 = end - 0.5 * span, end - 0.25 * span
    frame = build_training_frame(log, catalog, build_window(log, catalog, t1), t2)
    holdout = build_training_frame(log, catalog, build_window(log, catalog, t2), end, seed=9)
    ranker = train_batch_ranker(frame, list(BATCH_FEATURES), num_boost_round=60)
    return ranker, frame, holdout, log, catalog


def test_affinity_features_are_constrained_and_nothing_else():
    cons = dict(zip(BATCH_FEATURES, monotone_constraints(BATCH_FEATURES), strict=True))
    assert cons["user_category_affinity"] == 1 and cons["user_recent_category_affinity"] == 1
    assert sum(cons.values()) == 2


@pytest.mark.parametrize("feature", ["user_category_affinity", "user_recent_category_affinity"])
def test_more_affinity_for_the_items_category_never_lowers_its_score(trained, feature):
    ranker, frame, holdout, *_ = trained
    rows = holdout.sample(300, random_state=0)
    before = ranker.predict(rows)
    for bump in (0.05, 0.2, 0.6):
        raised = rows.copy()
        raised[feature] = np.minimum(raised[feature] + bump, 1.0)
        assert (ranker.predict(raised) >= before - 1e-9).all()
    # the constraint is not vacuous: affinity does move scores up for some rows
    maxed = rows.copy()
    maxed[feature] = 1.0
    assert (ranker.predict(maxed) > before + 1e-6).any()


def test_ids_do_not_change_scores(trained):
    ranker, _, holdout, *_ = trained
    rows = holdout.head(50)
    renamed = rows.assign(user_id="someone-else", item_id="other-item")
    assert np.array_equal(ranker.predict(rows), ranker.predict(renamed))


def test_ranker_beats_chance_on_the_later_window(trained):
    ranker, _, holdout, *_ = trained
    metrics = evaluate_ranker(ranker.predict(holdout), holdout)
    assert metrics["auc"] > 0.6
    shuffled = evaluate_ranker(np.random.default_rng(0).random(len(holdout)), holdout)
    assert metrics["ndcg@10"] > shuffled["ndcg@10"]


def test_features_are_point_in_time(trained):
    *_, log, catalog = trained
    as_of = float(np.quantile(log.ts, 0.5))
    full = compute_batch_features(log, catalog, as_of)
    truncated = compute_batch_features(log.before(as_of), catalog, as_of)
    assert np.array_equal(full.item_events, truncated.item_events)
    assert np.array_equal(full.user_category_share, truncated.user_category_share)


def test_training_frame_positives_are_new_items_only(trained):
    _, frame, *_ = trained
    assert set(frame["label"]) == {0, 1}
    assert not frame.duplicated(["user_id", "item_id", "label"]).any()


def test_bad_frames_are_rejected_with_the_reason(trained):
    _, frame, *_ = trained
    only_pos = frame[frame.label == 1]
    assert not check_training_frame(only_pos, list(BATCH_FEATURES))["success"]
    with pytest.raises(TrainingError, match="label needs both 0 and 1"):
        train_batch_ranker(only_pos, list(BATCH_FEATURES))
    with pytest.raises(TrainingError, match="missing column"):
        train_batch_ranker(frame.drop(columns=["item_popularity_log"]), list(BATCH_FEATURES))


def test_online_examples_replay_the_latest_window(trained):
    from models.jobs import online_examples
    from models.online import LABEL, ONLINE_FEATURES

    ranker, *_ = trained
    events, items = drifting_log()
    examples = online_examples(events, items, ranker, window_fraction=0.1)
    assert list(examples.columns[: len(ONLINE_FEATURES)]) == list(ONLINE_FEATURES)
    assert examples[LABEL].mean() == pytest.approx(0.2, abs=0.02)  # one positive per four sampled negatives
    assert examples["event_timestamp"].is_monotonic_increasing
    positives = examples[examples[LABEL] == 1]
    # the stream features carry signal: positives sit in the live session's category more often
    assert positives["active_session_category_share"].mean() > examples.loc[
        examples[LABEL] == 0, "active_session_category_share"].mean()


def test_online_examples_take_batch_scores_from_a_pair_scorer_for_feast_rankers(trained):
    from models.jobs import online_examples
    from models.train import BatchRanker

    ranker, *_ = trained
    events, items = drifting_log()
    feast_ranker = BatchRanker(ranker.booster, [f"user_features_v1__f{i}" for i in range(len(BATCH_FEATURES))])
    with pytest.raises(TrainingError, match="pass a pair_scorer"):
        online_examples(events, items, feast_ranker, window_fraction=0.05)
    asked = []

    def scorer(pairs):
        asked.append(pairs)
        return np.arange(len(pairs), dtype=float)

    examples = online_examples(events, items, feast_ranker, window_fraction=0.05, pair_scorer=scorer)
    assert list(asked[0].columns) == ["user_id", "item_id", "event_timestamp"]
    assert asked[0]["user_id"].str.startswith("u").all() and asked[0]["item_id"].str.startswith("i").all()
    assert list(examples["batch_logit"]) == list(range(len(examples)))
