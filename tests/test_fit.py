"""Scoring one layer: the three metrics against direct computations, and no self-leak."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from nsdbench.fit import BrainTargets, CentredTargets, full_sample_intercept, score_layer
from nsdbench.reduce import centred_gram_of
from nsdbench.ridge import DualRidge
from nsdbench.rsa import compare_rdms, pearson_columns, rdm


def brain(n=60, voxels=(30, 20), seed=0, signal=None):
    rng = np.random.default_rng(seed)
    sets = {}
    for index, count in enumerate(voxels):
        noise = rng.standard_normal((n, count))
        values = noise
        if signal is not None:
            values = signal @ rng.standard_normal((signal.shape[1], count)) + noise
        sets[("01", f"roi{index}")] = values.astype(np.float32)
    return BrainTargets.from_sets(sets, np.arange(n))


def test_scores_equal_direct_computation():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((60, 300)).astype(np.float32) * 40
    targets = brain(signal=features[:, :10] / 40)
    scores = score_layer(features, targets, alphas=[1e5], srp_dim=None, seed=0, model="m",
                         layer="l").set_index(["roi", "metric"])["score"]
    for (_subject, roi), columns in targets.columns.items():
        y = targets.responses[:, columns].astype(np.float64)
        loo = np.stack([
            Ridge(alpha=1e5).fit(np.delete(features, i, 0), np.delete(y, i, 0))
            .predict(features[i:i + 1])[0] for i in range(60)
        ])
        assert scores[(roi, "voxel_r")] == pytest.approx(pearson_columns(loo, y).mean(), abs=1e-4)
        cleaned = loo + (y - y.mean(0)) / 59
        assert scores[(roi, "versa")] == pytest.approx(compare_rdms(rdm(cleaned), rdm(y)), abs=1e-4)
        assert scores[(roi, "crsa")] == pytest.approx(compare_rdms(rdm(features), rdm(y)), abs=1e-6)


def test_one_intercept_leaves_only_the_fitted_part_to_differ():
    """Oracle: sklearn refits without image i give ybar_(-i) + (x_i - xbar_(-i)) w_(-i);
    with the common intercept, prediction i must be ybar + (x_i - xbar_(-i)) w_(-i)."""
    rng = np.random.default_rng(2)
    features = rng.standard_normal((40, 50))
    y = features[:, :3] @ rng.standard_normal((3, 5)) + rng.standard_normal((40, 5))
    ridge = DualRidge(centred_gram_of(features))
    cleaned = full_sample_intercept(ridge.loo_predictions(y, 1e2, np.float64), y)
    for i in range(40):
        x_rest, y_rest = np.delete(features, i, 0), np.delete(y, i, 0)
        model = Ridge(alpha=1e2).fit(x_rest, y_rest)
        fitted_part = (features[i] - x_rest.mean(0)) @ model.coef_.T
        np.testing.assert_allclose(cleaned[i], y.mean(0) + fitted_part, atol=1e-9)


def test_uninformative_layer_does_not_mimic_the_brain():
    """An over-shrunk layer's LOO predictions are the others' mean; their RDM must not
    reproduce the brain RDM (without the correction they largely do)."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((60, 200)).astype(np.float32) * 1e-3  # far below alpha
    targets = brain(seed=4, signal=rng.standard_normal((60, 5)))
    scores = score_layer(features, targets, alphas=[1e5], srp_dim=None, seed=0, model="m",
                         layer="l")
    versa = scores.loc[scores["metric"] == "versa", "score"]
    assert (versa.abs() < 0.2).all()
    raw = DualRidge(centred_gram_of(features)).loo_predictions(targets.responses, 1e5)
    columns = targets.columns[("01", "roi0")]
    leaky = compare_rdms(rdm(raw[:, columns]), targets.rdms[("01", "roi0")])
    assert leaky > 0.4  # what the uncorrected predictions score: the brain RDM mirrored


@pytest.mark.parametrize("srp_dim", [None, 8])
@pytest.mark.parametrize("problem", ["constant", "nan", "inf"])
def test_constant_and_nonfinite_layers_give_nan_scores_and_a_warning(problem, srp_dim, caplog):
    targets = brain()
    features = np.random.default_rng(0).standard_normal((60, 40)).astype(np.float32)
    if problem == "constant":
        features = np.full((60, 40), 0.1, dtype=np.float32)
    else:
        features[3, 33] = np.nan if problem == "nan" else -np.inf
    with caplog.at_level("WARNING", logger="nsdbench.fit"):
        scores = score_layer(features, targets, alphas=[1e5], srp_dim=srp_dim, seed=0,
                             model="m", layer="l")
    assert len(scores) == 2 * 3 and scores["score"].isna().all()
    expected = "only constant features" if problem == "constant" else "NaN or inf values"
    assert [record.getMessage() for record in caplog.records] == [
        f"model m layer l has {expected}: its scores are NaN"
    ]


@pytest.mark.parametrize(("scale", "voxel_means"), [(1e-2, 0.0), (1.0, 20.0), (30.0, 20.0),
                                                    (1000.0, 20.0)])
def test_scores_equal_refits_from_over_shrinkage_to_none(scale, voxel_means):
    """voxel r and veRSA against n sklearn refits, from a layer far below the penalty to one
    far above it, with voxel means much larger than the voxels' spread. (Not both at once:
    then the predicted patterns differ by ~1e-10 of their norm, and even the float64 refits'
    RDM is rounding noise.)"""
    rng = np.random.default_rng(5)
    n = 40
    features = (rng.standard_normal((n, 120)) * scale + 3 * scale).astype(np.float32)
    signal = (features[:, :4] - features[:, :4].mean(0)) / scale
    targets = brain(n=n, voxels=(12,), seed=6, signal=signal)
    targets.responses += voxel_means * rng.standard_normal(12).astype(np.float32)
    targets = BrainTargets.from_sets({("01", "roi0"): targets.responses}, np.arange(n))
    scores = score_layer(features, targets, alphas=[1e5], srp_dim=None, seed=0, model="m",
                         layer="l").set_index("metric")["score"]
    x, y = features.astype(np.float64), targets.responses.astype(np.float64)
    loo = np.stack([Ridge(alpha=1e5).fit(np.delete(x, i, 0), np.delete(y, i, 0))
                    .predict(x[i:i + 1])[0] for i in range(n)])
    assert scores["voxel_r"] == pytest.approx(pearson_columns(loo, y).mean(), abs=1e-4)
    cleaned = full_sample_intercept(loo, y)
    assert scores["versa"] == pytest.approx(compare_rdms(rdm(cleaned), rdm(y)), abs=1e-4)


def test_penalty_grid_scores_equal_refits_with_each_voxels_chosen_penalty():
    """A grid of penalties: each voxel gets the one of least LOO squared error (found here by
    brute-force refits), and voxel r, veRSA and the reported median penalty are those of the
    refits with the chosen penalties."""
    rng = np.random.default_rng(7)
    n, alphas = 40, [1e0, 1e2, 1e4, 1e6]
    features = rng.standard_normal((n, 30)).astype(np.float32) * 3
    strength = np.linspace(0.0, 2.0, 16)  # noise-only voxels prefer large penalties
    y = (features[:, :3] @ rng.standard_normal((3, 16)) * strength
         + rng.standard_normal((n, 16)) + 5.0).astype(np.float32)
    targets = BrainTargets.from_sets({("01", "roi0"): y}, np.arange(n))
    scores = score_layer(features, targets, alphas=alphas, srp_dim=None, seed=0, model="m",
                         layer="l").set_index("metric")
    x, y64 = features.astype(np.float64), y.astype(np.float64)
    refits = np.stack([
        np.stack([Ridge(alpha=alpha).fit(np.delete(x, i, 0), np.delete(y64, i, 0))
                  .predict(x[i:i + 1])[0] for i in range(n)])
        for alpha in alphas
    ])
    chosen = ((refits - y64) ** 2).sum(axis=1).argmin(axis=0)
    assert len(set(chosen)) > 1  # the voxels do not all prefer one penalty
    loo = refits[chosen, :, np.arange(16)].T
    assert scores.loc["voxel_r", "score"] == pytest.approx(
        pearson_columns(loo, y64).mean(), abs=1e-4)
    assert scores.loc["versa", "score"] == pytest.approx(
        compare_rdms(rdm(full_sample_intercept(loo, y64)), rdm(y64)), abs=1e-4)
    assert scores.loc["versa", "alpha"] == np.median(np.asarray(alphas)[chosen])


def test_centring_in_place_scores_as_a_copy_does():
    """The fit job centres the responses in place (no second n x V copy); the scores equal
    those of the copying path, and scoring the consumed targets again stays right."""
    rng = np.random.default_rng(9)
    features = rng.standard_normal((60, 80)).astype(np.float32) * 30
    signal = features[:, :5] / 30
    expected = score_layer(features, brain(signal=signal, seed=10), alphas=[1e5], srp_dim=None,
                           seed=0, model="m", layer="l")
    consumed = brain(signal=signal, seed=10)
    centred = CentredTargets(consumed, in_place=True)
    assert consumed.responses is centred.responses
    for targets in (centred, consumed):
        scores = score_layer(features, targets, alphas=[1e5], srp_dim=None, seed=0, model="m",
                             layer="l")
        pd.testing.assert_frame_equal(scores, expected)
