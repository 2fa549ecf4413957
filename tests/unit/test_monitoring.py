"""Pure monitoring statistics: PSI (numeric, categorical, empty bins) and Wilson/Newcombe intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.monitoring import (
    EPSILON,
    bin_categorical,
    bin_numeric,
    difference_interval,
    psi_categorical,
    psi_from_shares,
    psi_numeric,
    wilson_interval,
)


def test_psi_of_known_shares():
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi_from_shares(np.array([0.5, 0.5]), np.array([0.9, 0.1])) == pytest.approx(expected, rel=1e-6)
    assert psi_from_shares(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5])) == pytest.approx(0.0, abs=1e-12)


def test_empty_bins_are_floored_at_epsilon():
    psi = psi_from_shares(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    p = np.array([1.0, EPSILON]) / (1 + EPSILON)
    q = np.array([0.5, 0.5])
    assert math.isfinite(psi)
    assert psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-9)
    assert psi > 2.0
    with pytest.raises(ValueError):
        psi_from_shares(np.array([0.0, 0.0]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        psi_from_shares(np.array([0.5, 0.5]), np.array([1.0]))


def test_numeric_identical_and_same_distribution_are_near_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20_000)
    assert psi_numeric(x, x) == pytest.approx(0.0, abs=1e-12)
    assert psi_numeric(x, rng.normal(size=20_000)) < 0.01


def test_numeric_shift_exceeds_threshold():
    rng = np.random.default_rng(1)
    reference = rng.lognormal(3.0, 0.5, size=10_000)  # prices
    assert psi_numeric(reference, reference * 1.5) > 0.2
    assert psi_numeric(reference, rng.lognormal(3.0, 0.5, size=10_000) * 1.05) < 0.1
    assert psi_numeric(rng.normal(size=10_000), rng.normal(1.0, 1.0, size=10_000)) > 0.5


def test_numeric_bins_are_reference_quantiles_with_open_outer_bins():
    reference = np.arange(100, dtype=float)
    b = bin_numeric(reference, np.array([-1e9, 1e9, np.nan]), bins=4)
    assert b.reference.tolist() == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert b.recent.tolist() == pytest.approx([0.5, 0.0, 0.0, 0.5])  # out-of-range values land in the outer bins
    constant = bin_numeric(np.ones(50), np.array([1.0, 2.0]))  # ties collapse to one edge: two bins
    assert len(constant.labels) == 2 and constant.reference.tolist() == [1.0, 0.0]
    assert math.isfinite(psi_from_shares(constant.reference, constant.recent))
    with pytest.raises(ValueError):
        bin_numeric(np.array([np.nan]), np.array([1.0]))


def test_categorical_psi():
    ref = ["books"] * 500 + ["games"] * 300 + ["music"] * 200
    assert psi_categorical(ref, list(reversed(ref))) == pytest.approx(0.0, abs=1e-12)
    shifted = ["books"] * 200 + ["games"] * 300 + ["music"] * 500
    assert psi_categorical(ref, shifted) > 0.2
    b = bin_categorical(ref, ref + ["garden"] * 100)  # a new category: an empty reference bin
    assert b.labels == ["books", "games", "garden", "music"] and b.reference[2] == 0.0
    assert 0.2 < psi_from_shares(b.reference, b.recent) < 10


def test_wilson_known_intervals():
    i = wilson_interval(50, 100)
    assert (i.estimate, round(i.low, 4), round(i.high, 4)) == (0.5, 0.4038, 0.5962)
    zero = wilson_interval(0, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    full = wilson_interval(10, 10)
    assert full.high == 1.0 and full.low == pytest.approx(10 / 13.8415, abs=1e-4)
    assert wilson_interval(0, 0).as_json() == {"estimate": 0.0, "low": 0.0, "high": 1.0}
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_newcombe_difference_matches_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80 → 0.2000 (0.0524, 0.3339)
    d = difference_interval(56, 70, 48, 80)
    assert d.estimate == pytest.approx(0.2)
    assert (round(d.low, 4), round(d.high, 4)) == (0.0524, 0.3339)
    same = difference_interval(30, 100, 30, 100)
    assert same.estimate == 0.0 and same.low < 0 < same.high
