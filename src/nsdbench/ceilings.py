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

import numpy as np
import pandas as pd

from nsdbench.fit import full_sample_intercept, reduce_for_ridge
from nsdbench.ridge import DualRidge
from nsdbench.rsa import compare_rdms, rdm

CEILING_COLUMNS = [
    "subject", "roi", "ceiling", "metric", "score", "ci_low", "ci_high", "n_images", "n_voxels",
]


def bootstrap_rdm_similarity(candidates: list[np.ndarray], target: np.ndarray, n_boot: int,
                             seed: int):
    """95% percentile interval of the mean RDM comparison (each candidate against the target)
    over images resampled with replacement."""
    rng = np.random.default_rng(seed)
    n = target.shape[0]
    rows, cols = np.triu_indices(n, k=1)
    values = np.empty(n_boot)
    for index in range(n_boot):
        sample = rng.integers(0, n, n)
        keep = sample[rows] != sample[cols]  # an image paired with its own copy says nothing
        i, j = sample[rows[keep]], sample[cols[keep]]
        values[index] = np.mean([np.corrcoef(rdm_[i, j], target[i, j])[0, 1]
                                 for rdm_ in candidates])
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _regression_scores(regressors, responses, *, alphas, srp_dim, seed, key):
    """LOO ridge from one set of voxels to another, exactly as for a model's layer (SRP where
    wider than ``srp_dim``, seeded by ``key``): predicted RDM and the mean voxel r."""
    _, gram, _ = reduce_for_ridge(
        np.asarray(regressors, dtype=np.float32), srp_dim=srp_dim, seed=seed, model=key[0],
        layer=key[1],
    )
    if gram is None:
        n = responses.shape[0]
        return np.full((n, n), np.nan), float("nan")
    fit = DualRidge(gram).loo_fit(responses, alphas)
    return rdm(full_sample_intercept(fit.predictions, responses)), float(np.nanmean(fit.voxel_r))


def reference_ceilings(
    responses: dict[tuple[str, str], np.ndarray], *, alphas, srp_dim: int | None, seed: int,
    n_boot: int = 1000,
) -> pd.DataFrame:
    """``responses``: (subject, roi) -> train responses (images x voxels), same images for all."""
    subjects = sorted({subject for subject, _ in responses})
    rois = sorted({roi for _, roi in responses})
    rdms = {key: rdm(values) for key, values in responses.items()}
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
                continue
            brain_rdm = rdms[(target, roi)]
            y = responses[(target, roi)]
            other_rdms = [rdms[(other, roi)] for other in others]
            add(target, roi, "intersubject_crsa", "crsa",
                float(np.mean([compare_rdms(other, brain_rdm) for other in other_rdms])),
                bootstrap_rdm_similarity(other_rdms, brain_rdm, n_boot, seed))
            pair_rdms, pair_r = [], []
            for other in others:
                predicted, voxel_r = _regression_scores(
                    responses[(other, roi)], y, alphas=alphas, srp_dim=srp_dim, seed=seed,
                    key=(f"sub-{other}", roi),
                )
                pair_rdms.append(predicted)
                pair_r.append(voxel_r)
            add(target, roi, "subject_to_subject", "versa",
                float(np.mean([compare_rdms(p, brain_rdm) for p in pair_rdms])),
                bootstrap_rdm_similarity(pair_rdms, brain_rdm, n_boot, seed))
            add(target, roi, "subject_to_subject", "voxel_r", float(np.mean(pair_r)))
            concatenated = np.concatenate([responses[(other, roi)] for other in others], axis=1)
            predicted, voxel_r = _regression_scores(
                concatenated, y, alphas=alphas, srp_dim=srp_dim, seed=seed,
                key=(f"others-of-{target}", roi),
            )
            add(target, roi, "others_to_subject", "versa", compare_rdms(predicted, brain_rdm),
                bootstrap_rdm_similarity([predicted], brain_rdm, n_boot, seed))
            add(target, roi, "others_to_subject", "voxel_r", voxel_r)
    return pd.DataFrame(rows, columns=CEILING_COLUMNS)
