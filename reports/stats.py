"""Small statistics for the reports: Wilson score intervals and the two-proportion z-test.

Pure functions of counts, with the standard normal distribution written out with ``math.erf`` (scipy is not a
dependency for two formulas). Checked in the tests against published values (Newcombe 1998; R's
``prop.test(correct = FALSE)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
# The two-sided 95% quantile of the standard normal distribution, Φ⁻¹(0.975).
Z_95 = 1.959963984540054
SIGNIFICANCE = 0.05


def normal_cdf(x: float) -> float:
    """Φ(x), the standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def two_sided_p(z: float) -> float:
    """The two-sided p-value of a standard normal statistic: 2·(1 − Φ(|z|)), computed without cancellation."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval for ``successes / trials`` (95% by default).

    Unlike the textbook ``p ± z·sqrt(p(1-p)/n)``, it stays inside [0, 1] and is not empty at 0% or 100%,
    which matters for villages of 20 households with a 100% target.

    Returns:
        ``(low, high)``, or None when ``trials`` is 0.

    Raises:
        ValueError: counts out of range.
    """
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return None
    n = trials
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    # Exact at the edges: 0/n has low 0 and n/n has high 1 (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class ProportionTest:
    """The change from proportion A to proportion B and whether it exceeds sampling noise."""

    change: float  # p_b − p_a
    z: float
    p_value: float
    significant: bool  # p_value < alpha


def two_proportion_test(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, alpha: float = SIGNIFICANCE
) -> ProportionTest | None:
    """The pooled two-proportion z-test (no continuity correction) of B against A.

    Returns:
        The test, or None when either side has no trials. When both sides are all-or-nothing alike (0% and
        0%, 100% and 100%) the pooled variance is 0: there is no evidence of a change, so z is 0 and p is 1.
    """
    for successes, trials in ((successes_a, trials_a), (successes_b, trials_b)):
        if trials < 0 or not 0 <= successes <= trials:
            raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials_a == 0 or trials_b == 0:
        return None
    p_a = successes_a / trials_a
    p_b = successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    variance = pooled * (1.0 - pooled) * (1.0 / trials_a + 1.0 / trials_b)
    if variance <= 0.0:
        return ProportionTest(change=p_b - p_a, z=0.0, p_value=1.0, significant=False)
    z = (p_b - p_a) / math.sqrt(variance)
    p_value = two_sided_p(z)
    return ProportionTest(change=p_b - p_a, z=z, p_value=p_value, significant=p_value < alpha)


def newcombe_interval(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, z: float = Z_95
) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval (1998, method 10) for the difference ``p_a − p_b``, 95% by default.

    Built from each side's Wilson interval ``(l, u)``: with ``d = p_a − p_b``,
    ``low = d − sqrt((p_a − l_a)² + (u_b − p_b)²)`` and ``high = d + sqrt((u_a − p_a)² + (p_b − l_b)²)``.
    Unlike the Wald interval it stays inside [−1, 1] and is not empty at 0% or 100%, which matters for a
    village with a few dozen households on each side.

    Returns:
        ``(low, high)``, or None when either side has no trials.

    Raises:
        ValueError: counts out of range.
    """
    a = wilson_interval(successes_a, trials_a, z)
    b = wilson_interval(successes_b, trials_b, z)
    if a is None or b is None:
        return None
    p_a, p_b = successes_a / trials_a, successes_b / trials_b
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - a[0]) ** 2 + (b[1] - p_b) ** 2)
    high = difference + math.sqrt((a[1] - p_a) ** 2 + (p_b - b[0]) ** 2)
    return max(-1.0, low), min(1.0, high)
