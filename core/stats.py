"""How sure to be of a figure: the intervals and tests the lab puts beside its accuracies.

Everything here is a number in, a number out (no runs, no files), from statsmodels and scipy:
- `wilson`: the 95% Wilson score interval of an accuracy (k right of n), which keeps its
  coverage near 0 and 100% where the normal approximation does not;
- `mcnemar`: McNemar's exact test of two classifiers on the same images (Dietterich 1998): only
  the images exactly one of them gets right count, and under "no difference" each is equally
  likely to be either's, so the count is Binomial(discordant, 1/2);
- `paired_difference_ci`: Newcombe's (1998, method 10) hybrid score interval for the difference
  of two accuracies measured on the same images;
- `holm`: Holm's step-down correction of several p-values;
- `welch`: Welch's t-test of two groups of per-seed accuracies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# heavy: scipy.stats and statsmodels take about 0.5 s to import, so they are imported in the
# functions below: a command that shows no interval or test (train, predict) does not pay it.

ALPHA = 0.05  # the significance level of every test the lab reports
LEVEL = 0.95  # of every interval
MIN_SEEDS = 2  # per group: a standard deviation needs two values


def wilson(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of the proportion correct/n, as fractions in [0, 1]."""
    if n <= 0:
        raise ValueError("an interval needs at least one image")
    if not 0 <= correct <= n:
        raise ValueError(f"{correct} correct of {n} is not a proportion")
    from statsmodels.stats.proportion import proportion_confint  # heavy: see the top
    low, high = proportion_confint(correct, n, alpha=1 - level, method="wilson")
    return float(low), float(high)


def wilson_percent(correct: int, n: int) -> tuple[float, float]:
    low, high = wilson(correct, n)
    return 100 * low, 100 * high


@dataclass(frozen=True)
class Paired:
    """Two classifiers on the same n images: the 2x2 table of right/wrong and what it says."""
    both: int        # right by both
    a_only: int      # right by A alone
    b_only: int      # right by B alone
    neither: int     # wrong by both
    p_value: float   # McNemar, exact (two-sided)
    difference: float                  # accuracy of A minus that of B, a fraction
    difference_ci: tuple[float, float]  # Newcombe's paired 95% interval of it

    @property
    def n(self) -> int:
        return self.both + self.a_only + self.b_only + self.neither

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def mcnemar(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts (1.0 when there are none)."""
    if a_only + b_only == 0:
        return 1.0
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar  # heavy: see the top
    return float(sm_mcnemar([[0, a_only], [b_only, 0]], exact=True).pvalue)


def paired_difference_ci(both: int, a_only: int, b_only: int, neither: int,
                         level: float = LEVEL) -> tuple[float, float]:
    """Newcombe's method 10: the interval of p_A - p_B for paired proportions, built from the
    Wilson intervals of each accuracy and the correlation of the two classifiers' hits."""
    n = both + a_only + b_only + neither
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson(both + a_only, n, level)
    l2, u2 = wilson(both + b_only, n, level)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    phi = (both * neither - a_only * b_only) / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    theta = p1 - p2
    return max(-1.0, theta - delta), min(1.0, theta + epsilon)


def paired(a_correct: np.ndarray, b_correct: np.ndarray) -> Paired:
    """The comparison of two classifiers from their per-image right (True) / wrong (False)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError("two classifiers are compared on the same, non-empty list of images")
    both, a_only = int((a & b).sum()), int((a & ~b).sum())
    b_only, neither = int((~a & b).sum()), int((~a & ~b).sum())
    return Paired(both, a_only, b_only, neither, mcnemar(a_only, b_only), (a_only - b_only) / len(a),
                  paired_difference_ci(both, a_only, b_only, neither))


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values, in the order given (each at most 1)."""
    values = np.asarray(p_values, dtype=float)
    if not values.size:
        return values
    from statsmodels.stats.multitest import multipletests  # heavy: see the top
    return multipletests(values, alpha=ALPHA, method="holm")[1]


@dataclass(frozen=True)
class GroupTest:
    """Two groups of per-seed accuracies (in %), and Welch's t-test of their means where it can run."""
    a_mean: float
    b_mean: float
    a_seeds: int
    b_seeds: int
    p_value: float | None   # None: too few seeds to test
    reason: str = ""         # why there is no test

    @property
    def tested(self) -> bool:
        return self.p_value is not None


def welch(a: list[float], b: list[float]) -> GroupTest:
    """Welch's t-test (unequal variances) of two groups' accuracies; untested, with the reason,
    when a group has fewer than MIN_SEEDS seeds or neither group varies."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    if min(len(a), len(b)) < MIN_SEEDS:
        return GroupTest(mean(a), mean(b), len(a), len(b), None,
                         f"too few seeds to test: {len(a)} and {len(b)}; each group needs at least {MIN_SEEDS}")
    if np.var(a) == 0 and np.var(b) == 0:
        return GroupTest(mean(a), mean(b), len(a), len(b), None,
                         "every seed of both groups scored the same: there is no spread to test against")
    from scipy.stats import ttest_ind  # heavy: see the top
    result = ttest_ind(a, b, equal_var=False)
    return GroupTest(mean(a), mean(b), len(a), len(b), float(result.pvalue))
