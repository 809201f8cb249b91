"""Reference ceilings: intersubject cRSA and brain-to-brain ridge, with bootstrap intervals."""

import numpy as np
import pytest

from nsdbench.ceilings import bootstrap_rdm_similarity, reference_ceilings
from nsdbench.rsa import compare_rdms, rdm


@pytest.fixture(scope="module")
def brains():
    """Three subjects whose two ROIs read out one shared latent signal, plus noise."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((80, 6))
    return {
        (subject, roi): latent @ rng.standard_normal((6, voxels))
        + 1.5 * rng.standard_normal((80, voxels))
        for subject in ("01", "02", "05")
        for roi, voxels in (("V1", 40), ("FFA-1", 25))
    }


@pytest.fixture(scope="module")
def ceilings(brains):
    return reference_ceilings(brains, alphas=[1e2], srp_dim=None, seed=0, n_boot=200)


def test_intersubject_crsa_is_the_mean_pairwise_rdm_correlation(brains, ceilings):
    row = ceilings.query("subject == '01' and roi == 'V1' and ceiling == 'intersubject_crsa'")
    expected = np.mean([compare_rdms(rdm(brains[("01", "V1")]), rdm(brains[(other, "V1")]))
                        for other in ("02", "05")])
    assert row["score"].item() == pytest.approx(expected, abs=1e-12)
    assert row["ci_low"].item() < row["score"].item() < row["ci_high"].item()


def test_every_ceiling_for_every_subject_and_roi(ceilings):
    assert len(ceilings) == 3 * 2 * 5
    assert ceilings["score"].between(0, 1).all()
    # Concatenating all other subjects gives the ridge more of the shared signal than one.
    means = ceilings.groupby(["ceiling", "metric"])["score"].mean()
    assert means[("others_to_subject", "voxel_r")] > means[("subject_to_subject", "voxel_r")]
    assert means[("others_to_subject", "versa")] > means[("intersubject_crsa", "crsa")]


def test_bootstrap_interval_narrows_with_more_images():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 30))
    first, second = base + rng.standard_normal((200, 30)), base + rng.standard_normal((200, 30))
    wide = bootstrap_rdm_similarity([rdm(first[:40])], rdm(second[:40]), 300, 0)
    narrow = bootstrap_rdm_similarity([rdm(first)], rdm(second), 300, 0)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert narrow[0] < compare_rdms(rdm(first), rdm(second)) < narrow[1]


def test_bootstrap_equals_resampling_images_by_brute_force():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((25, 10))
    target = rdm(base + rng.standard_normal((25, 10)))
    candidates = [rdm(base + rng.standard_normal((25, 10))) for _ in range(2)]
    draws = np.random.default_rng(7)
    rows, cols = np.triu_indices(25, k=1)
    values = []
    for _ in range(50):
        sample = draws.integers(0, 25, 25)
        keep = sample[rows] != sample[cols]  # an image paired with its own copy is left out
        i, j = sample[rows[keep]], sample[cols[keep]]
        values.append(np.mean([np.corrcoef(c[i, j], target[i, j])[0, 1] for c in candidates]))
    expected = np.percentile(values, [2.5, 97.5])
    np.testing.assert_allclose(bootstrap_rdm_similarity(candidates, target, 50, 7), expected,
                               atol=1e-10)
