"""Behavioural tests of the batch ranker (Made-With-ML style) on Feast-shaped training sets: direction,
invariance, better than chance, and the rows the online model learns from."""

import numpy as np
import pytest

from models.batch_steps import CATEGORY_AFFINITY, prepare_feast_frame
from models.features import epoch_seconds
from models.online import LABEL, ONLINE_FEATURES
from models.replay_store import ReplayError, stream_examples
from models.rows import service_columns
from models.train import TrainingError, check_training_frame, evaluate_ranker, monotone_constraints, train_batch_ranker
from pipelines.batch.training import monotone_directions
from tests.models_data import drifting_log
from tests.serving_models import batch_outputs, item_rows, repo, train_batch, training_frame, user_rows

CATEGORIES = [f"c{n}" for n in range(4)]


@pytest.fixture(scope="module")
def trained():
    service, user_view, item_view = repo()
    users = [f"u{n}" for n in range(60)]
    items = [f"i{n}" for n in range(40)]
    user_df = user_rows(user_view, users, lambda u: CATEGORIES[int(u[1:]) % 4],
                        lambda u: CATEGORIES[(int(u[1:]) + 1) % 4])
    item_df = item_rows(item_view, items, lambda i: CATEGORIES[int(i[1:]) % 4])
    ranker, frame = train_batch(training_frame(user_df, item_df, n=3000), service, rounds=60)
    holdout, _ = prepare_feast_frame(training_frame(user_df, item_df, n=1500, seed=9), service_columns(service))
    return ranker, frame, holdout


MORE_IS_BETTER = ("item_features_v1__events_1d", "item_features_v1__events_7d", "item_features_v1__events_30d",
               "item_features_v1__positives_7d", "item_features_v1__positives_30d",
               "item_features_v1__purchases_30d", "item_features_v1__events_total",
               "item_features_v1__purchases_total", "item_features_v1__ratings_total",
                  "item_features_v1__avg_rating")


def test_the_item_counts_and_rating_are_tagged_monotone_and_no_user_feature_is():
    service, *_ = repo()
    directions = monotone_directions(service)
    assert directions == {**{c: 1 for c in MORE_IS_BETTER}, "item_features_v1__popularity_rank_7d": -1}


def test_a_monotone_tag_other_than_increasing_or_decreasing_is_refused():
    from feast import Field
    from feast.types import Int64

    service, *_ = repo()
    projection = service.feature_view_projections[0]
    field = projection.features[0]
    projection.features[0] = Field(name=field.name, dtype=Int64, tags={"monotone": "up"})
    try:
        with pytest.raises(ValueError, match=r"monotone='up', expected one of increasing, decreasing"):
            monotone_directions(service)
    finally:
        projection.features[0] = field


def test_affinity_and_the_tagged_item_features_are_constrained_and_nothing_else(trained):
    ranker, frame, _ = trained
    cons = dict(zip(ranker.feature_columns, monotone_constraints(ranker.feature_columns, frame.attrs["monotone"]),
                    strict=True))
    assert ranker.params["monotone_constraints"] == "(" + ",".join(str(c) for c in cons.values()) + ")"
    assert cons[CATEGORY_AFFINITY] == 1 and cons["item_features_v1__popularity_rank_7d"] == -1
    assert {c for c, v in cons.items() if v == 1} == {CATEGORY_AFFINITY, *MORE_IS_BETTER}
    assert not any(v for c, v in cons.items() if c.startswith("user_features_v1__"))


def test_more_interactions_for_an_item_never_lower_its_score(trained):
    ranker, _, holdout = trained
    rows = holdout.sample(300, random_state=0)
    before = ranker.predict(rows)
    popular = "item_features_v1__events_30d"
    for bump in (1, 10, 100):
        raised = rows.copy()
        raised[popular] = raised[popular] + bump
        assert (ranker.predict(raised) >= before - 1e-9).all()
        ranked_up = rows.copy()
        ranked_up["item_features_v1__popularity_rank_7d"] = np.maximum(
            ranked_up["item_features_v1__popularity_rank_7d"] - bump, 1)
        assert (ranker.predict(ranked_up) >= before - 1e-9).all()
    # not vacuous: the fixture's labels follow events_30d, so raising it does lift some scores
    maxed = rows.copy()
    maxed[popular] = rows[popular].max() * 10
    assert (ranker.predict(maxed) > before + 1e-6).any()


def test_more_affinity_for_the_items_category_never_lowers_its_score(trained):
    ranker, _, holdout = trained
    rows = holdout.sample(300, random_state=0)
    before = ranker.predict(rows)
    for bump in (0.05, 0.2, 0.6):
        raised = rows.copy()
        raised[CATEGORY_AFFINITY] = np.minimum(raised[CATEGORY_AFFINITY] + bump, 1.0)
        assert (ranker.predict(raised) >= before - 1e-9).all()
    # the constraint is not vacuous: affinity does move scores up for some rows
    maxed = rows.copy()
    maxed[CATEGORY_AFFINITY] = 1.0
    assert (ranker.predict(maxed) > before + 1e-6).any()


def test_ids_do_not_change_scores(trained):
    ranker, _, holdout = trained
    rows = holdout.head(50)
    renamed = rows.assign(user_id="someone-else", item_id="other-item")
    assert np.array_equal(ranker.predict(rows), ranker.predict(renamed))


def test_ranker_beats_chance_on_a_later_frame(trained):
    ranker, _, holdout = trained
    metrics = evaluate_ranker(ranker.predict(holdout), holdout)
    assert metrics["auc"] > 0.6
    shuffled = evaluate_ranker(np.random.default_rng(0).random(len(holdout)), holdout)
    assert metrics["ndcg@10"] > shuffled["ndcg@10"]


def test_bad_frames_are_rejected_with_the_reason(trained):
    ranker, frame, _ = trained
    columns = list(ranker.feature_columns)
    only_pos = frame[frame.label == 1]
    assert not check_training_frame(only_pos, columns)["success"]
    with pytest.raises(TrainingError, match="label needs both 0 and 1"):
        train_batch_ranker(only_pos, columns)
    with pytest.raises(TrainingError, match="missing column"):
        train_batch_ranker(frame.drop(columns=[CATEGORY_AFFINITY]), columns)


def test_stream_examples_replay_the_window_with_the_champions_scores():
    """`tandem train online`'s rows: one positive per new interaction after as_of and four of the candidates
    serving would have gathered, the batch score being the champion's on the batch rows."""
    events, items = drifting_log()
    ts = epoch_seconds(events["ts"])
    as_of = float(np.quantile(ts, 0.9))
    outputs = batch_outputs(events, items, as_of)
    examples = stream_examples(events, items, outputs)
    assert list(examples.columns[: len(ONLINE_FEATURES)]) == list(ONLINE_FEATURES)
    assert examples[LABEL].mean() == pytest.approx(0.2, abs=0.02)  # one positive per four negatives
    assert examples["event_timestamp"].is_monotonic_increasing
    assert examples["event_timestamp"].min().timestamp() >= as_of
    assert examples["batch_logit"].std() > 0  # real batch scores, not a neutral 0
    positives, negatives = examples[examples[LABEL] == 1], examples[examples[LABEL] == 0]
    # the stream features carry signal: positives are co-visited with the session's last items more often
    assert positives["last_item_neighbour_log"].mean() > negatives["last_item_neighbour_log"].mean()
    with pytest.raises(ReplayError, match="nothing to learn from"):
        stream_examples(events, items, batch_outputs(events, items, float(ts.max()) + 1))
