"""RDMs and RDM comparisons against rsatoolbox (the oracle)."""

import numpy as np
import rsatoolbox

from nsdbench.rsa import compare_rdms, pearson_columns, rdm


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
