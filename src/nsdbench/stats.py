"""Nonparametric tests, effect sizes, Holm's correction and bootstrap intervals.

Written from the textbook formulas (ranks with average ties) so that the tests can hold each
one against an independent implementation (scipy.stats, statsmodels). The choices follow the
paper's statistics (R's ggstatsplot): Kruskal-Wallis with the ordinal epsilon squared, pairwise
post-hoc tests with Holm's correction, and percentile bootstrap intervals.

- Kruskal-Wallis H is tie-corrected; its p value comes from chi-squared with k - 1 df.
- Mann-Whitney U (post-hoc pairs) and the Wilcoxon signed-rank test (paired twins) use the
  exact null distribution for small samples without ties (the rules scipy's ``method='auto'``
  documents), and the tie-corrected normal approximation otherwise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import chi2, norm, rankdata

N_BOOTSTRAP = 2000  # resamples behind every bootstrap interval (percentile, 95%)
EXACT_MANN_WHITNEY_MAX = 8  # exact U distribution when the smaller sample is at most this
EXACT_WILCOXON_MAX = 50  # exact signed-rank distribution up to this many nonzero pairs


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    df: float = float("nan")
    method: str = "asymptotic"


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator that depends on the global seed and a name, not on the order of calls."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def _tie_term(values) -> float:
    """Sum of t^3 - t over groups of tied values."""
    _, counts = np.unique(values, return_counts=True)
    return float(np.sum(counts.astype(float) ** 3 - counts))


def kruskal_wallis(groups) -> TestResult:
    """H = 12 / (N (N + 1)) * sum(R_i^2 / n_i) - 3 (N + 1), divided by 1 - sum(t^3 - t) /
    (N^3 - N) for ties; NaN when every value is the same."""
    groups = [np.asarray(group, dtype=float) for group in groups]
    pooled = np.concatenate(groups)
    n = pooled.size
    ranks = rankdata(pooled)
    bounds = np.cumsum([0] + [group.size for group in groups])
    rank_sums = np.array([ranks[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])])
    sizes = np.array([group.size for group in groups], dtype=float)
    h = 12.0 / (n * (n + 1)) * np.sum(rank_sums**2 / sizes) - 3.0 * (n + 1)
    correction = 1.0 - _tie_term(pooled) / (n**3 - n)
    if correction <= 0:
        return TestResult(float("nan"), float("nan"), len(groups) - 1)
    h /= correction
    df = len(groups) - 1
    return TestResult(float(h), float(chi2.sf(h, df)), df, "chi-squared")


def epsilon_squared_ordinal(h: float, n: int) -> float:
    """Rank epsilon squared (Tomczak & Tomczak 2014): H / ((n^2 - 1) / (n + 1))."""
    return float(h / ((n**2 - 1) / (n + 1)))


@lru_cache(maxsize=256)
def _exact_mann_whitney_counts(n1: int, n2: int) -> np.ndarray:
    """Number of arrangements giving U = 0..n1*n2 (no ties), by the recursion
    c(n1, n2, u) = c(n1 - 1, n2, u - n2) + c(n1, n2 - 1, u)."""
    table = {}
    for a in range(n1 + 1):
        for b in range(n2 + 1):
            counts = np.zeros(a * b + 1)
            if a == 0 or b == 0:
                counts[0] = 1
            else:
                counts[b:] += table[a - 1, b][: a * b + 1 - b]
                counts[: (a * (b - 1)) + 1] += table[a, b - 1]
            table[a, b] = counts
    return table[n1, n2]


def mann_whitney(a, b) -> TestResult:
    """Two-sided Mann-Whitney U; ``statistic`` is U of ``a`` (pairs where a beats b, ties half)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = a.size, b.size
    pooled = np.concatenate([a, b])
    ranks = rankdata(pooled)
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    ties = _tie_term(pooled)
    if min(n1, n2) <= EXACT_MANN_WHITNEY_MAX and ties == 0:
        counts = _exact_mann_whitney_counts(n1, n2)
        u_big = int(round(max(u1, n1 * n2 - u1)))
        p = 2.0 * counts[u_big:].sum() / counts.sum()
        return TestResult(float(u1), float(min(p, 1.0)), method="exact")
    n = n1 + n2
    mean = n1 * n2 / 2.0
    sd = np.sqrt(n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))))
    if sd == 0:
        return TestResult(float(u1), float("nan"))
    z = (abs(u1 - mean) - 0.5) / sd  # continuity correction, as scipy's default
    return TestResult(float(u1), float(min(2.0 * norm.sf(z), 1.0)))


def u_statistic(a, b) -> float:
    """U of ``a``: the pairs (a_i, b_j) with a_i > b_j, ties counted one half."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum())


def rank_biserial(u_a: float, n_a: int, n_b: int) -> float:
    """Rank-biserial correlation of two samples: 2 U_a / (n_a n_b) - 1, in [-1, 1]."""
    return float(2.0 * u_a / (n_a * n_b) - 1.0)


@lru_cache(maxsize=256)
def _exact_signed_rank_counts(n: int) -> np.ndarray:
    """Number of sign patterns giving W+ = 0..n(n+1)/2 for ranks 1..n."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return counts


def wilcoxon_signed_rank(differences) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of paired differences; zero differences are dropped
    (Wilcox's convention). ``statistic`` is W+, the sum of the ranks of positive differences."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return TestResult(0.0, float("nan"))
    ranks = rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    total = n * (n + 1) / 2.0
    ties = _tie_term(np.abs(d))
    if n <= EXACT_WILCOXON_MAX and ties == 0:
        counts = _exact_signed_rank_counts(n)
        w_small = int(round(min(w_plus, total - w_plus)))
        p = 2.0 * counts[: w_small + 1].sum() / counts.sum()
        return TestResult(w_plus, float(min(p, 1.0)), method="exact")
    sd = np.sqrt(n * (n + 1) * (2 * n + 1) / 24.0 - ties / 48.0)
    if sd == 0:
        return TestResult(w_plus, float("nan"))
    z = (w_plus - total / 2.0) / sd
    return TestResult(w_plus, float(min(2.0 * norm.sf(abs(z)), 1.0)))


def paired_rank_biserial(differences) -> float:
    """Matched-pairs rank-biserial correlation: (W+ - W-) / (W+ + W-), zeros dropped."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p values; NaN entries are left out of the family."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = present.size
    order = present[np.argsort(p[present], kind="stable")]
    running = 0.0
    for step, index in enumerate(order):
        running = max(running, min(1.0, (m - step) * p[index]))
        adjusted[index] = running
    return adjusted


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(values, rng: np.random.Generator, n_boot: int = N_BOOTSTRAP):
    """Percentile 95% CI of the mean, resampling the values with replacement."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    draws = rng.integers(0, values.size, size=(n_boot, values.size))
    return percentile_interval(values[draws].mean(axis=1))


def bootstrap_groups_ci(statistic, groups, rng: np.random.Generator,
                        n_boot: int = N_BOOTSTRAP):
    """Percentile 95% CI of a statistic of the groups, each group resampled within itself (so
    every resample keeps the design's group sizes). ``statistic`` takes one (n_boot, n_g)
    array of resamples per group and returns the n_boot estimates."""
    groups = [np.asarray(group, dtype=float) for group in groups]
    resampled = [group[rng.integers(0, group.size, size=(n_boot, group.size))]
                 for group in groups]
    return percentile_interval(statistic(resampled))


def epsilon_squared_batch(resampled) -> np.ndarray:
    """Ordinal epsilon squared of each row of the resampled groups (tie-corrected H)."""
    pooled = np.concatenate(resampled, axis=1)
    n = pooled.shape[1]
    ranks = rankdata(pooled, axis=1)
    bounds = np.cumsum([0] + [group.shape[1] for group in resampled])
    between = sum(ranks[:, a:b].sum(axis=1) ** 2 / (b - a)
                  for a, b in zip(bounds[:-1], bounds[1:]))
    h = 12.0 / (n * (n + 1)) * between - 3.0 * (n + 1)
    # With average ranks, sum(r^2) = n(n+1)(2n+1)/6 - sum(t^3 - t)/12: the tie term per row.
    ties = 12.0 * (n * (n + 1) * (2 * n + 1) / 6.0 - (ranks**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = h / (1.0 - ties / (n**3 - n))
    return h / (n - 1)


def rank_biserial_batch(resampled) -> np.ndarray:
    """Rank-biserial correlation of each row of two resampled groups."""
    a, b = resampled
    greater = (a[:, :, None] > b[:, None, :]).sum(axis=(1, 2))
    equal = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
    return 2.0 * (greater + 0.5 * equal) / (a.shape[1] * b.shape[1]) - 1.0


def paired_rank_biserial_batch(resampled) -> np.ndarray:
    """Matched-pairs rank-biserial correlation of each row of resampled differences (zeros
    dropped: they hold the lowest ranks, so the others' ranks shift down by their count)."""
    (d,) = resampled
    ranks = rankdata(np.abs(d), axis=1) - (d == 0).sum(axis=1, keepdims=True)
    positive = np.where(d > 0, ranks, 0.0).sum(axis=1)
    negative = np.where(d < 0, ranks, 0.0).sum(axis=1)
    total = positive + negative
    return np.divide(positive - negative, total, out=np.zeros_like(total), where=total > 0)
