"""Score one layer against every subject and ROI at once: cRSA, veRSA and voxel r.

All voxels of all subjects and ROIs are the columns of one response matrix, so the layer's
single eigendecomposition serves them all and the per-voxel work is one matrix product.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nsdbench.brain import MIN_KEPT_VOXELS, read_response_store
from nsdbench.reduce import centred_gram_of, reduce_layer, srp_seed
from nsdbench.ridge import DualRidge
from nsdbench.rsa import compare_rdms, rdm

log = logging.getLogger(__name__)

METRICS = ("crsa", "versa", "voxel_r")
MIN_VOXELS = MIN_KEPT_VOXELS  # an ROI with fewer kept voxels is not scored


def full_sample_intercept(predictions: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """LOO predictions with one intercept, the mean of all images, instead of each fit's own.

    A LOO prediction is ybar_(-i) + (x_i - xbar_(-i)) w_(-i). Its intercept, the mean of the
    other images, differs from image to image: ybar_(-i) - ybar_(-j) = (y_j - y_i) / (n - 1).
    Across the voxels of an ROI that difference is the brain's own pattern difference between
    the two images. It is small, but when the fitted part is smaller still (an over-shrunk or
    uninformative layer: the paper's fixed penalty does this to low-variance layers) it is all
    that tells two predicted patterns apart, and the RDM of the predictions then reproduces
    the brain RDM (measured: veRSA up to 0.66 for random-init AlexNet's logits in the demo).
    Replacing each intercept by ybar, i.e. adding (y_i - ybar) / (n - 1), leaves only the
    fitted parts to tell images apart. Voxel r is computed on the plain LOO predictions.
    """
    n = responses.shape[0]
    return predictions + (responses - responses.mean(axis=0)) / (n - 1)


@dataclass
class BrainTargets:
    """Train responses of every subject x ROI, stacked as columns, with their brain RDMs."""

    responses: np.ndarray  # (n_images, total voxels) float32
    columns: dict[tuple[str, str], slice]  # (subject, roi) -> columns of ``responses``
    rdms: dict[tuple[str, str], np.ndarray]
    nsd_ids: np.ndarray

    @classmethod
    def from_sets(cls, sets: dict[tuple[str, str], np.ndarray], nsd_ids: np.ndarray):
        """``sets``: (subject, roi) -> (n_images, voxels) responses to the same images."""
        columns, blocks, start = {}, [], 0
        for key, values in sets.items():
            columns[key] = slice(start, start + values.shape[1])
            blocks.append(np.asarray(values, dtype=np.float32))
            start += values.shape[1]
        rdms = {key: rdm(values) for key, values in sets.items()}
        return cls(np.concatenate(blocks, axis=1), columns, rdms, np.asarray(nsd_ids))

    @classmethod
    def load(cls, store_paths, train_nsd_ids: np.ndarray, min_voxels: int = MIN_VOXELS):
        """Train responses of every subject's store, checked against the extracted images."""
        stores = {path: read_response_store(path) for path in store_paths}
        return cls.from_stores(stores, train_nsd_ids, min_voxels)

    @classmethod
    def from_stores(cls, stores: dict, train_nsd_ids: np.ndarray, min_voxels: int = MIN_VOXELS):
        """``stores``: path -> response store read back. ROIs with fewer than ``min_voxels``
        kept voxels are skipped with a warning."""
        sets = {}
        for path, store in stores.items():
            if not np.array_equal(store.train_nsd_ids, train_nsd_ids):
                raise ValueError(
                    f"{path}: its train images (NSD ids) differ from the extracted stimuli; "
                    "rerun the brain and stimuli rules on the same NSD tree"
                )
            for roi, values in store.train.items():
                if values.shape[1] < min_voxels:
                    log.warning(
                        "%s: ROI %s has %d kept voxels (< %d); skipped in scoring",
                        path, roi, values.shape[1], min_voxels,
                    )
                    continue
                sets[(f"{store.subject:02d}", roi)] = values
        if not sets:
            raise ValueError(
                f"no ROI of any subject has {min_voxels} or more kept voxels in "
                f"{', '.join(map(str, stores))}; check the ROI list and voxel selection"
            )
        return cls.from_sets(sets, train_nsd_ids)


def reduce_for_ridge(features, *, srp_dim: int | None, seed: int, model: str, layer: str):
    """One streaming pass over a layer: (reduction, the centred Gram its ridge uses, the SRP
    dimension used). The Gram is None, with a warning, for NaN/inf or constant features.

    ``srp_dim=None`` (reduction: none) means kernel ridge on all features; a layer no wider
    than ``srp_dim`` is fitted on its own features too, since projecting it would only add noise.
    """
    if srp_dim and features.shape[1] <= srp_dim:
        srp_dim = None
    reduction = reduce_layer(
        features, n_components=srp_dim, seed=srp_seed(seed, model, layer) if srp_dim else None
    )
    if not reduction.finite or reduction.constant:
        problem = "NaN or inf values" if not reduction.finite else "only constant features"
        log.warning("model %s layer %s has %s: its scores are NaN", model, layer, problem)
        return reduction, None, srp_dim
    gram = centred_gram_of(reduction.projection) if srp_dim else reduction.centred_gram
    return reduction, gram, srp_dim


def score_layer(
    features, targets: BrainTargets, *, alphas, srp_dim: int | None, seed: int, model: str,
    layer: str,
) -> pd.DataFrame:
    """Scores of one layer: one row per subject x ROI x metric (split ``train``, LOO)."""
    reduction, gram, srp_dim = reduce_for_ridge(
        features, srp_dim=srp_dim, seed=seed, model=model, layer=layer
    )
    rows = []
    usable = gram is not None
    if usable:
        fit = DualRidge(gram).loo_fit(targets.responses, alphas)
    for (subject, roi), columns in targets.columns.items():
        brain_rdm = targets.rdms[(subject, roi)]
        if usable:
            predicted = full_sample_intercept(
                fit.predictions[:, columns], targets.responses[:, columns]
            )
            scores = {
                "crsa": compare_rdms(reduction.rdm, brain_rdm),
                "versa": compare_rdms(rdm(predicted), brain_rdm),
                "voxel_r": float(np.nanmean(fit.voxel_r[columns])),
            }
            alpha = float(np.median(fit.alpha[columns]))
        else:
            scores = dict.fromkeys(METRICS, float("nan"))
            alpha = float(np.atleast_1d(alphas)[0])
        rows += metric_rows(
            subject, roi, scores, split="train", n_voxels=columns.stop - columns.start,
            n_images=targets.responses.shape[0], srp_dim=srp_dim, alpha=alpha,
        )
    return pd.DataFrame(rows)


def metric_rows(subject, roi, scores: dict, *, split, n_voxels, n_images, srp_dim, alpha):
    """One score-table row per metric of one subject x ROI (model and layer columns added later)."""
    return [
        {
            "subject": subject, "roi": roi, "metric": metric, "split": split, "score": score,
            "n_voxels": n_voxels, "n_images": n_images, "srp_dim": srp_dim or 0, "alpha": alpha,
        }
        for metric, score in scores.items()
    ]
