"""Scoring one layer: the three metrics against direct computations, and no self-leak."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from nsdbench.fit import BrainTargets, full_sample_intercept, score_layer
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


def test_constant_and_nan_layers_give_nan_scores():
    targets = brain()
    constant = np.ones((60, 10), dtype=np.float32)
    scores = score_layer(constant, targets, alphas=[1e5], srp_dim=None, seed=0, model="m",
                         layer="l")
    assert scores["score"].isna().all()
    broken = np.random.default_rng(0).standard_normal((60, 10)).astype(np.float32)
    broken[3, 3] = np.inf
    scores = score_layer(broken, targets, alphas=[1e5], srp_dim=None, seed=0, model="m",
                         layer="l")
    assert scores["score"].isna().all()
