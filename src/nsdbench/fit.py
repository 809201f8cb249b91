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
import scipy.linalg

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

    def centred(self) -> CentredTargets:
        """These responses set up for scoring (a copy, made once); see :class:`CentredTargets`
        for the fit job's in-place variant."""
        if "centred" not in self._prepared:
            self._prepared["centred"] = CentredTargets(self)
        return self._prepared["centred"]

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


@dataclass(frozen=True)
class CentredSet:
    """What scoring needs of one subject x ROI besides its double-centred responses: sums
    that depend only on the responses, computed once per job instead of once per layer."""

    columns: slice  # of CentredTargets.responses
    image_means: np.ndarray  # (n,) float64: each image's mean over the voxel-centred responses
    voxel_norm2: np.ndarray  # (v,) float64: squared norm of each voxel-centred response
    voxel_means: np.ndarray  # (v,) float64: each voxel's mean response
    offset_cross: np.ndarray  # (n,) float64: D @ m, m = voxel_means - their mean
    offset_norm2: float  # |m|^2
    brain: PreparedRdm  # the set's brain RDM (of the raw responses)


class CentredTargets:
    """Train responses of every subject x ROI, centred once per job for scoring many layers.

    Each set's (n x v) block Y is stored double-centred, D = Y - voxel means - image means
    (image means taken after the voxel means are removed), in float32 from float64 arithmetic.
    Why: the predicted patterns' RDM needs each image's predictions centred across voxels,
    and the ridge's operator B is linear, so B D *is* the common-intercept LOO predictions
    centred per voxel and per image: one product gives what the predicted RDM needs, with no
    centring passes per layer. Voxel r, which needs the predictions centred per voxel only,
    is recovered from a few sums (see :func:`set_scores`).

    ``in_place``: centre ``targets.responses`` itself (the fit job: no second copy of n x V).
    Its responses are then no longer raw: ``targets`` must not be used for anything else
    (its ``centred()`` returns this object, so scoring it again stays right).
    """

    def __init__(self, targets: BrainTargets, in_place: bool = False):
        responses = targets.responses if in_place else targets.responses.copy()
        self.sets: dict[tuple[str, str], CentredSet] = {}
        for key, columns in targets.columns.items():
            brain = targets.prepared_rdm(key)  # from the raw responses, before centring
            self.sets[key] = _centre_in_place(responses[:, columns], columns, brain)
        self.responses = responses
        self.n_images = responses.shape[0]
        if in_place:
            targets._prepared["centred"] = self


def _centre_in_place(block: np.ndarray, columns: slice, brain: PreparedRdm,
                     chunk: int = 4096) -> CentredSet:
    """Double-centre one set's (n x v) float32 block in place, a few thousand voxels at a
    time in float64 (so the temporaries stay small for a large ROI)."""
    n, v = block.shape
    voxel_means = block.mean(axis=0, dtype=np.float64)
    voxel_norm2 = np.empty(v)
    image_sums = np.zeros(n)
    for start in range(0, v, chunk):
        part = slice(start, start + chunk)
        centred = block[:, part] - voxel_means[part]
        voxel_norm2[part] = np.einsum("ij,ij->j", centred, centred)
        image_sums += centred.sum(axis=1)
    image_means = image_sums / v
    offset = voxel_means - voxel_means.mean()
    offset_cross = np.zeros(n)
    for start in range(0, v, chunk):
        part = slice(start, start + chunk)
        centred = block[:, part] - voxel_means[part]
        centred -= image_means[:, None]
        offset_cross += centred @ offset[part]
        block[:, part] = centred
    return CentredSet(columns, image_means, voxel_norm2, voxel_means, offset_cross,
                      float(offset @ offset), brain)


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
    features, targets: BrainTargets | CentredTargets, *, alphas, srp_dim: int | None, seed: int,
    model: str, layer: str,
) -> pd.DataFrame:
    """Scores of one layer: one row per subject x ROI x metric (split ``train``, LOO)."""
    if isinstance(targets, BrainTargets):
        targets = targets.centred()
    reduction, gram, srp_dim = reduce_for_ridge(
        features, srp_dim=srp_dim, seed=seed, model=model, layer=layer
    )
    per_set = {}
    if gram is not None:
        per_set = set_scores(DualRidge(gram), reduction.rdm, targets, alphas)
    rows = []
    for (subject, roi), fit_set in targets.sets.items():
        scores, alpha = per_set.get(
            (subject, roi), (dict.fromkeys(METRICS, float("nan")), float(np.atleast_1d(alphas)[0]))
        )
        rows += metric_rows(
            subject, roi, scores, split="train",
            n_voxels=fit_set.columns.stop - fit_set.columns.start, n_images=targets.n_images,
            srp_dim=srp_dim, alpha=alpha,
        )
    return pd.DataFrame(rows)


def set_scores(ridge: DualRidge, layer_rdm: np.ndarray, targets: CentredTargets, alphas,
               dtype=np.float32) -> dict:
    """(subject, roi) -> ({metric: score}, median penalty), one subject x ROI at a time.

    Per set, one float32 product gives the LOO predictions (with the common intercept of
    :func:`full_sample_intercept`) centred per voxel and per image, which one symmetric
    product turns into their RDM, and the sums their voxel r needs; nothing (n x all voxels)
    is held beyond the responses themselves. With several penalties, one product per penalty
    and the per-voxel choice of least LOO squared error.
    """
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if len(alphas) == 1:
        penalty = _Penalty(ridge.common_intercept_operator(alphas[0]), dtype)
    else:
        operators = ridge.operators(alphas, dtype)
    layer = PreparedRdm(layer_rdm)
    results = {}
    for key, fit_set in targets.sets.items():
        centred = targets.responses[:, fit_set.columns]
        if len(alphas) == 1:
            core, cross, sums = _one_penalty(penalty, centred, fit_set)
            chosen = np.zeros(centred.shape[1], dtype=int)
        else:
            core, cross, sums, chosen = _penalty_grid(ridge, operators, centred, fit_set)
        voxel_r = _voxel_r(*sums, fit_set.voxel_norm2, targets.n_images)
        versa, crsa = compare_gram_rdm(core, cross, fit_set.brain, layer)
        scores = {"crsa": crsa, "versa": versa, "voxel_r": float(np.nanmean(voxel_r))}
        results[key] = scores, float(np.median(alphas[chosen]))
    return results


class _Penalty:
    """One penalty's operator B (DualRidge.common_intercept_operator, float64) and a float32
    copy with four rows to spare, which the product with a set's responses fills with the
    sums voxel r needs (cheaper than passes over the (n x v) product afterwards)."""

    def __init__(self, operator: np.ndarray, dtype):
        n = len(operator)
        self.operator = operator
        self.augmented = np.empty((n + 4, n), dtype)
        self.augmented[:n] = operator
        self.augmented[n + 3] = operator.sum(axis=0)

    def products(self, centred: np.ndarray, fit_set: CentredSet):
        """(B D, (sc, ss, s_sum), B D m) for a set's double-centred responses D.

        The LOO predictions centred per voxel only are S = B D + beta 1^T (beta = B mu, mu the
        image means), and the voxel-centred responses Y = D + mu 1^T. Per voxel: sc = S.Y,
        ss = S.S, s_sum = 1.S, sums over images, expanded so that the rows mu^T B, beta^T B,
        1^T B and beta^T, multiplied with D in the same product, give the cross terms. The
        last item, (B D) m = B (D m), is the predicted patterns' product with the mean pattern
        m (see :func:`_one_penalty`). The vectors are float32 products, like B D itself.
        """
        n = len(self.operator)
        operator = self.augmented[:n]
        mu = fit_set.image_means
        both = operator @ np.stack([mu, fit_set.offset_cross], axis=1).astype(operator.dtype)
        beta, offset_product = both[:, 0].astype(np.float64), both[:, 1].astype(np.float64)
        self.augmented[n] = beta
        self.augmented[n + 1:n + 3] = np.stack([mu, beta]).astype(operator.dtype) @ operator
        product = self.augmented @ centred
        predicted = product[:n]
        sc = (np.einsum("ij,ij->j", predicted, centred).astype(np.float64)
              + product[n] + product[n + 1] + beta @ mu)
        ss = (np.einsum("ij,ij->j", predicted, predicted).astype(np.float64)
              + 2.0 * product[n + 2] + beta @ beta)
        s_sum = product[n + 3] + beta.sum()
        return predicted, (sc, ss, s_sum), offset_product


def _one_penalty(penalty: _Penalty, centred: np.ndarray, fit_set: CentredSet):
    """(core, cross, voxel-r sums): the predicted patterns' row-centred Gram is
    core_ij + cross_i + cross_j (see :func:`_row_centred_gram_parts`)."""
    predicted, sums, offset_product = penalty.products(centred, fit_set)
    # Rows centred, the mean pattern m is added back: cross_i = (B D m)_i + |m|^2 / 2.
    cross = offset_product + 0.5 * fit_set.offset_norm2
    return _upper_gram(predicted), cross, sums


def _upper_gram(values: np.ndarray) -> np.ndarray:
    """values @ values.T with only its upper triangle and diagonal filled (all that
    :func:`compare_gram_rdm` reads): BLAS syrk, without numpy's copy into the other half."""
    syrk = scipy.linalg.blas.get_blas_funcs("syrk", (values,))
    # values.T is Fortran-ordered (no copy); its lower half, read transposed, is the upper.
    return syrk(1.0, values.T, trans=1, lower=1).T


def _penalty_grid(ridge: DualRidge, operators: list[np.ndarray], centred: np.ndarray,
                  fit_set: CentredSet):
    """:func:`_one_penalty` with, per voxel, the penalty of least LOO squared error, and the
    index of that penalty per voxel: ``DualRidge.loo_shifted``'s choice, the one
    generalization makes too (``loo_alphas``). Columns then mix penalties, so the chosen
    predictions are centred per image explicitly."""
    voxel_centred = centred + fit_set.image_means.astype(centred.dtype)[:, None]  # D + mu 1^T
    shifted, chosen = ridge.loo_shifted(voxel_centred, operators)
    sums = (np.einsum("ij,ij->j", shifted, voxel_centred).astype(np.float64),
            np.einsum("ij,ij->j", shifted, shifted).astype(np.float64),
            shifted.sum(axis=0, dtype=np.float64))
    core, cross = _row_centred_gram_parts(shifted, fit_set.voxel_means)
    return core, cross, sums, chosen


def _voxel_r(sc, ss, s_sum, cc, n: int) -> np.ndarray:
    """Pearson r of the plain LOO predictions p = S - Y / (n - 1) with the voxel-centred
    responses Y, from per-voxel sums over images: sc = S.Y, ss = S.S, s_sum = 1.S, cc = Y.Y.
    The terms do not cancel: either p is dominated by the fitted part (S) or, when that is
    shrunk away, by -Y / (n - 1); exactly constant LOO predictions would need the two to
    cancel voxel by voxel."""
    k = 1.0 / (n - 1)
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
