"""The streaming pass: exact Gram and RDM, and a sparse random projection within JL bounds."""

import inspect
import textwrap

import numpy as np
import zarr
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from nsdbench.reduce import (
    SRP_BLOCK,
    centred_gram_of,
    reduce_layer,
    srp_dimension,
    srp_seed,
    srp_submatrix,
)


def relu_features(n=40, d=10000, seed=0, offset=0.5):
    values = np.random.default_rng(seed).standard_normal((n, d)) + offset
    return np.maximum(values, 0).astype(np.float32)


def test_streaming_rdm_and_gram_are_exact(tmp_path):
    features = relu_features()
    store = zarr.create_array(tmp_path / "layer.zarr", shape=features.shape, chunks=(16, 4096),
                              dtype="float32")
    store[:] = features
    reduction = reduce_layer(store, n_components=None, read_block=SRP_BLOCK, gram_dtype=np.float64)
    x = features.astype(np.float64)
    np.testing.assert_allclose(reduction.rdm, 1 - np.corrcoef(x), atol=1e-5)
    np.testing.assert_allclose(reduction.centred_gram, centred_gram_of(x), rtol=1e-9)
    float32 = reduce_layer(store, n_components=None, gram_dtype=np.float32)
    np.testing.assert_allclose(float32.rdm, 1 - np.corrcoef(x), atol=1e-5)
    scale = np.abs(reduction.centred_gram).max()
    np.testing.assert_allclose(float32.centred_gram, reduction.centred_gram, atol=1e-6 * scale)


def test_srp_preserves_distances_within_jl_bound():
    n = 40
    features = relu_features(n=n, d=20000, seed=1)
    k = int(johnson_lindenstrauss_min_dim(n, eps=0.1))
    reduction = reduce_layer(features, n_components=k, seed=srp_seed(0, "m", "l"))
    x = features.astype(np.float64)
    z = reduction.projection.astype(np.float64)
    rows, cols = np.triu_indices(n, 1)
    original = ((x[rows] - x[cols]) ** 2).sum(1)
    projected = ((z[rows] - z[cols]) ** 2).sum(1)
    ratio = projected / original
    # JL holds with high probability, not surely: nearly every pair within 1 +- eps.
    within = np.mean((ratio > 0.9) & (ratio < 1.1))
    assert within >= 0.99
    assert ratio.min() > 0.8 and ratio.max() < 1.2
    assert abs(np.mean(ratio) - 1) < 0.02  # sklearn's SRP: 0.993-1.008 over 8 seeds here


def test_srp_is_seeded_by_model_and_layer_and_independent_of_block_size():
    features = relu_features(n=10, d=3 * SRP_BLOCK + 17, seed=2)
    seed = srp_seed(0, "model", "layer")
    one = reduce_layer(features, n_components=64, seed=seed, read_block=SRP_BLOCK).projection
    two = reduce_layer(features, n_components=64, seed=seed, read_block=4 * SRP_BLOCK).projection
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-4)
    other = reduce_layer(features, n_components=64, seed=srp_seed(0, "model", "other")).projection
    assert not np.allclose(one, other)


def test_nan_and_constant_features_are_flagged():
    features = relu_features(n=8, d=100)
    features[3, 5] = np.nan
    assert not reduce_layer(features, n_components=None).finite
    constant = np.full((8, 100), 0.1, dtype=np.float32)  # 0.1 is inexact in binary
    assert reduce_layer(constant, n_components=None).constant
    assert not reduce_layer(features[:, :5] * 1e-4 + 1.0, n_components=None).constant


def test_srp_dimension_follows_the_config():
    assert srp_dimension({"reduction": "none", "srp_dim": 100}, 1000) is None
    assert srp_dimension({"reduction": "srp", "srp_dim": 100}, 1000) == 100
    assert srp_dimension({"reduction": "srp", "srp_dim": None}, 1000) == 5920  # design.md


def test_streamed_projection_equals_the_dense_product():
    """Oracle: X times the whole (d x k) matrix of sub-matrices, stacked and densified."""
    features = relu_features(n=12, d=2 * SRP_BLOCK + 100, seed=3).astype(np.float16)
    seed = srp_seed(0, "model", "layer")
    d, k = features.shape[1], 300
    matrix = np.vstack([
        srp_submatrix(seed, index, min(SRP_BLOCK, d - start), d, k).toarray()
        for index, start in enumerate(range(0, d, SRP_BLOCK))
    ])
    expected = features.astype(np.float64) @ matrix
    projection = reduce_layer(features, n_components=k, seed=seed).projection
    np.testing.assert_allclose(projection, expected, rtol=1e-5, atol=1e-4)


def test_streamed_rdm_is_exactly_symmetric():
    """Comparisons sum the whole RDM as if symmetric (rsa.PreparedRdm)."""
    reduction = reduce_layer(relu_features(n=30, d=5000, seed=4), n_components=None)
    assert np.array_equal(reduction.rdm, reduction.rdm.T)


def test_the_sparse_kernel_and_its_fallback_agree():
    """scipy's private in-place CSR kernel and the public fallback used if it ever disappears
    accumulate the same product into the output (checked against a dense product)."""
    import scipy.sparse

    from nsdbench import reduce

    rng = np.random.default_rng(3)
    matrix = scipy.sparse.random(40, 30, density=0.2, format="csr", random_state=4,
                                 dtype=np.float32)
    x = rng.standard_normal((30, 7)).astype(np.float32)
    start = rng.standard_normal((40, 7)).astype(np.float32)
    expected = start + matrix.toarray() @ x
    source = inspect.getsource(reduce)
    start_at = source.index("    def _csr_matvecs")
    fallback_source = source[start_at:source.index("\n\n\ndef", start_at)]
    namespace = {"scipy": scipy}
    exec(textwrap.dedent(fallback_source), namespace)  # the fallback, defined as in the module
    for kernel in (reduce._csr_matvecs, namespace["_csr_matvecs"]):
        out = start.copy()
        kernel(40, 30, 7, matrix.indptr, matrix.indices, matrix.data, x.ravel(), out.ravel())
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
