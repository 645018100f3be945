"""Uncertainty of success rates, for ranking attacks on a few hundred images.

- `wilson_interval`: the Wilson score interval of a binomial rate (Wilson 1927). Unlike the normal-approximation
  interval it stays inside [0, 1] and keeps its coverage near 0 % and 100 %, where transfer rates often sit.
- `paired_test`: two attacks on the same images compared image by image, with the exact McNemar test (a two-sided
  binomial test on the images where exactly one of them succeeds). Pairing removes the variation between images,
  so it separates methods that unpaired intervals cannot.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple:
    """(low, high) of the Wilson score interval for `successes` out of `trials`; (nan, nan) for no trials."""
    if not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval: successes must lie in [0, trials], got {successes} of {trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"wilson_interval: confidence must lie in (0, 1), got {confidence}")
    if trials == 0:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + confidence / 2)
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    # At 0 (or all) successes the bound is exactly 0 (or 1); the formula gets there only up to rounding.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Attack A against attack B on the same images: `only_a` images fooled by A alone, `only_b` by B alone,
    `p_value` of the exact McNemar test (1.0 when they never disagree)."""

    images: int
    only_a: int
    only_b: int
    p_value: float

    @property
    def difference(self) -> float:
        """Rate of A minus rate of B (a fraction of the images)."""
        return (self.only_a - self.only_b) / self.images if self.images else math.nan


def paired_test(success_a, success_b) -> PairedComparison:
    """Exact McNemar test of two per-image success vectors (same images, same order; booleans)."""
    a, b = np.asarray(success_a, bool), np.asarray(success_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test: needs two 1-D success vectors of one length, got shapes {a.shape} and "
                         f"{b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return PairedComparison(images=int(a.size), only_a=only_a, only_b=only_b, p_value=p_value)
