"""Reference ceilings from the brains themselves (paper appendix A.5), on the train images.

- ``intersubject_crsa``: the mean correlation of a subject's ROI RDM with each other subject's.
- ``subject_to_subject``: each other subject's ROI voxels as regressors of this subject's ROI
  voxels, with the same ridge (and SRP, where wider than ``srp_dim``) as the models get;
  the mean over the other subjects.
- ``others_to_subject``: all other subjects' ROI voxels, concatenated, as regressors.

Each estimate comes with a bootstrap 95% CI over images (resampled with replacement, pairs of
an image with itself left out), which says how much the estimate depends on the image set.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from nsdbench.fit import full_sample_intercept, reduce_for_ridge
from nsdbench.ridge import DualRidge
from nsdbench.rsa import compare_rdms, rdm

log = logging.getLogger(__name__)

CEILING_COLUMNS = [
    "subject", "roi", "ceiling", "metric", "score", "ci_low", "ci_high", "n_images", "n_voxels",
]


def bootstrap_rdm_similarity(candidates: list[np.ndarray], target: np.ndarray, n_boot: int,
                             seed: int):
    """95% percentile interval of the mean RDM comparison (each candidate against the target)
    over images resampled with replacement. The fits behind the candidates are not redone: the
    interval is that of the image sample the comparison rests on.

    A resample that draws image a c_a times holds the pair (a, b) c_a c_b times, and pairs of
    an image with its own copy say nothing, so each resample is a weighted Pearson r over the
    distinct pairs, with every weighted sum one quadratic form in the counts (fast for n=1000).
    """
    rng = np.random.default_rng(seed)
    n = target.shape[0]
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])
    counts = counts.astype(np.float64)

    def pair_sums(matrix):  # sum over distinct pairs a < b of c_a c_b matrix[a, b]
        off_diagonal = matrix - np.diag(np.diag(matrix))
        return 0.5 * np.einsum("bi,bi->b", counts @ off_diagonal, counts)

    weight = 0.5 * (counts.sum(axis=1) ** 2 - (counts**2).sum(axis=1))
    t_mean = pair_sums(target) / weight
    t_var = pair_sums(target * target) / weight - t_mean**2
    values = np.zeros(n_boot)
    for candidate in candidates:
        c_mean = pair_sums(candidate) / weight
        c_var = pair_sums(candidate * candidate) / weight - c_mean**2
        covariance = pair_sums(candidate * target) / weight - c_mean * t_mean
        values += covariance / np.sqrt(c_var * t_var)
    values /= len(candidates)
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _brain_ridge(regressors, *, srp_dim, seed, key) -> DualRidge | None:
    """The ridge on a set of voxels as regressors, exactly as for a model's layer (SRP where
    wider than ``srp_dim``, seeded by ``key``); None if the voxels are constant or not finite."""
    _, gram, _ = reduce_for_ridge(
        np.asarray(regressors, dtype=np.float32), srp_dim=srp_dim, seed=seed, model=key[0],
        layer=key[1],
    )
    return None if gram is None else DualRidge(gram)


def _regression_scores(ridge: DualRidge | None, responses, alphas):
    """LOO predictions of ``responses``: their RDM (common intercept) and the mean voxel r."""
    if ridge is None:
        n = responses.shape[0]
        return np.full((n, n), np.nan), float("nan")
    fit = ridge.loo_fit(responses, alphas)
    return rdm(full_sample_intercept(fit.predictions, responses)), float(np.nanmean(fit.voxel_r))


def reference_ceilings(
    responses: dict[tuple[str, str], np.ndarray], *, alphas, srp_dim: int | None, seed: int,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """``responses``: (subject, roi) -> train responses (images x voxels), same images for all."""
    subjects = sorted({subject for subject, _ in responses})
    rois = sorted({roi for _, roi in responses})
    rdms = {key: rdm(values) for key, values in responses.items()}
    # One eigendecomposition per subject x ROI as regressors, shared by every target subject.
    ridges = {
        key: _brain_ridge(values, srp_dim=srp_dim, seed=seed, key=(f"sub-{key[0]}", key[1]))
        for key, values in responses.items()
    }
    rows = []

    def add(subject, roi, ceiling, metric, score, interval=(np.nan, np.nan)):
        target = responses[(subject, roi)]
        rows.append({
            "subject": subject, "roi": roi, "ceiling": ceiling, "metric": metric,
            "score": score, "ci_low": interval[0], "ci_high": interval[1],
            "n_images": target.shape[0], "n_voxels": target.shape[1],
        })

    for roi in rois:
        present = [subject for subject in subjects if (subject, roi) in responses]
        for target in present:
            others = [subject for subject in present if subject != target]
            if not others:
                log.warning("ROI %s: only subject %s has it; no intersubject ceiling", roi, target)
                continue
            brain_rdm = rdms[(target, roi)]
            y = responses[(target, roi)]
            other_rdms = [rdms[(other, roi)] for other in others]
            add(target, roi, "intersubject_crsa", "crsa",
                float(np.mean([compare_rdms(other, brain_rdm) for other in other_rdms])),
                bootstrap_rdm_similarity(other_rdms, brain_rdm, n_boot, seed))
            pair_rdms, pair_r = [], []
            for other in others:
                predicted, voxel_r = _regression_scores(ridges[(other, roi)], y, alphas)
                pair_rdms.append(predicted)
                pair_r.append(voxel_r)
            add(target, roi, "subject_to_subject", "versa",
                float(np.mean([compare_rdms(p, brain_rdm) for p in pair_rdms])),
                bootstrap_rdm_similarity(pair_rdms, brain_rdm, n_boot, seed))
            add(target, roi, "subject_to_subject", "voxel_r", float(np.mean(pair_r)))
            concatenated = np.concatenate([responses[(other, roi)] for other in others], axis=1)
            ridge = _brain_ridge(
                concatenated, srp_dim=srp_dim, seed=seed, key=(f"others-of-{target}", roi)
            )
            predicted, voxel_r = _regression_scores(ridge, y, alphas)
            add(target, roi, "others_to_subject", "versa", compare_rdms(predicted, brain_rdm),
                bootstrap_rdm_similarity([predicted], brain_rdm, n_boot, seed))
            add(target, roi, "others_to_subject", "voxel_r", voxel_r)
    return pd.DataFrame(rows, columns=CEILING_COLUMNS)
