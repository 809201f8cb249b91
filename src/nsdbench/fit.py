"""Score one layer against every subject and ROI at once: cRSA, veRSA and voxel r.

All voxels of all subjects and ROIs are the columns of one response matrix, so the layer's
single eigendecomposition serves them all and the per-voxel work is one matrix product.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nsdbench.brain import MIN_KEPT_VOXELS, read_response_store
from nsdbench.joblog import UserError
from nsdbench.reduce import centred_gram_of, reduce_layer, srp_seed
from nsdbench.ridge import DualRidge
from nsdbench.rsa import PreparedRdm, compare_gram_rdm, rdm

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


class LazyRdms(Mapping):
    """(subject, roi) -> brain RDM of those columns, computed on first use and kept.

    Generalization reads the train responses but never their RDMs (64 x 8 MB for the
    paper's ROIs): they are not built there."""

    def __init__(self, responses: np.ndarray, columns: dict):
        self._responses, self._columns, self._rdms = responses, columns, {}

    def __getitem__(self, key):
        if key not in self._rdms:
            self._rdms[key] = rdm(self._responses[:, self._columns[key]])
        return self._rdms[key]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self):
        return len(self._columns)


@dataclass
class BrainTargets:
    """Train responses of every subject x ROI, stacked as columns, with their brain RDMs."""

    responses: np.ndarray  # (n_images, total voxels) float32
    columns: dict[tuple[str, str], slice]  # (subject, roi) -> columns of ``responses``
    rdms: Mapping[tuple[str, str], np.ndarray]  # a dict, or LazyRdms
    nsd_ids: np.ndarray
    _prepared: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def prepared_rdm(self, key: tuple[str, str]) -> PreparedRdm:
        """The brain RDM of ``key`` set up for comparisons, once per job (shared by layers)."""
        if key not in self._prepared:
            self._prepared[key] = PreparedRdm(self.rdms[key])
        return self._prepared[key]

    def voxel_means(self, key: tuple[str, str]) -> np.ndarray:
        """float64 mean response of each voxel of ``key``, once per job."""
        if ("mean", key) not in self._prepared:
            values = self.responses[:, self.columns[key]]
            self._prepared[("mean", key)] = values.mean(axis=0, dtype=np.float64)
        return self._prepared[("mean", key)]

    @classmethod
    def from_sets(cls, sets: dict[tuple[str, str], np.ndarray], nsd_ids: np.ndarray):
        """``sets``: (subject, roi) -> (n_images, voxels) responses to the same images."""
        columns, blocks, start = {}, [], 0
        for key, values in sets.items():
            columns[key] = slice(start, start + values.shape[1])
            blocks.append(np.asarray(values, dtype=np.float32))
            start += values.shape[1]
        responses = np.concatenate(blocks, axis=1)
        return cls(responses, columns, LazyRdms(responses, columns), np.asarray(nsd_ids))

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
                raise UserError(
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
            raise UserError(
                f"no ROI of any subject has {min_voxels} or more kept voxels in "
                f"{', '.join(map(str, stores))}; check the ROI list and voxel selection"
            )
        return cls.from_sets(sets, train_nsd_ids)


def effective_srp_dim(features, srp_dim: int | None) -> int | None:
    """``srp_dim``, or None for a layer no wider than it: projecting it would only add noise,
    so it is fitted on its own features."""
    return None if srp_dim and features.shape[1] <= srp_dim else srp_dim


def warn_if_unusable(reduction, model: str, layer: str) -> bool:
    """False, with one warning, for a layer with NaN/inf values or only constant features."""
    if reduction.finite and not reduction.constant:
        return True
    problem = "NaN or inf values" if not reduction.finite else "only constant features"
    log.warning("model %s layer %s has %s: its scores are NaN", model, layer, problem)
    return False


def reduce_for_ridge(features, *, srp_dim: int | None, seed: int, model: str, layer: str):
    """One streaming pass over a layer: (reduction, the centred Gram its ridge uses, the SRP
    dimension used). The Gram is None, with a warning, for NaN/inf or constant features.

    ``srp_dim=None`` (reduction: none) means kernel ridge on all features; a layer no wider
    than ``srp_dim`` is fitted on its own features too, since projecting it would only add noise.
    """
    srp_dim = effective_srp_dim(features, srp_dim)
    reduction = reduce_layer(
        features, n_components=srp_dim, seed=srp_seed(seed, model, layer) if srp_dim else None
    )
    if not warn_if_unusable(reduction, model, layer):
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
    per_set = {}
    if gram is not None:
        per_set = set_scores(DualRidge(gram), reduction.rdm, targets, alphas)
    rows = []
    for (subject, roi), columns in targets.columns.items():
        scores, alpha = per_set.get(
            (subject, roi), (dict.fromkeys(METRICS, float("nan")), float(np.atleast_1d(alphas)[0]))
        )
        rows += metric_rows(
            subject, roi, scores, split="train", n_voxels=columns.stop - columns.start,
            n_images=targets.responses.shape[0], srp_dim=srp_dim, alpha=alpha,
        )
    return pd.DataFrame(rows)


def set_scores(ridge: DualRidge, layer_rdm: np.ndarray, targets: BrainTargets, alphas,
               dtype=np.float32) -> dict:
    """(subject, roi) -> ({metric: score}, median penalty), one subject x ROI at a time.

    Per set: one float32 product gives the LOO predictions (with the common intercept of
    :func:`full_sample_intercept`) of its voxels, their voxel r, and one symmetric product
    their predicted RDM; nothing (n x all voxels) is held beyond the responses themselves.
    """
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    operators = ridge.operators(alphas, dtype)
    layer = PreparedRdm(layer_rdm)
    results = {}
    for key, columns in targets.columns.items():
        responses = targets.responses[:, columns]
        mean = targets.voxel_means(key)
        centred = np.subtract(responses, mean.astype(dtype), dtype=dtype)
        shifted, chosen = ridge.loo_shifted(centred, operators)
        voxel_r = _loo_voxel_r(shifted, centred)
        del centred
        core, cross = _row_centred_gram_parts(shifted, mean)
        versa, crsa = compare_gram_rdm(core, cross, targets.prepared_rdm(key), layer)
        scores = {"crsa": crsa, "versa": versa, "voxel_r": float(np.nanmean(voxel_r))}
        results[key] = scores, float(np.median(alphas[chosen]))
    return results


def _loo_voxel_r(shifted: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """Pearson r of the plain LOO predictions p = shifted - centred / (n - 1) with the
    responses, from column sums of products of ``shifted`` and ``centred`` (three passes, no
    (n, v) temporaries). The terms do not cancel: either p is dominated by the fitted part
    (shifted) or, when that is shrunk away, by -centred / (n - 1); exactly constant LOO
    predictions would need the two to cancel voxel by voxel."""
    n = centred.shape[0]
    k = 1.0 / (n - 1)
    cc = np.einsum("ij,ij->j", centred, centred).astype(np.float64)
    sc = np.einsum("ij,ij->j", shifted, centred).astype(np.float64)
    ss = np.einsum("ij,ij->j", shifted, shifted).astype(np.float64)
    s_sum = shifted.sum(axis=0, dtype=np.float64)  # = sum of p: centred sums to zero
    covariance = sc - k * cc
    p_norm2 = ss - 2.0 * k * sc + k * k * cc - s_sum * s_sum / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return covariance / np.sqrt(np.clip(p_norm2, 0.0, None) * cc)


def _row_centred_gram_parts(shifted: np.ndarray, mean: np.ndarray):
    """(core, cross): the Gram of the rows of ``shifted + mean``, each centred across voxels,
    is core_ij + cross_i + cross_j (``shifted``: common-intercept LOO predictions minus the
    voxel means).

    Centred rows are (s_i - mean(s_i)) + m with m = mean - mean(mean): the float32 product
    (core) takes only the first part, so voxel means that dwarf the predicted variation cost
    no precision; the m terms (cross) are float64. ``shifted`` is centred in place.
    """
    shifted -= shifted.mean(axis=1, keepdims=True)
    offset = mean - mean.mean()
    # cross_i + cross_j + |m|^2, with half of |m|^2 carried by each side.
    cross = (shifted @ offset.astype(shifted.dtype)).astype(np.float64) + 0.5 * (offset @ offset)
    return shifted @ shifted.T, cross


def metric_rows(subject, roi, scores: dict, *, split, n_voxels, n_images, srp_dim, alpha):
    """One score-table row per metric of one subject x ROI (model and layer columns added later)."""
    return [
        {
            "subject": subject, "roi": roi, "metric": metric, "split": split, "score": score,
            "n_voxels": n_voxels, "n_images": n_images, "srp_dim": srp_dim or 0, "alpha": alpha,
        }
        for metric, score in scores.items()
    ]
