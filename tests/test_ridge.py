"""The dual GCV ridge against n brute-force sklearn refits (the oracle)."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from nsdbench.reduce import reduce_layer
from nsdbench.ridge import DualRidge, fit_predict


def brute_force_loo(features, responses, alpha):
    predictions = np.empty_like(responses, dtype=np.float64)
    for left_out in range(len(features)):
        keep = np.arange(len(features)) != left_out
        model = Ridge(alpha=alpha, fit_intercept=True).fit(features[keep], responses[keep])
        predictions[left_out] = model.predict(features[left_out:left_out + 1])[0]
    return predictions


def planted_data(n=50, d=400, v=6, scale=1.0, offset=3.0, seed=0):
    rng = np.random.default_rng(seed)
    features = scale * (rng.standard_normal((n, d)) + offset)
    weights = rng.standard_normal((20, v)) / scale
    responses = features[:, :20] @ weights + rng.standard_normal((n, v))
    return features, responses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loo_equals_brute_force_refits(dtype):
    features, responses = planted_data()
    features = features.astype(dtype)
    gram = reduce_layer(features, n_components=None, gram_dtype=np.float64).centred_gram
    loo = DualRidge(gram).loo_predictions(responses, 1e5, dtype=np.float64)
    expected = brute_force_loo(features.astype(np.float64), responses, 1e5)
    relative = np.abs(loo - expected).max() / np.abs(expected).max()
    assert relative < 1e-6


def test_mixed_precision_path_is_close_to_refits():
    """float32 Gram of centred blocks and float32 LOO product, as the workflow runs."""
    features, responses = planted_data(seed=4)
    gram = reduce_layer(features.astype(np.float32), n_components=None).centred_gram
    loo = DualRidge(gram).loo_predictions(responses, 1e5)
    expected = brute_force_loo(features, responses, 1e5)
    assert np.abs(loo - expected).max() < 1e-4 * responses.std()


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0, 1000.0])
def test_loo_across_feature_scales_including_over_shrinkage(scale):
    """Scales from over-shrinkage (lambda >> spectrum) to almost no shrinkage."""
    features, responses = planted_data(scale=scale, seed=1)
    gram = reduce_layer(features, n_components=None, gram_dtype=np.float64).centred_gram
    ridge = DualRidge(gram)
    expected = brute_force_loo(features, responses, 1e5)
    exact = ridge.loo_predictions(responses, 1e5, dtype=np.float64)
    assert np.abs(exact - expected).max() <= 1e-6 * np.abs(expected).max()
    mixed = ridge.loo_fit(responses, [1e5])  # the float32 path the workflow uses
    r_expected = [np.corrcoef(expected[:, j], responses[:, j])[0, 1] for j in range(6)]
    assert np.allclose(mixed.voxel_r, r_expected, atol=1e-4)


def test_alpha_grid_picks_the_penalty_of_least_loo_error_per_voxel():
    features, responses = planted_data(seed=2)
    ridge = DualRidge(reduce_layer(features, n_components=None, gram_dtype=np.float64).centred_gram)
    alphas = [1e1, 1e3, 1e5, 1e7]
    fit = ridge.loo_fit(responses, alphas, dtype=np.float64)
    refits = {alpha: brute_force_loo(features, responses, alpha) for alpha in alphas}
    errors = np.array([((refits[a] - responses) ** 2).sum(axis=0) for a in alphas])
    chosen = np.asarray(alphas)[errors.argmin(axis=0)]
    np.testing.assert_array_equal(fit.alpha, chosen)
    assert len(set(chosen)) > 1  # the data make different voxels prefer different penalties
    for voxel, alpha in enumerate(chosen):
        expected_r = np.corrcoef(refits[alpha][:, voxel], responses[:, voxel])[0, 1]
        assert fit.voxel_r[voxel] == pytest.approx(expected_r, abs=1e-8)


def test_float32_gram_with_small_penalty_and_offset_features():
    """A float32 Gram keeps a small mean; the ridge re-centres it (small alpha exposes it)."""
    features, responses = planted_data(n=80, d=600, offset=5.0, seed=5)
    gram = reduce_layer(features.astype(np.float32), n_components=None).centred_gram
    for alpha in (1.0, 10.0):
        loo = DualRidge(gram).loo_predictions(responses, alpha, dtype=np.float64)
        expected = brute_force_loo(features, responses, alpha)
        assert np.abs(loo - expected).max() < 1e-3 * responses.std()


def test_fit_predict_equals_sklearn():
    features, responses = planted_data(seed=3)
    test_features = features[:10] + 0.5
    ours = fit_predict(features, responses, test_features, 1e4)
    sklearn = Ridge(alpha=1e4).fit(features, responses).predict(test_features)
    np.testing.assert_allclose(ours, sklearn, rtol=1e-8, atol=1e-10)
