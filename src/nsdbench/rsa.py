"""Representational dissimilarity matrices and their comparison.

An RDM is 1 - Pearson r between images, computed across units (features or voxels).
Two RDMs are compared by Pearson r over their strict upper triangles.
"""

from __future__ import annotations

import functools

import numpy as np


def rdm(responses: np.ndarray) -> np.ndarray:
    """RDM of an (images x units) matrix: 1 - Pearson r between image rows, in float64."""
    x = np.asarray(responses, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    gram = x @ x.T
    return rdm_from_centred_gram(gram)


def rdm_from_centred_gram(gram: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """RDM from the Gram matrix of row-centred responses (each image's mean over units removed).

    ``overwrite``: build it in ``gram``'s own (float64) memory, the fit's per-set loop reuses
    one buffer instead of allocating and page-faulting four n x n arrays per set."""
    dissimilarity = gram if overwrite else np.array(gram, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inverse_norms = 1.0 / np.sqrt(np.clip(np.diag(dissimilarity), 0.0, None))
        # g_ij * (a_i a_j), never (g_ij a_i) a_j: the product a_i a_j is the same both ways
        # round, so a symmetric Gram gives an exactly symmetric RDM (PreparedRdm relies on
        # it). A band of rows at a time keeps the temporary small.
        for start in range(0, len(inverse_norms), _BAND):
            band = slice(start, start + _BAND)
            dissimilarity[band] *= inverse_norms[band, None] * inverse_norms[None, :]
    np.subtract(1.0, dissimilarity, out=dissimilarity)
    np.fill_diagonal(dissimilarity, 0.0)
    return dissimilarity


_BAND = 128


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """The strict upper triangle of a square matrix, flattened row by row."""
    rows, cols = _triangle_indices(matrix.shape[0])
    return matrix[rows, cols]


@functools.lru_cache(maxsize=4)
def _triangle_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Built once per size: a fit job compares hundreds of 1000 x 1000 RDMs (8 MB of indices).
    return np.triu_indices(n, k=1)


def compare_rdms(first: np.ndarray, second: np.ndarray) -> float:
    """Pearson r between the strict upper triangles of two RDMs; NaN if either is undefined."""
    a = upper_triangle(first)
    b = upper_triangle(second)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    if denominator == 0.0:
        return float("nan")
    return float((a @ b) / denominator)


class PreparedRdm:
    """An RDM set up once for many comparisons (Pearson r over strict upper triangles).

    Sums run over the whole matrix instead of gathering the triangle (8 MB of indices and a
    copy per comparison at n=1000): in a symmetric matrix with a zero diagonal every pair
    appears twice, so the means, variances and covariance are the triangle's. A matrix that
    is not exactly symmetric is rebuilt from its upper triangle first, so the result is
    always :func:`compare_rdms`'s.
    """

    def __init__(self, matrix: np.ndarray, symmetric: bool = False):
        values = np.asarray(matrix, dtype=np.float64)
        if not symmetric and not (np.array_equal(values, values.T)
                                  and not np.any(np.diagonal(values))):
            upper = np.triu(values, 1)
            values = upper + upper.T
        n = values.shape[0]
        self.flat = values.reshape(-1)
        self.pairs = n * (n - 1)  # ordered pairs
        self.total = float(self.flat.sum())  # NaN or inf anywhere makes it so
        self.squares = float(self.flat @ self.flat)

    def compare(self, other: PreparedRdm) -> float:
        """Pearson r with another prepared RDM of the same size; NaN if either is undefined."""
        return self.compare_products(other, float(self.flat @ other.flat))

    def compare_products(self, other: PreparedRdm, products: float) -> float:
        """:meth:`compare` with the sum of products already computed."""
        return self.pearson_from_sums(other.total, other.squares, products)

    def pearson_from_sums(self, total: float, squares: float, products: float) -> float:
        """Pearson r with a matrix known by its sum, sum of squares and sum of products with
        this one (all over the whole matrix; symmetric, zero diagonal). NaN if undefined."""
        own_norm2 = self.squares - self.total * self.total / self.pairs
        norm2 = squares - total * total / self.pairs
        if not np.isfinite(own_norm2 * norm2 * products) or own_norm2 <= 0.0 or norm2 <= 0.0:
            return float("nan")
        covariance = products - total * self.total / self.pairs
        return float(covariance / np.sqrt(own_norm2 * norm2))


def compare_gram_rdm(core: np.ndarray, cross: np.ndarray, target: PreparedRdm,
                     other: PreparedRdm | None = None) -> tuple[float, float]:
    """Pearson r between ``target`` and the RDM of the row-centred Gram G_ij = core_ij +
    cross_i + cross_j (``core`` symmetric: only its upper triangle and diagonal are read, so
    a BLAS syrk's half is enough), without building that RDM; and, in the same pass, between
    ``target`` and ``other`` (NaN if not given).

    Why: building, summing and comparing an (n x n) float64 RDM per subject x ROI costs ~15
    passes over 8 MB at n=1000; here each band of rows is made, summed and compared while in
    cache, so ``target`` and ``other`` are read once and nothing n x n is written. All the
    matrices are symmetric with a zero diagonal (the RDMs), so sums over pairs i < j, doubled,
    are the whole matrix's: a band covers the columns from its own first row on, with the
    block on the diagonal cut to its upper triangle.
    """
    n = core.shape[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inverse_norms = 1.0 / np.sqrt(np.clip(np.diagonal(core) + 2.0 * cross, 0.0, None))
        target_rows = target.flat.reshape(n, n)
        other_rows = None if other is None else other.flat.reshape(n, n)
        # Over pairs i < j: sum, sum of squares, products with target; other's with target.
        total = squares = products = other_products = 0.0
        buffer = np.empty(min(_COMPARE_BAND, n) * n)
        lower = np.tril(np.ones((_COMPARE_BAND, _COMPARE_BAND), dtype=bool))
        for start in range(0, n, _COMPARE_BAND):
            stop = min(start + _COMPARE_BAND, n)
            height, columns = stop - start, slice(start, n)
            values = buffer[:height * (n - start)].reshape(height, n - start)
            # Broadcast row and column operations: an outer product per band would cost as
            # much again.
            np.add(core[start:stop, columns], cross[columns], out=values)
            values += cross[start:stop, None]
            values *= inverse_norms[columns]
            values *= inverse_norms[start:stop, None]
            np.subtract(1.0, values, out=values)
            values[:, :height][lower[:height, :height]] = 0.0  # pairs i >= j: not counted
            target_band = target_rows[start:stop, columns]
            flat = values.reshape(-1)
            total += values.sum()
            squares += flat @ flat
            products += np.einsum("ij,ij->", values, target_band)
            if other_rows is not None:
                # All of the band but the diagonal block's lower triangle (whose other x
                # target products equal its upper one's): half the block counted once.
                band = np.einsum("ij,ij->", other_rows[start:stop, columns], target_band)
                block = np.einsum("ij,ij->", other_rows[start:stop, start:stop],
                                  target_band[:, :height])
                other_products += band - 0.5 * block
    versus_other = float("nan")
    if other is not None:
        versus_other = other.compare_products(target, 2.0 * other_products)
    return target.pearson_from_sums(2.0 * total, 2.0 * squares, 2.0 * products), versus_other


_COMPARE_BAND = 64  # rows per band: measured fastest at n=1000 (32-256 tried)


def pearson_columns(first: np.ndarray, second: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Pearson r between matching columns of two (samples x columns) matrices, in float64.

    Works through ``chunk`` columns at a time, so memory stays bounded for 100k+ voxels.
    """
    n_columns = first.shape[1]
    r = np.empty(n_columns)
    for start in range(0, n_columns, chunk):
        a = np.asarray(first[:, start:start + chunk], dtype=np.float64)
        b = np.asarray(second[:, start:start + chunk], dtype=np.float64)
        a = a - a.mean(axis=0)
        b = b - b.mean(axis=0)
        numerator = np.einsum("ij,ij->j", a, b)
        denominator = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
        with np.errstate(divide="ignore", invalid="ignore"):
            r[start:start + chunk] = numerator / denominator
    return r


def pearson_centred(first: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of ``first`` and ``centred`` (whose columns have
    zero mean), with sums in the arrays' own dtype and the result in float64.

    For float32 blocks straight out of a matrix product (the LOO predictions): no float64
    copies. Sums of n=1000 float32 products err by ~1e-7 relative, so r by ~1e-6 at worst
    (compute-notes.md measured 5.6e-7 for this step)."""
    a = first - first.mean(axis=0)
    numerator = np.einsum("ij,ij->j", a, centred).astype(np.float64)
    first_norm2 = np.einsum("ij,ij->j", a, a).astype(np.float64)
    second_norm2 = np.einsum("ij,ij->j", centred, centred).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / np.sqrt(first_norm2 * second_norm2)
