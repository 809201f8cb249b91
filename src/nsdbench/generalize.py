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
from nsdbench.fit import METRICS, MIN_VOXELS, BrainTargets, metric_rows, reduce_for_ridge
from nsdbench.ridge import DualRidge, train_centred_kernels
from nsdbench.rsa import compare_rdms, pearson_columns, rdm


def best_layers(scores: pd.DataFrame) -> pd.DataFrame:
    """Per subject x ROI x metric, the layer with the highest train score."""
    train = scores[scores["split"] == "train"].dropna(subset=["score"])
    index = train.groupby(["subject", "roi", "metric"])["score"].idxmax()
    return train.loc[index, ["subject", "roi", "metric", "layer"]].reset_index(drop=True)


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
    reduction, gram, srp_dim = reduce_for_ridge(
        features, srp_dim=srp_dim, seed=seed, model=model, layer=layer
    )
    usable = gram is not None
    if usable:
        # Test rows follow the train rows, so row r of the store is row r - n_train here.
        train_gram, cross_gram = train_centred_kernels(
            gram, np.arange(held_out.n_train), np.arange(held_out.n_train, gram.shape[0])
        )
        # One eigendecomposition for every subject and ROI; each voxel keeps the penalty it
        # chose by leave-one-out on the train images.
        ridge = DualRidge(train_gram)
        train_responses = held_out.targets.responses
        if len(np.atleast_1d(alphas)) > 1:
            chosen = ridge.loo_fit(train_responses, alphas).alpha
        else:
            chosen = np.full(train_responses.shape[1], float(np.atleast_1d(alphas)[0]))
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
                "crsa": compare_rdms(reduction.rdm[np.ix_(test_rows, test_rows)], brain_rdm),
                "versa": compare_rdms(rdm(predicted), brain_rdm),
                "voxel_r": float(np.nanmean(pearson_columns(predicted, test_responses))),
            }
            alpha = float(np.median(chosen[columns]))
        rows += metric_rows(
            subject, roi, scores, split="test", n_voxels=columns.stop - columns.start,
            n_images=len(test_rows), srp_dim=srp_dim, alpha=alpha,
        )
    return pd.DataFrame(rows)
