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

from nsdbench.rsa import pearson_centred


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

    def common_intercept_operator(self, alpha: float) -> np.ndarray:
        """B (float64, n x n) such that, for responses y with column means ybar,
        ybar + B (y - ybar) are the LOO predictions with one intercept, the mean of all images,
        in place of each left-out fit's own (the mean of the other images; see
        ``nsdbench.fit.full_sample_intercept``). The plain LOO predictions are those minus
        (y - ybar) / (n - 1).

        B = I - diag(M)^-1 M + I / (n - 1) - 11^T / (n - 1). The last term is nothing for
        centred responses (B 1 would be n / (n - 1) 1 without it), but it is most of B when the
        layer is over-shrunk. Why this form rather than y - (M y) / diag(M): its float32
        product errs in proportion to the *predictions*. For an over-shrunk layer those are
        far smaller than the responses, and the difference of two nearly equal float32 arrays
        would lose them (the veRSA of such a layer rests on them alone).
        """
        operator = self.residual_operator(alpha)
        operator /= -np.diag(operator)[:, None]
        operator[np.diag_indices(self.n)] += 1.0 + 1.0 / (self.n - 1)
        operator -= 1.0 / (self.n - 1)
        return operator

    def loo_shifted(self, centred: np.ndarray, operators: list[np.ndarray]):
        """For column-centred responses (n, v) and the ``common_intercept_operator`` of each
        penalty (in the responses' dtype): B @ centred with, per column, the penalty of least
        LOO squared error (as sklearn ``RidgeCV(alpha_per_target=True)`` chooses), and the
        index of that penalty per column. One product per penalty."""
        if len(operators) == 1:
            return operators[0] @ centred, np.zeros(centred.shape[1], dtype=int)
        # LOO residual y - P = centred * n / (n - 1) - B @ centred (see above).
        scale = centred.dtype.type(self.n / (self.n - 1))
        best = best_error = best_index = None
        for index, operator in enumerate(operators):
            shifted = operator @ centred
            residual = centred * scale
            residual -= shifted
            error = np.einsum("ij,ij->j", residual, residual, dtype=np.float64)
            del residual
            if best is None:
                best, best_error = shifted, error
                best_index = np.zeros(centred.shape[1], dtype=int)
                continue
            better = error < best_error
            if np.any(better):
                best[:, better] = shifted[:, better]
                best_error[better] = error[better]
                best_index[better] = index
            del shifted
        return best, best_index

    def loo_predictions(self, responses: np.ndarray, alpha: float, dtype=np.float32) -> np.ndarray:
        """Leave-one-out predictions (n, v): one matrix product for all voxels, in ``dtype``.

        float32 is the fast path (max error ~1e-5 of the response sd, compute-notes.md);
        float64 reproduces brute-force refits to rounding error.
        """
        return self.loo_fit(responses, [alpha], dtype).predictions

    def loo_fit(self, responses: np.ndarray, alphas, dtype=np.float32) -> LooFit:
        """LOO predictions with, per voxel, the penalty (from ``alphas``) of least LOO squared
        error, as sklearn ``RidgeCV(alpha_per_target=True)`` chooses it.

        The choice and the reported LOO score use the same left-out images, so with a grid the
        scores are slightly optimistic (one choice among len(alphas) per voxel).
        """
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        y = np.asarray(responses, dtype=dtype)
        operators = self.operators(alphas, y.dtype)
        # One (n, v) output; the work goes through column chunks, so the temporaries stay
        # small whatever the voxel count (160k voxels: 0.6 GB per (n, v) float32 array).
        predictions = np.empty_like(y)
        voxel_r = np.empty(y.shape[1])
        chosen = np.empty(y.shape[1])
        for columns, centred, mean in centred_chunks(y):
            shifted, index = self.loo_shifted(centred, operators)
            plain = self.plain_loo(shifted, centred)
            voxel_r[columns] = pearson_centred(plain, centred)
            plain += mean
            predictions[:, columns] = plain
            chosen[columns] = alphas[index]
        return LooFit(predictions, voxel_r, chosen)

    def loo_alphas(self, responses: np.ndarray, alphas, dtype=np.float32) -> np.ndarray:
        """Per voxel, the penalty of least LOO squared error; memory bounded by a chunk of
        columns (no (n, v) predictions kept)."""
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        y = np.asarray(responses)
        if len(alphas) == 1:
            return np.full(y.shape[1], alphas[0])
        operators = self.operators(alphas, dtype)
        chosen = np.empty(y.shape[1])
        for columns, centred, _ in centred_chunks(y, dtype):
            chosen[columns] = alphas[self.loo_shifted(centred, operators)[1]]
        return chosen

    def operators(self, alphas, dtype) -> list[np.ndarray]:
        """``common_intercept_operator`` of each penalty, cast to ``dtype`` once."""
        return [self.common_intercept_operator(a).astype(dtype) for a in np.atleast_1d(alphas)]

    def plain_loo(self, shifted: np.ndarray, centred: np.ndarray) -> np.ndarray:
        """Plain LOO predictions minus the column means, from ``loo_shifted``'s output."""
        return shifted - centred * centred.dtype.type(1.0 / (self.n - 1))

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


def centred_chunks(y: np.ndarray, dtype=None, chunk: int = 4096):
    """(column slice, centred float block, column means) over ``chunk`` columns at a time.
    Means in float64; the centred block in ``dtype`` (default: y's)."""
    dtype = dtype or y.dtype
    for start in range(0, y.shape[1], chunk):
        columns = slice(start, min(start + chunk, y.shape[1]))
        block = y[:, columns]
        mean = block.mean(axis=0, dtype=np.float64).astype(dtype)
        yield columns, np.subtract(block, mean, dtype=dtype), mean


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
