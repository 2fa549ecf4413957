"""The online-features benchmark's comparison of tandem's values with Feast's, and its ratios (no services)."""

import math

from benchmarks.online_features import best_of, mismatches, same_value, speedup


def test_same_value_treats_missing_numbers_and_lists_as_serving_does():
    assert same_value(None, float("nan"))
    assert same_value(3, 3.0)
    assert same_value([1.0, 2.0], (1, 2))
    assert same_value("books", "books")
    assert not same_value(None, 0.0)
    assert not same_value([1.0], [1.0, 2.0])
    assert not same_value("books", ["books"])
    assert not same_value(0.5, 0.5000001)
    assert same_value(True, 1.0)  # the item snapshot holds booleans as floats


def test_mismatches_counts_and_names_differences():
    tandem = {"v__a": [1.0, 2.0], "v__b": ["x", None], "v__only_ours": [1, 2]}
    stock = {"v__a": [1, 3], "v__b": ["x", None], "item_id": ["i1", "i2"]}
    compared, differ, examples = mismatches(tandem, stock, ["i1", "i2"])
    assert compared == 6
    assert differ == 3  # v__a of i2, and both rows of the feature Feast did not return
    assert any("v__a of i2" in e for e in examples)
    assert any("v__only_ours" in e for e in examples)


def test_mismatches_all_equal():
    assert mismatches({"v__a": [math.nan]}, {"v__a": [None]}, ["u1"]) == (1, 0, [])


def test_ratios_take_the_faster_baseline_and_guard_zero():
    assert best_of({"p50": 10.0, "p99": 90.0}, {"p50": 12.0, "p99": 40.0}) == {"p50": 10.0, "p99": 40.0}
    assert speedup(10.0, 2.0) == 5.0
    assert speedup(None, 2.0) is None
    assert speedup(10.0, 0.0) is None
