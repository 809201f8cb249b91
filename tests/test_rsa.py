"""RDMs and RDM comparisons against rsatoolbox (the oracle)."""

import numpy as np
import pytest
import rsatoolbox

from nsdbench.rsa import (
    PreparedRdm,
    compare_gram_rdm,
    compare_rdms,
    pearson_columns,
    rdm,
    rdm_from_centred_gram,
)


def rsatoolbox_rdm(values):
    data = rsatoolbox.data.Dataset(values)
    return rsatoolbox.rdm.calc_rdm(data, method="correlation")


def test_rdm_equals_rsatoolbox():
    values = np.random.default_rng(0).standard_normal((30, 200)) + 2.0
    ours = rdm(values)
    theirs = rsatoolbox_rdm(values).get_matrices()[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(ours, 1 - np.corrcoef(values), atol=1e-12)


def test_rdm_comparison_equals_rsatoolbox_pearson():
    rng = np.random.default_rng(1)
    first = rng.standard_normal((25, 80))
    second = first[:, :40] + rng.standard_normal((25, 40))
    ours = compare_rdms(rdm(first), rdm(second))
    theirs = rsatoolbox.rdm.compare(
        rsatoolbox_rdm(first), rsatoolbox_rdm(second), method="corr"
    )[0, 0]
    assert abs(ours - theirs) < 1e-6
    assert ours > 0.2


def test_undefined_comparisons_are_nan():
    constant = np.ones((10, 5))
    assert np.isnan(compare_rdms(rdm(constant), rdm(np.eye(10))))


def test_pearson_columns_equals_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    expected = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(pearson_columns(a, b), expected, atol=1e-12)


def test_prepared_comparisons_equal_triangle_comparisons():
    """PreparedRdm sums the whole matrix; it must agree with the triangle formula, for RDMs
    as rdm() builds them (exactly symmetric) and for a matrix that is not symmetric."""
    rng = np.random.default_rng(3)
    first, second = rdm(rng.standard_normal((30, 50))), rdm(rng.standard_normal((30, 20)))
    assert np.array_equal(first, first.T)
    prepared = PreparedRdm(first)
    assert np.shares_memory(prepared.flat, first)  # symmetric: no copy
    assert prepared.compare(PreparedRdm(second)) == pytest.approx(
        compare_rdms(first, second), abs=1e-12)
    lopsided = second + np.tril(rng.standard_normal((30, 30)), -1)
    assert PreparedRdm(first).compare(PreparedRdm(lopsided)) == pytest.approx(
        compare_rdms(first, lopsided), abs=1e-12)
    assert np.isnan(PreparedRdm(first).compare(PreparedRdm(rdm(np.ones((30, 5))))))


def test_banded_gram_comparison_equals_building_the_rdm():
    rng = np.random.default_rng(4)
    n = 300  # more than one band of rows
    values = rng.standard_normal((n, 40)) + rng.standard_normal(40) * 3
    centred = values - values.mean(axis=1, keepdims=True)
    offset = rng.standard_normal(n)
    core = centred @ centred.T
    gram = core + offset[:, None] + offset[None, :]
    target, other = rdm(rng.standard_normal((n, 25))), rdm(rng.standard_normal((n, 30)))
    versa, crsa = compare_gram_rdm(core.astype(np.float32), offset, PreparedRdm(target),
                                   PreparedRdm(other))
    assert versa == pytest.approx(compare_rdms(rdm_from_centred_gram(gram), target), abs=1e-6)
    assert crsa == pytest.approx(compare_rdms(other, target), abs=1e-12)
    # Only the upper triangle is read (a BLAS syrk fills just that half).
    half = np.triu(core).astype(np.float32) + np.tril(np.full((n, n), np.nan, np.float32), -1)
    assert compare_gram_rdm(half, offset, PreparedRdm(target), PreparedRdm(other)) == (
        versa, crsa)
    undefined = compare_gram_rdm(np.zeros((n, n), np.float32), np.zeros(n), PreparedRdm(target))
    assert np.isnan(undefined[0]) and np.isnan(undefined[1])
