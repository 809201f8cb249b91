"""Every statistic of nsdbench.stats against an independent implementation (scipy.stats,
statsmodels), on fixed data with and without ties."""

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from nsdbench import stats

RNG = np.random.default_rng(20211129)
# Fixed samples: continuous (no ties) and rounded (ties), of the sizes contrasts see.
CONTINUOUS = [RNG.normal(loc, 1.0, size) for loc, size in ((0.0, 7), (0.8, 5), (0.3, 11))]
TIED = [np.round(sample, 0) for sample in CONTINUOUS]
SINGLETONS = [np.array([0.31, 0.28]), np.array([0.12]), np.array([0.2])]  # the demo's shape


@pytest.mark.parametrize("groups", [CONTINUOUS, TIED, SINGLETONS, CONTINUOUS[:2]])
def test_kruskal_wallis_and_epsilon_squared_match_scipy(groups):
    ours = stats.kruskal_wallis(groups)
    oracle = scipy.stats.kruskal(*groups)
    assert ours.statistic == pytest.approx(oracle.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(oracle.pvalue, rel=1e-10)
    assert ours.df == len(groups) - 1
    n = sum(len(group) for group in groups)
    # Tomczak & Tomczak's E^2_R = H (n + 1) / (n^2 - 1)
    assert stats.epsilon_squared_ordinal(ours.statistic, n) == pytest.approx(
        oracle.statistic * (n + 1) / (n**2 - 1))


def test_kruskal_wallis_of_identical_values_is_nan():
    assert np.isnan(stats.kruskal_wallis([np.ones(3), np.ones(2)]).statistic)


@pytest.mark.parametrize(("a", "b", "method"), [
    (CONTINUOUS[0], CONTINUOUS[1], "exact"),  # smaller sample <= 8, no ties
    (np.array([0.31, 0.28]), np.array([0.12]), "exact"),
    (TIED[0], TIED[1], "asymptotic"),  # ties: normal approximation with tie correction
    (RNG.normal(0, 1, 12), RNG.normal(0.5, 1, 15), "asymptotic"),  # both > 8
])
def test_mann_whitney_matches_scipy(a, b, method):
    ours = stats.mann_whitney(a, b)
    oracle = scipy.stats.mannwhitneyu(a, b, method=method)
    assert ours.method == method
    assert ours.statistic == pytest.approx(oracle.statistic)
    assert ours.p_value == pytest.approx(oracle.pvalue, rel=1e-10)


def test_rank_biserial_is_the_probability_difference_over_all_pairs():
    a, b = TIED[0], TIED[2]
    difference = np.sign(a[:, None] - b[None, :]).mean()  # P(a > b) - P(a < b)
    u = scipy.stats.mannwhitneyu(a, b).statistic
    assert stats.u_statistic(a, b) == u
    assert stats.rank_biserial(u, a.size, b.size) == pytest.approx(difference)


@pytest.mark.parametrize(("differences", "method"), [
    (RNG.normal(0.4, 1.0, 9), "exact"),
    (RNG.normal(0.2, 1.0, 60), "asymptotic"),  # more than 50 pairs
    (np.array([0.5, -0.5, 1.0, 2.0, 0.0, 1.0, 3.0, -1.0]), "asymptotic"),  # ties and a zero
    (np.array([0.07]), "exact"),  # one twin pair: the demo
])
def test_wilcoxon_signed_rank_matches_scipy(differences, method):
    ours = stats.wilcoxon_signed_rank(differences)
    assert ours.method == method
    w_plus = scipy.stats.wilcoxon(differences, method=method, alternative="greater",
                                  zero_method="wilcox")
    two_sided = scipy.stats.wilcoxon(differences, method=method, zero_method="wilcox")
    assert ours.statistic == pytest.approx(w_plus.statistic)
    assert ours.p_value == pytest.approx(two_sided.pvalue, rel=1e-10)
    nonzero = differences[differences != 0]
    total = nonzero.size * (nonzero.size + 1) / 2
    assert stats.paired_rank_biserial(differences) == pytest.approx(
        (2 * w_plus.statistic - total) / total)


@pytest.mark.parametrize("p_values", [
    [0.01, 0.04, 0.03, 0.2, 0.0004],
    [0.5, 0.5, 0.01],
    [0.9],
    RNG.uniform(0, 0.1, 12),
])
def test_holm_matches_statsmodels(p_values):
    expected = multipletests(p_values, method="holm")[1]
    np.testing.assert_allclose(stats.holm(p_values), expected, rtol=1e-12)


def test_holm_leaves_missing_p_values_out_of_the_family():
    adjusted = stats.holm([0.01, np.nan, 0.04])
    np.testing.assert_allclose(adjusted[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    assert np.isnan(adjusted[1])


def test_bootstrap_mean_ci_agrees_with_normal_theory_and_scipy():
    values = np.random.default_rng(1).normal(0.3, 1.0, 400)
    low, high = stats.bootstrap_mean_ci(values, stats.rng_for(0, "mean"), n_boot=4000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half_width, abs=0.015)
    assert high == pytest.approx(values.mean() + half_width, abs=0.015)
    oracle = scipy.stats.bootstrap((values,), np.mean, method="percentile", n_resamples=4000,
                                   rng=np.random.default_rng(2)).confidence_interval
    assert low == pytest.approx(oracle.low, abs=0.015)
    assert high == pytest.approx(oracle.high, abs=0.015)


def test_bootstrap_groups_ci_is_the_percentile_interval_of_stratified_resamples():
    groups = TIED
    n = sum(len(group) for group in groups)
    low, high = stats.bootstrap_groups_ci(stats.epsilon_squared_batch, groups,
                                          stats.rng_for(0, "eps"), n_boot=300)
    rng = stats.rng_for(0, "eps")  # the same draws; each statistic from scipy
    draws = [group[rng.integers(0, group.size, size=(300, group.size))] for group in groups]
    oracle = [scipy.stats.kruskal(*[draw[row] for draw in draws]).statistic / (n - 1)
              for row in range(300)]
    assert (low, high) == pytest.approx(tuple(np.nanpercentile(oracle, [2.5, 97.5])))
    point = scipy.stats.kruskal(*groups).statistic / (n - 1)
    assert low <= point <= high


def test_batch_effect_sizes_match_scipy_row_by_row():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 5, (40, 6)).astype(float), rng.integers(1, 6, (40, 4)).astype(float)
    a[:, 0] = 0.0  # rows with ties across groups
    biserial = stats.rank_biserial_batch([a, b])
    epsilon = stats.epsilon_squared_batch([a, b])
    for row in range(40):
        u = scipy.stats.mannwhitneyu(a[row], b[row]).statistic
        assert biserial[row] == pytest.approx(2 * u / 24 - 1)
        if np.ptp(np.concatenate([a[row], b[row]])) > 0:
            assert epsilon[row] == pytest.approx(
                scipy.stats.kruskal(a[row], b[row]).statistic / 9)
    d = rng.integers(-3, 4, (40, 9)).astype(float)  # zeros and ties
    paired = stats.paired_rank_biserial_batch([d])
    for row in range(40):
        assert paired[row] == pytest.approx(stats.paired_rank_biserial(d[row]))
        nonzero = d[row][d[row] != 0]
        if nonzero.size:
            w_plus = scipy.stats.wilcoxon(nonzero, alternative="greater").statistic
            total = nonzero.size * (nonzero.size + 1) / 2
            assert paired[row] == pytest.approx((2 * w_plus - total) / total)


def test_rng_for_depends_on_seed_and_key_only():
    assert stats.rng_for(0, "a").random() == stats.rng_for(0, "a").random()
    assert stats.rng_for(0, "a").random() != stats.rng_for(0, "b").random()
    assert stats.rng_for(0, "a").random() != stats.rng_for(1, "a").random()
