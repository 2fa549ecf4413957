"""The online model, its features, the session state it reads, and the blend serving uses."""

import numpy as np
import pandas as pd
import pytest

from models.blend import blend_scores
from models.online import (
    LABEL,
    ONLINE_FEATURES,
    OnlineModelError,
    OnlineTrainer,
    coefficients,
    new_online_model,
    online_features,
    partial_fit,
    predict_margin,
    sanity_check,
)
from models.session import session_view_from_features
from pipelines.stream import session_features


def _examples(n: int, seed: int, flip: bool = False) -> pd.DataFrame:
    """Clicks depend on the session-category share and the batch score."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(ONLINE_FEATURES))), columns=list(ONLINE_FEATURES))
    logit = 2.0 * x["active_session_category_share"] + 1.0 * x["batch_logit"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    x[LABEL] = 1 - y if flip else y
    return x


def test_incremental_updates_learn_the_signal():
    trainer = OnlineTrainer(update_every=200)
    steps = [trainer.add(_examples(100, seed)) for seed in range(20)]
    assert sum(steps) == 10 and trainer.updates == 10 and trainer.examples_seen == 2000
    coef = coefficients(trainer.model)
    assert coef["active_session_category_share"] > coef["trend_log"] + 0.5
    assert coef["batch_logit"] > 0.3
    check = sanity_check(trainer.model, _examples(1000, 99))
    assert check.success and check.auc > 0.75


def test_sanity_check_rejects_a_model_that_got_worse():
    good = partial_fit(new_online_model(), _examples(2000, 1), _examples(2000, 1)[LABEL])
    bad = partial_fit(new_online_model(), _examples(2000, 2, flip=True), _examples(2000, 2, flip=True)[LABEL])
    recent = _examples(1000, 3)
    result = sanity_check(bad, recent, champion=good)
    assert not result.success and "minimum" in result.reason
    assert not sanity_check(good, recent.assign(label=1)).success  # one label: nothing to check against


def test_unfitted_model_and_wrong_shapes_say_what_is_wrong():
    with pytest.raises(OnlineModelError, match="not been fitted"):
        predict_margin(new_online_model(), np.zeros((1, len(ONLINE_FEATURES))))
    with pytest.raises(OnlineModelError, match="lack online feature column"):
        partial_fit(new_online_model(), pd.DataFrame({"batch_logit": [1.0]}), np.array([1]))


def test_session_view_tracks_items_categories_and_sessions():
    """The view the online model reads, over the values the stream processor's fold functions write."""
    category = {"i5": "b", "i6": "c", "i7": "a"}
    cat = {"a": 0, "b": 1, "c": 2}
    items = {f"i{n}": n for n in range(8)}
    state = None

    def fold(item: str, event_type: str, ts: float):
        entry = (int(ts * 1_000_000), f"e{ts}", item, event_type, category[item])
        return session_features.fold_user(state, [entry])

    for item, event_type, ts in (("i5", "view", 100.0), ("i6", "click", 110.0), ("i5", "view", 120.0)):
        state = fold(item, event_type, ts)
    view = session_view_from_features(session_features.user_features(state), cat, items, 3)
    assert view.last_items == [5, 6]
    assert view.session_events == 3 and view.session_clicks == 1
    assert view.session_category_share()[cat["c"]] == pytest.approx(1 / 3)
    state = fold("i7", "view", 5000.0)  # more than 30 minutes later: a new session
    view = session_view_from_features(session_features.user_features(state), cat, items, 3)
    assert view.session_events == 1 and view.session_category_share()[cat["a"]] == 1.0
    assert view.is_active(5000.0 + 60) and not view.is_active(5000.0 + 3 * 3600)


def test_online_features_of_an_unknown_user_leave_the_batch_score_alone():
    rows = online_features(np.array([0.3, -1.0]), np.array([0, 1]), np.array([0, 1]), None,
                           np.zeros(2), np.zeros(2), now=0.0)
    assert rows.shape == (2, len(ONLINE_FEATURES))
    column = {name: rows[:, k] for k, name in enumerate(ONLINE_FEATURES)}
    assert list(column["batch_logit"]) == [0.3, -1.0]
    assert list(column["batch_logit_gap"]) == [0.0, -1.3]  # relative to the request's best candidate
    others = [name for name in ONLINE_FEATURES if name not in ("batch_logit", "batch_logit_gap")]
    assert not np.column_stack([column[name] for name in others]).any()


def test_blend_scores():
    batch, online = np.array([2.0, 1.0, 0.0]), np.array([0.0, 1.0, 5.0])
    assert np.array_equal(blend_scores(batch, None), batch)
    assert np.array_equal(blend_scores(batch, online, 0.0), batch)
    assert np.array_equal(blend_scores(batch, online, 1.0), online)
    assert blend_scores(batch, np.array([np.nan, 1.0, 5.0]), 0.5)[0] == 2.0
    # monotone in each input
    assert (blend_scores(batch, online + 1, 0.5) > blend_scores(batch, online, 0.5)).all()
    with pytest.raises(ValueError, match="online_weight"):
        blend_scores(batch, online, 1.5)
    with pytest.raises(ValueError, match="3 batch scores but 2 online"):
        blend_scores(batch, online[:2])
