"""Wilson intervals and the two-proportion test against published values."""

from __future__ import annotations

import math

import pytest

from reports.stats import (
    Z_95,
    newcombe_interval,
    normal_cdf,
    two_proportion_test,
    two_sided_p,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe, "Two-sided confidence intervals for the single proportion" (Stat Med 1998), Table I,
        # method 3 (score interval without continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # R: prop.test(19, 20, correct = FALSE)$conf.int
        (19, 20, 0.7639, 0.9911),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_matches_published_values(successes: int, trials: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, trials)

    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=5e-5)
    assert interval[1] == pytest.approx(high, abs=5e-5)


def test_wilson_edges_are_exact_and_inside_zero_one() -> None:
    assert wilson_interval(0, 7)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    for n in (1, 2, 5, 30, 1000):
        for x in range(0, n + 1, max(1, n // 10)):
            low, high = wilson_interval(x, n)
            assert 0.0 <= low <= x / n <= high <= 1.0


def test_wilson_without_trials_is_none_and_bad_counts_raise() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


def test_normal_cdf() -> None:
    assert normal_cdf(0) == 0.5
    assert normal_cdf(Z_95) == pytest.approx(0.975, abs=1e-12)
    assert normal_cdf(-1.0) == pytest.approx(0.15865525393145707, abs=1e-12)
    assert two_sided_p(Z_95) == pytest.approx(0.05, abs=1e-12)
    # Far in the tail erfc keeps precision where 1 - cdf would round to 0.
    assert two_sided_p(9.0) == pytest.approx(2.2571768119076845e-19, rel=1e-9)


def test_two_proportion_test_matches_r_prop_test() -> None:
    # R: prop.test(c(45, 60), c(100, 100), correct = FALSE): X-squared = 4.5113, p-value = 0.03367
    test = two_proportion_test(45, 100, 60, 100)

    assert test.change == pytest.approx(0.15)
    assert test.z**2 == pytest.approx(4.5113, abs=1e-4)
    assert test.p_value == pytest.approx(0.03367, abs=1e-5)
    assert test.significant


def test_two_proportion_test_direction_and_noise() -> None:
    down = two_proportion_test(60, 100, 45, 100)
    assert down.z < 0 and down.significant and down.change == pytest.approx(-0.15)
    # 18/20 -> 17/20 is well within the noise of 20 interviews.
    noise = two_proportion_test(18, 20, 17, 20)
    assert not noise.significant
    assert noise.p_value == pytest.approx(math.erfc(abs(noise.z) / math.sqrt(2)))


def test_two_proportion_test_degenerate_cases() -> None:
    assert two_proportion_test(0, 0, 3, 5) is None
    assert two_proportion_test(3, 5, 0, 0) is None
    same = two_proportion_test(20, 20, 30, 30)  # 100% and 100%: no variance, no evidence of change
    assert (same.z, same.p_value, same.significant) == (0.0, 1.0, False)
    with pytest.raises(ValueError):
        two_proportion_test(6, 5, 1, 5)


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b", "low", "high"),
    [
        # Newcombe, "Interval estimation for the difference between independent proportions: comparison of
        # eleven methods" (Stat Med 1998), Table II, method 10 (score interval, hybrid, no continuity correction).
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (0, 10, 0, 10, -0.2775, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
        (10, 10, 0, 10, 0.6075, 1.0),
    ],
)
def test_newcombe_matches_published_values(a: int, n_a: int, b: int, n_b: int, low: float, high: float) -> None:
    interval = newcombe_interval(a, n_a, b, n_b)

    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=5e-5)
    assert interval[1] == pytest.approx(high, abs=5e-5)


def test_newcombe_is_antisymmetric_inside_minus_one_one_and_holds_the_difference() -> None:
    for a, n_a, b, n_b in ((3, 9, 7, 8), (0, 4, 4, 4), (50, 100, 50, 100), (1, 1000, 999, 1000)):
        low, high = newcombe_interval(a, n_a, b, n_b)
        back_low, back_high = newcombe_interval(b, n_b, a, n_a)
        assert (low, high) == pytest.approx((-back_high, -back_low))
        assert -1.0 <= low <= a / n_a - b / n_b <= high <= 1.0


def test_newcombe_without_trials_is_none_and_bad_counts_raise() -> None:
    assert newcombe_interval(0, 0, 3, 5) is None
    assert newcombe_interval(3, 5, 0, 0) is None
    with pytest.raises(ValueError):
        newcombe_interval(6, 5, 1, 5)
