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


def rdm_from_centred_gram(gram: np.ndarray) -> np.ndarray:
    """RDM from the Gram matrix of row-centred responses (each image's mean over units removed)."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = gram / np.outer(norms, norms)
    dissimilarity = 1.0 - corr
    np.fill_diagonal(dissimilarity, 0.0)
    return dissimilarity


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
