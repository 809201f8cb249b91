"""Generalization: best layers by train score, fitted on train, scored on held-out images."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from nsdbench.fit import BrainTargets
from nsdbench.generalize import HeldOut, best_layers, generalization_scores
from nsdbench.reduce import srp_seed, srp_submatrix
from nsdbench.ridge import fit_predict
from nsdbench.rsa import compare_rdms, pearson_columns, rdm


def test_per_voxel_penalties_predict_like_sklearn():
    rng = np.random.default_rng(0)
    x_train, x_test = rng.standard_normal((50, 30)) + 2, rng.standard_normal((12, 30)) + 2
    y = x_train[:, :4] @ rng.standard_normal((4, 3)) + rng.standard_normal((50, 3))
    alphas = np.array([1.0, 100.0, 1e4])
    ours = fit_predict(x_train, y, x_test, alphas)
    for voxel, alpha in enumerate(alphas):
        expected = Ridge(alpha=alpha).fit(x_train, y[:, voxel]).predict(x_test)
        np.testing.assert_allclose(ours[:, voxel], expected, rtol=1e-8, atol=1e-10)


def test_best_layers_by_train_score():
    scores = pd.DataFrame({
        "subject": ["01"] * 4, "roi": ["V1"] * 4, "metric": ["versa"] * 4,
        "split": ["train", "train", "train", "test"], "layer": ["a", "b", "c", "a"],
        "score": [0.1, 0.5, np.nan, 0.9],
    })
    assert best_layers(scores)["layer"].tolist() == ["b"]


def test_test_scores_equal_direct_computation():
    rng = np.random.default_rng(1)
    n_train, n_test = 50, 20
    features = rng.standard_normal((n_train + 2 * n_test, 80)).astype(np.float32)
    weights = rng.standard_normal((80, 25))
    responses = features @ weights + 3 * rng.standard_normal((len(features), 25))
    rows = {"01": np.arange(n_train, n_train + n_test), "02": np.arange(n_train + n_test,
                                                                          n_train + 2 * n_test)}
    train = {("01", "V1"): responses[:n_train, :15], ("02", "V1"): responses[:n_train, 15:]}
    test = {("01", "V1"): responses[rows["01"], :15], ("02", "V1"): responses[rows["02"], 15:]}
    held_out = HeldOut(BrainTargets.from_sets(train, np.arange(n_train)), test, rows,
                       {"01": rows["01"], "02": rows["02"]})
    scores = generalization_scores(features, held_out, alphas=[1e2], srp_dim=None, seed=0,
                                   model="m", layer="l").set_index(["subject", "metric"])["score"]
    x = features.astype(np.float64)
    for subject, columns in (("01", slice(0, 15)), ("02", slice(15, 25))):
        model = Ridge(alpha=1e2).fit(x[:n_train], responses[:n_train, columns])
        predicted = model.predict(x[rows[subject]])
        observed = responses[rows[subject], columns]
        assert scores[(subject, "voxel_r")] == pytest.approx(
            pearson_columns(predicted, observed).mean(), abs=1e-5)
        assert scores[(subject, "versa")] == pytest.approx(
            compare_rdms(rdm(predicted), rdm(observed)), abs=1e-5)
        assert scores[(subject, "crsa")] == pytest.approx(
            compare_rdms(rdm(x[rows[subject]]), rdm(observed)), abs=1e-5)
    assert scores[("01", "voxel_r")] > 0.3  # the planted signal generalizes


def test_projected_layer_scores_equal_sklearn_on_the_projection():
    """With the SRP (layer wider than srp_dim): the ridge is sklearn's on the projected
    features (oracle: X times the stacked sub-matrices), cRSA uses all features."""
    rng = np.random.default_rng(2)
    n_train, n_test, d, k = 40, 15, 700, 120
    features = rng.standard_normal((n_train + 2 * n_test, d)).astype(np.float32) + 1.0
    responses = features[:, :30] @ rng.standard_normal((30, 12)) + rng.standard_normal(
        (len(features), 12))
    rows = {"01": np.arange(n_train, n_train + n_test),
            "02": np.arange(n_train + n_test, n_train + 2 * n_test)}
    train = {(s, "V1"): responses[:n_train, c] for s, c in (("01", slice(0, 7)),
                                                              ("02", slice(7, 12)))}
    test = {(s, "V1"): responses[rows[s], c] for s, c in (("01", slice(0, 7)),
                                                            ("02", slice(7, 12)))}
    held_out = HeldOut(BrainTargets.from_sets(train, np.arange(n_train)), test, rows, rows)
    scores = generalization_scores(features, held_out, alphas=[1e3], srp_dim=k, seed=0,
                                   model="m", layer="l").set_index(["subject", "metric"])
    seed = srp_seed(0, "m", "l")
    matrix = srp_submatrix(seed, 0, d, d, k).toarray()
    z = features.astype(np.float64) @ matrix
    for subject, columns in (("01", slice(0, 7)), ("02", slice(7, 12))):
        predicted = Ridge(alpha=1e3).fit(z[:n_train], responses[:n_train, columns]).predict(
            z[rows[subject]])
        observed = responses[rows[subject], columns]
        row = scores.loc[subject, "score"]
        assert row["voxel_r"] == pytest.approx(pearson_columns(predicted, observed).mean(),
                                               abs=1e-4)
        assert row["versa"] == pytest.approx(compare_rdms(rdm(predicted), rdm(observed)),
                                             abs=1e-4)
        assert row["crsa"] == pytest.approx(
            compare_rdms(rdm(features[rows[subject]]), rdm(observed)), abs=1e-5)
        assert (scores.loc[subject, "srp_dim"] == k).all()


def test_nan_layer_gives_nan_test_scores_and_a_warning(caplog):
    rng = np.random.default_rng(3)
    features = rng.standard_normal((30, 50)).astype(np.float32)
    features[25, 7] = np.nan
    rows = {"01": np.arange(20, 30)}
    held_out = HeldOut(BrainTargets.from_sets({("01", "V1"): rng.standard_normal((20, 6))},
                                              np.arange(20)),
                       {("01", "V1"): rng.standard_normal((10, 6))}, rows, rows)
    with caplog.at_level("WARNING", logger="nsdbench.fit"):
        scores = generalization_scores(features, held_out, alphas=[1e2], srp_dim=None, seed=0,
                                       model="m", layer="l")
    assert scores["score"].isna().all() and len(scores) == 3
    assert "NaN or inf values" in caplog.text
