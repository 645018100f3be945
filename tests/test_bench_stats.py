"""Success-rate uncertainty for the leaderboard: the Wilson interval against SciPy's, and the exact McNemar test
against its definition (a binomial tail computed here from the binomial coefficients)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tfattack.bench.stats import paired_test, wilson_interval


@pytest.mark.parametrize("successes,trials", [(0, 20), (1, 20), (10, 20), (19, 20), (20, 20), (137, 500), (1, 1)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_equals_scipys(successes, trials, confidence):
    expected = scipy_stats.binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    low, high = wilson_interval(successes, trials, confidence)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)
    assert 0 <= low <= successes / trials <= high <= 1


def test_wilson_interval_edges_and_errors():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes must lie in"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence must lie in"):
        wilson_interval(1, 3, confidence=1.0)


def two_sided_binomial_p(k, n):
    """Exact two-sided p of k successes in n fair trials: the probability of outcomes no more likely than k."""
    probabilities = np.array([math.comb(n, i) for i in range(n + 1)], float) / 2.0 ** n
    return min(1.0, probabilities[probabilities <= probabilities[k] * (1 + 1e-7)].sum())


def test_paired_test_is_the_exact_mcnemar_test():
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.6
    b = a.copy()
    flip = rng.choice(300, 40, replace=False)
    b[flip[:30]] = ~b[flip[:30]]  # B loses or gains 30 images
    result = paired_test(a, b)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    assert (result.images, result.only_a, result.only_b) == (300, only_a, only_b) and only_a + only_b == 30
    assert result.p_value == pytest.approx(two_sided_binomial_p(only_a, only_a + only_b), rel=1e-9)
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert paired_test(a, a).p_value == 1.0 and paired_test(a, a).difference == 0
    # 12 images won by A alone and none by B: p = 2 / 2^12
    one_sided = paired_test([True] * 12 + [False] * 3, [False] * 15)
    assert one_sided.p_value == pytest.approx(2 / 2 ** 12)
    with pytest.raises(ValueError, match="one length"):
        paired_test([True, False], [True])
