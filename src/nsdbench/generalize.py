"""Generalization (paper section 3.5): each model's best layers, fitted on all train images,
scored on every subject's own held-out test images.

The best layer is chosen per subject x ROI x metric by the train (leave-one-out) score. Those
layers are extracted for the train images and all subjects' test images together, so one
streaming pass gives one Gram matrix (or SRP) over every image: the train block fits the
ridge, the test x train block predicts, and the test block's RDM gives test cRSA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nsdbench.brain import read_response_store
from nsdbench.fit import (
    METRICS,
    MIN_VOXELS,
    BrainTargets,
    effective_srp_dim,
    metric_rows,
    warn_if_unusable,
)
from nsdbench.reduce import reduce_layer, srp_seed
from nsdbench.ridge import DualRidge
from nsdbench.rsa import compare_rdms, pearson_columns, rdm


def best_layers(scores: pd.DataFrame) -> pd.DataFrame:
    """Per subject x ROI x metric, the layer with the highest train score."""
    train = scores[scores["split"] == "train"].dropna(subset=["score"])
    index = train.groupby(["subject", "roi", "metric"])["score"].idxmax()
    return train.loc[index, ["subject", "roi", "metric", "layer"]].reset_index(drop=True)


def best_layer_names(best: pd.DataFrame, inventory: pd.DataFrame) -> list[str]:
    """The layers that are best for some subject x ROI x metric, in the inventory's order
    (what extract_best_layers extracts and generalize scores)."""
    chosen = set(best["layer"])
    return [layer for layer in inventory["layer"] if layer in chosen]


@dataclass
class HeldOut:
    """Responses of every subject x ROI to the train images and to the subject's test images.

    Rows of the joint feature store: the train images first, then each subject's test images;
    ``test_rows[subject]`` says where that subject's are.
    """

    targets: BrainTargets  # train responses, all subjects x ROIs as columns
    test: dict[tuple[str, str], np.ndarray]
    test_rows: dict[str, np.ndarray]
    test_nsd_ids: dict[str, np.ndarray]

    @property
    def n_train(self) -> int:
        return self.targets.responses.shape[0]

    @classmethod
    def load(cls, store_paths, train_nsd_ids, min_voxels: int = MIN_VOXELS):
        """Read the brain stores; test rows follow the train rows, subject by subject."""
        stores = {path: read_response_store(path) for path in store_paths}
        targets = BrainTargets.from_stores(stores, train_nsd_ids, min_voxels)
        test, test_rows, test_ids = {}, {}, {}
        start = len(train_nsd_ids)
        for store in stores.values():
            subject = f"{store.subject:02d}"
            test_rows[subject] = np.arange(start, start + len(store.test_nsd_ids))
            start += len(store.test_nsd_ids)
            test_ids[subject] = store.test_nsd_ids
            for roi, values in store.test.items():
                if (subject, roi) in targets.columns:
                    test[(subject, roi)] = values
        return cls(targets, test, test_rows, test_ids)


def generalization_scores(
    features, held_out: HeldOut, *, alphas, srp_dim: int | None, seed: int, model: str, layer: str
) -> pd.DataFrame:
    """Test-split scores of one layer for every subject x ROI: one row per metric.

    ``features``: (train + all test images) x features, rows as :class:`HeldOut` says.
    """
    kernels = held_out_kernels(features, held_out, srp_dim=srp_dim, seed=seed, model=model,
                               layer=layer)
    usable = kernels is not None
    if usable:
        train_gram, cross_gram, test_rdms, srp_dim = kernels
        # One eigendecomposition for every subject and ROI; each voxel keeps the penalty it
        # chose by leave-one-out on the train images (chosen a chunk of voxels at a time).
        ridge = DualRidge(train_gram)
        train_responses = held_out.targets.responses
        chosen = ridge.loo_alphas(train_responses, alphas)
    else:
        srp_dim = effective_srp_dim(features, srp_dim)
    rows = []
    for (subject, roi), columns in held_out.targets.columns.items():
        test_rows = held_out.test_rows[subject]
        test_responses = held_out.test[(subject, roi)]
        scores = dict.fromkeys(METRICS, float("nan"))
        alpha = float(np.atleast_1d(alphas)[0])
        if usable:
            cross = cross_gram[test_rows - held_out.n_train]
            predicted = ridge.predict(cross, train_responses[:, columns], chosen[columns])
            brain_rdm = rdm(test_responses)
            scores = {
                "crsa": compare_rdms(test_rdms[subject], brain_rdm),
                "versa": compare_rdms(rdm(predicted), brain_rdm),
                "voxel_r": float(np.nanmean(pearson_columns(predicted, test_responses))),
            }
            alpha = float(np.median(chosen[columns]))
        rows += metric_rows(
            subject, roi, scores, split="test", n_voxels=columns.stop - columns.start,
            n_images=len(test_rows), srp_dim=srp_dim, alpha=alpha,
        )
    return pd.DataFrame(rows)


def held_out_kernels(features, held_out: HeldOut, *, srp_dim, seed, model, layer):
    """One streaming pass over train + test images: (train Gram, test x train cross Gram,
    {subject: RDM of its test images}, SRP dimension used), features centred on the train
    mean; None (with a warning) for NaN/inf or constant features.

    Memory stays that of a few (n_train x n_test-per-subject) blocks: only the Gram blocks
    these need are accumulated, never the (all images)^2 Gram (5000^2 float64 and its
    temporaries for 4 subjects' 1000 test images). With the SRP, the ridge's kernels come
    from the (images x k) projection and the full-feature pass computes only each subject's
    own test block (for cRSA).
    """
    srp_dim = effective_srp_dim(features, srp_dim)
    n_train = held_out.n_train
    train = slice(0, n_train)
    tests = {subject: slice(int(rows[0]), int(rows[-1]) + 1)
             for subject, rows in held_out.test_rows.items()}
    for subject, rows in held_out.test_rows.items():
        if not np.array_equal(rows, np.arange(tests[subject].start, tests[subject].stop)):
            raise ValueError(f"subject {subject}: test rows must be one contiguous range")
    blocks = {f"test-{subject}": (rows, rows) for subject, rows in tests.items()}
    all_tests = slice(n_train, features.shape[0])
    if not srp_dim:
        blocks |= {"train": (train, train), "cross": (all_tests, train)}
    reduction = reduce_layer(
        features, n_components=srp_dim, seed=srp_seed(seed, model, layer) if srp_dim else None,
        gram_blocks=blocks,
    )
    if not warn_if_unusable(reduction, model, layer):
        return None
    if srp_dim:
        # Centred on the train mean (in float64), then float32 products (compute-notes.md).
        projection = reduction.projection
        train_mean = projection[train].mean(axis=0, dtype=np.float64).astype(np.float32)
        projection = np.subtract(projection, train_mean, dtype=np.float32)
        train_gram = (projection[train] @ projection[train].T).astype(np.float64)
        cross_gram = (projection[all_tests] @ projection[train].T).astype(np.float64)
    else:
        # Re-centre on the train rows (see train_centred_kernels): the pass centred on the
        # mean of all images.
        train_block, cross_block = reduction.gram_blocks["train"], reduction.gram_blocks["cross"]
        train_means, cross_means = train_block.mean(axis=1), cross_block.mean(axis=1)
        grand_mean = train_means.mean()
        train_gram = train_block - train_means[:, None] - train_means[None, :] + grand_mean
        cross_gram = cross_block - cross_means[:, None] - train_means[None, :] + grand_mean
    test_rdms = {subject: reduction.rdm_blocks[f"test-{subject}"] for subject in tests}
    return train_gram, cross_gram, test_rdms, srp_dim
