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


def test_alpha_grid_picks_the_best_penalty_per_voxel():
    features, responses = planted_data(seed=2)
    ridge = DualRidge(reduce_layer(features, n_components=None, gram_dtype=np.float64).centred_gram)
    alphas = [1e1, 1e3, 1e5, 1e7]
    fit = ridge.loo_fit(responses, alphas, dtype=np.float64)
    for voxel in range(responses.shape[1]):
        rs = [
            np.corrcoef(brute_force_loo(features, responses[:, [voxel]], a)[:, 0],
                        responses[:, voxel])[0, 1]
            for a in alphas
        ]
        assert fit.alpha[voxel] == alphas[int(np.argmax(rs))]
        assert fit.voxel_r[voxel] == pytest.approx(max(rs), abs=1e-8)


def test_fit_predict_equals_sklearn():
    features, responses = planted_data(seed=3)
    test_features = features[:10] + 0.5
    ours = fit_predict(features, responses, test_features, 1e4)
    sklearn = Ridge(alpha=1e4).fit(features, responses).predict(test_features)
    np.testing.assert_allclose(ours, sklearn, rtol=1e-8, atol=1e-10)
