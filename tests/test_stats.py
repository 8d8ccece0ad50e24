"""core.stats against oracles: closed forms, the binomial distribution, worked examples and
simulated coverage, never the library call that produced the figure."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm, t as student_t

from core import stats


@pytest.mark.parametrize("correct,n", [(9938, 10_000), (9969, 10_000), (0, 50), (50, 50), (7, 13)])
def test_wilson_is_the_closed_form(correct, n):
    z = norm.ppf(0.975)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = stats.wilson(correct, n)
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-12)


def test_the_issue_s_cnn16k_interval_holds_the_seed_s_figure():
    low, high = stats.wilson_percent(9938, 10_000)
    assert round(low, 2) == 99.21 and round(high, 2) == 99.52
    assert low < 99.4 < high


@pytest.mark.parametrize("a_only,b_only", [(21, 12), (16, 38), (0, 5), (3, 3), (1, 0), (250, 200)])
def test_mcnemar_exact_is_the_two_sided_binomial_tail(a_only, b_only):
    k, m = min(a_only, b_only), a_only + b_only
    expected = min(1.0, 2 * binom.cdf(k, m, 0.5))
    assert stats.mcnemar(a_only, b_only) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_of_the_issue_s_pairs():
    assert round(stats.mcnemar(21, 12), 2) == 0.16      # labnet vs resnet: no evidence
    assert round(stats.mcnemar(16, 38), 3) == 0.004     # cnn16k vs resnet: a real difference
    assert stats.mcnemar(0, 0) == 1.0                   # identical predictions


def test_paired_counts_the_two_by_two_table():
    a = np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)
    b = np.array([1, 0, 1, 0, 0, 0, 1], dtype=bool)
    result = stats.paired(a, b)
    assert (result.both, result.a_only, result.b_only, result.neither) == (2, 2, 1, 2)
    assert result.difference == pytest.approx((a.mean() - b.mean()))
    with pytest.raises(ValueError):
        stats.paired(a, b[:3])


def test_the_paired_interval_is_symmetric_when_the_discordant_counts_are_equal():
    low, high = stats.paired_difference_ci(9900, 20, 20, 60)
    assert low == pytest.approx(-high) and low < 0 < high


def test_the_paired_interval_covers_the_true_difference_95_percent_of_the_time():
    """Simulated coverage: two correlated classifiers with known accuracies 0.97 and 0.96."""
    rng = np.random.default_rng(0)
    cells = np.array([0.95, 0.02, 0.01, 0.02])  # both, A only, B only, neither
    true = cells[1] - cells[2]
    trials, n, covered = 2000, 2000, 0
    for counts in rng.multinomial(n, cells, size=trials):
        low, high = stats.paired_difference_ci(*map(int, counts))
        covered += low <= true <= high
    assert 0.93 <= covered / trials <= 0.97


def test_holm_matches_a_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_welch_is_the_unequal_variance_t_test_by_hand():
    a, b = [99.1, 99.3, 99.2, 99.4], [98.9, 99.0, 98.7]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    result = stats.welch(a, b)
    assert result.p_value == pytest.approx(2 * student_t.sf(abs(t), df), rel=1e-9)
    assert (result.a_seeds, result.b_seeds) == (4, 3)


def test_welch_says_plainly_when_there_are_too_few_seeds():
    one = stats.welch([99.2], [99.0, 99.1, 98.9])
    assert not one.tested and "too few seeds" in one.reason and "1 and 3" in one.reason
    flat = stats.welch([99.0, 99.0], [99.0, 99.0])
    assert not flat.tested and "same" in flat.reason
