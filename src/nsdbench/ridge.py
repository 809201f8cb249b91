"""Dual-form ridge regression with closed-form leave-one-out (GCV) predictions.

Semantics are sklearn ``Ridge(alpha, fit_intercept=True)``: an unpenalised intercept and an
L2 penalty on the weights. Everything the ridge needs is the Gram matrix of the *feature-centred*
inputs, Kc = Xc Xc^T (n x n). One float64 eigendecomposition of Kc is shared by every voxel of
every subject and ROI of a layer; per voxel the work is one float32 matrix product.

Leave-one-out: the fit is a linear smoother y_hat = H y with
    H = 11^T/n + U diag(s / (s + alpha)) U^T          (s, U: eigenpairs of Kc)
and for such smoothers the LOO residual is exactly (y - H y)_i / (1 - H_ii). With M = I - H this
is e = (M y) / diag(M), and the LOO prediction is y - e. The constant vector is a null vector of
Kc, so it contributes nothing to the sum whichever null-space basis eigh returns.
(compute-notes.md: centre before the float32 Gram and do the n x n work in float64.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nsdbench.rsa import pearson_columns


@dataclass(frozen=True)
class LooFit:
    """Leave-one-out predictions and scores for every voxel (column of the responses)."""

    predictions: np.ndarray  # (n, v), float32 unless asked otherwise
    voxel_r: np.ndarray  # (v,) float64, Pearson r of LOO prediction vs response
    alpha: np.ndarray  # (v,) the penalty each voxel used


class DualRidge:
    """Ridge on a centred Gram matrix; ``eigh`` once, then LOO for any responses and penalties."""

    def __init__(self, centred_gram: np.ndarray):
        gram = np.asarray(centred_gram, dtype=np.float64)
        if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
            raise ValueError(f"centred Gram must be square, got shape {gram.shape}")
        gram = 0.5 * (gram + gram.T)
        # Centre again in float64: a Gram accumulated in float32 keeps a small mean, so the
        # constant vector is not quite in its null space, and the hat matrix below would count
        # that direction twice when alpha is small (measured: LOO errors of 1.5 sd at alpha 1).
        gram = gram - gram.mean(axis=0) - gram.mean(axis=1)[:, None] + gram.mean()
        eigenvalues, eigenvectors = np.linalg.eigh(gram)
        # Tiny negative eigenvalues are rounding error of a positive semi-definite matrix.
        self.eigenvalues = np.clip(eigenvalues, 0.0, None)
        self.eigenvectors = eigenvectors
        self.n = gram.shape[0]

    def residual_operator(self, alpha: float) -> np.ndarray:
        """M = I - H for penalty ``alpha`` (float64, n x n)."""
        shrink = self.eigenvalues / (self.eigenvalues + alpha)
        hat = (self.eigenvectors * shrink) @ self.eigenvectors.T + 1.0 / self.n
        return np.eye(self.n) - hat

    def loo_predictions(self, responses: np.ndarray, alpha: float, dtype=np.float32) -> np.ndarray:
        """Leave-one-out predictions (n, v): one matrix product for all voxels, in ``dtype``.

        float32 is the fast path (max error ~1e-5 of the response sd, compute-notes.md);
        float64 reproduces brute-force refits to rounding error.
        """
        y = np.asarray(responses, dtype=dtype)
        predictions = self._loo_residuals(y, alpha)
        # y - e, written over e: one (n, v) buffer for 160k voxels is 0.6 GB, so no second one.
        return np.subtract(y, predictions, out=predictions)

    def _loo_residuals(self, y: np.ndarray, alpha: float) -> np.ndarray:
        """LOO residuals e = (M y) / diag(M), in y's dtype, in one new (n, v) array."""
        operator = self.residual_operator(alpha)
        residuals = operator.astype(y.dtype) @ y
        residuals /= np.diag(operator).astype(y.dtype)[:, None]
        return residuals

    def loo_fit(self, responses: np.ndarray, alphas, dtype=np.float32) -> LooFit:
        """LOO predictions with, per voxel, the penalty (from ``alphas``) of least LOO squared
        error, as sklearn ``RidgeCV(alpha_per_target=True)`` chooses it.

        The choice and the reported LOO score use the same left-out images, so with a grid the
        scores are slightly optimistic (one choice among len(alphas) per voxel).
        """
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        y = np.asarray(responses, dtype=dtype)
        if len(alphas) == 1:  # the paper's fixed penalty: nothing to choose
            predictions = self.loo_predictions(y, alphas[0], dtype)
            return LooFit(predictions, pearson_columns(predictions, y),
                          np.full(y.shape[1], alphas[0]))
        best_residuals = best_error = best_alpha = None
        for alpha in alphas:
            residuals = self._loo_residuals(y, alpha)
            error = np.einsum("ij,ij->j", residuals, residuals, dtype=np.float64)
            if best_residuals is None:
                best_residuals, best_error = residuals, error
                best_alpha = np.full(error.shape, alpha)
                continue
            better = error < best_error
            if np.any(better):
                best_residuals[:, better] = residuals[:, better]
                best_error[better] = error[better]
                best_alpha[better] = alpha
            del residuals
        predictions = np.subtract(y, best_residuals, out=best_residuals)
        return LooFit(predictions, pearson_columns(predictions, y), best_alpha)

    def predict(self, cross_gram: np.ndarray, responses: np.ndarray, alpha) -> np.ndarray:
        """Fit on all train images, predict new ones (float64, sklearn ``Ridge`` semantics).

        ``cross_gram``: (new x train) products of features centred on the train mean (see
        :func:`train_centred_kernels`). ``alpha``: one penalty, or one per voxel.
        """
        y = np.asarray(responses, dtype=np.float64)
        y_mean = y.mean(axis=0)
        alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (y.shape[1],))
        predictions = np.empty((cross_gram.shape[0], y.shape[1]))
        # Directions the train features do not span add nothing in exact arithmetic (the cross
        # Gram is orthogonal to them); dropping them keeps small penalties from amplifying
        # rounding error there.
        spanned = self.eigenvalues > 1e-10 * max(self.eigenvalues.max(), 1e-300)
        basis = self.eigenvectors[:, spanned]
        projected = basis.T @ (y - y_mean)
        for value in np.unique(alphas):
            voxels = alphas == value
            inverse = 1.0 / (self.eigenvalues[spanned] + value)
            dual = basis @ (projected[:, voxels] * inverse[:, None])
            predictions[:, voxels] = cross_gram @ dual + y_mean[voxels]
        return predictions


def train_centred_kernels(gram: np.ndarray, train: np.ndarray, test: np.ndarray):
    """Train Gram and test x train cross Gram of features centred on the *train* mean.

    ``gram`` holds the products of all images' features after subtracting any common offset
    (e.g. the mean over all images, as the streaming pass gives it); re-centring on the train
    rows is then exact: K'_ij = K_ij - kbar_i - kbar_j + kbar, kbar_i the mean over train j.
    """
    gram = np.asarray(gram, dtype=np.float64)
    row_means = gram[:, train].mean(axis=1)
    grand_mean = row_means[train].mean()
    centred = gram - row_means[:, None] - row_means[None, :] + grand_mean
    return centred[np.ix_(train, train)], centred[np.ix_(test, train)]


def fit_predict(
    train_features: np.ndarray, train_responses: np.ndarray, test_features: np.ndarray, alpha
) -> np.ndarray:
    """Fit on train, predict test, through the kernels (the path the workflow uses)."""
    features = np.concatenate([train_features, test_features]).astype(np.float64)
    features -= features.mean(axis=0)
    n_train = len(train_features)
    train_gram, cross_gram = train_centred_kernels(
        features @ features.T, np.arange(n_train), np.arange(n_train, len(features))
    )
    return DualRidge(train_gram).predict(cross_gram, train_responses, alpha)
