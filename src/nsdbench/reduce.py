"""One streaming pass over a layer's features: exact Gram, classical-RSA RDM and sparse random
projection (SRP), reading the (images x features) store in column blocks.

Why column blocks: every block holds whole feature columns, so each block can be centred exactly
by its own column means before its Gram product (compute-notes.md: an uncentred float32 Gram
loses up to 1e-3 in r). The image-wise (row) centring that the RDM needs is recovered afterwards
from a few accumulated sums, so one pass gives both. Peak memory is one block plus n x n and
n x k accumulators, whatever the layer's width.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from nsdbench.rsa import rdm_from_centred_gram

# Width of one SRP sub-matrix. Fixed, so the projection does not depend on the read block size.
SRP_BLOCK = 4096
DEFAULT_READ_BLOCK = 4 * SRP_BLOCK
CONSTANT_TOLERANCE = 1e-12  # float32 rounding of an exact constant gives ~1e-14


@dataclass
class LayerReduction:
    """What the fit needs from a layer, computed in one pass."""

    n_features: int
    centred_gram: np.ndarray  # (n, n) float64, Xc Xc^T with Xc feature-centred
    rdm: np.ndarray  # (n, n) float64, 1 - Pearson r between images across all features
    projection: np.ndarray | None  # (n, k) float32 SRP of the features, or None
    finite: bool  # False if any feature value was NaN or inf
    constant: bool  # True if every feature is constant across images


def srp_seed(global_seed: int, model: str, layer: str) -> np.random.SeedSequence:
    """A seed that depends only on (global seed, model, layer), stable across runs and machines."""
    digest = hashlib.sha256(f"{global_seed}\0{model}\0{layer}".encode()).digest()
    return np.random.SeedSequence(int.from_bytes(digest[:16], "little"))


def srp_dimension(ridge: dict, n_images: int) -> int | None:
    """The SRP dimension a config's ``ridge`` section asks for: None for ``reduction: none``,
    else ``srp_dim`` or, if unset, the Johnson-Lindenstrauss bound for n images at eps 0.1."""
    if ridge["reduction"] == "none":
        return None
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    return ridge["srp_dim"] or int(johnson_lindenstrauss_min_dim(n_images, eps=0.1))


def srp_density(n_features: int) -> float:
    """Li et al.'s very sparse density, 1/sqrt(d) (sklearn's 'auto')."""
    return 1.0 / np.sqrt(n_features)


def srp_submatrix(
    seed: np.random.SeedSequence, block_index: int, n_rows: int, n_features: int, n_components: int
) -> scipy.sparse.csr_matrix:
    """Rows [block_index*SRP_BLOCK, ...) of the (d x k) very sparse projection matrix.

    Each entry is 0 with probability 1 - p and +-sqrt(1 / (p k)) otherwise, p = 1/sqrt(d), so
    squared distances are preserved in expectation (Li, Hastie & Church 2006).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(block_index,)))
    density = srp_density(n_features)
    n_cells = n_rows * n_components
    n_nonzero = rng.binomial(n_cells, density)
    cells = rng.choice(n_cells, size=n_nonzero, replace=False, shuffle=False)
    signs = rng.integers(0, 2, size=n_nonzero, dtype=np.int8).astype(np.float32) * 2 - 1
    values = signs * np.float32(np.sqrt(1.0 / (density * n_components)))
    rows, cols = np.divmod(cells, n_components)
    return scipy.sparse.csr_matrix((values, (rows, cols)), shape=(n_rows, n_components))


def project_block(
    block: np.ndarray, seed: np.random.SeedSequence, first_column: int, n_features: int,
    n_components: int,
) -> np.ndarray:
    """SRP contribution (n x k) of the feature columns [first_column, first_column + width)."""
    if first_column % SRP_BLOCK:
        raise ValueError(f"blocks must start on a multiple of {SRP_BLOCK}, got {first_column}")
    out = np.zeros((block.shape[0], n_components), dtype=np.float32)
    for start in range(0, block.shape[1], SRP_BLOCK):
        part = np.ascontiguousarray(block[:, start:start + SRP_BLOCK], dtype=np.float32)
        matrix = srp_submatrix(
            seed, (first_column + start) // SRP_BLOCK, part.shape[1], n_features, n_components
        )
        # (R^T X^T)^T: scipy multiplies sparse @ dense without densifying R.
        out += (matrix.T @ part.T).T
    return out


def reduce_layer(
    features, *, n_components: int | None, seed: np.random.SeedSequence | None = None,
    read_block: int = DEFAULT_READ_BLOCK, gram_dtype=np.float32,
) -> LayerReduction:
    """Stream ``features`` (anything sliceable as [:, a:b], e.g. a zarr array) in column blocks.

    ``n_components=None`` skips the SRP. ``gram_dtype`` float32 (the default) is twice as fast
    on the n^2 d Gram and, because each block is centred first, accurate to ~1e-6 in the RDM
    and in LOO r (compute-notes.md); float64 is exact to rounding. Sums are kept in float64.
    """
    n_images, n_features = features.shape
    if read_block % SRP_BLOCK:
        raise ValueError(f"read_block must be a multiple of {SRP_BLOCK}")
    centred_gram = np.zeros((n_images, n_images), dtype=np.float64)
    # Sums that recover the row-centred Gram: see _row_centred_gram.
    cross = np.zeros(n_images)  # Xc @ mu
    row_sums_centred = np.zeros(n_images)  # Xc @ 1
    mean_norm2 = 0.0  # mu . mu
    mean_sum = 0.0  # sum(mu)
    projection = None
    if n_components is not None:
        projection = np.zeros((n_images, n_components), dtype=np.float32)
    finite = True
    for start in range(0, n_features, read_block):
        block = np.asarray(features[:, start:start + read_block])
        if not np.all(np.isfinite(block)):
            finite = False
            break
        column_means = block.mean(axis=0, dtype=np.float64)
        centred = block.astype(gram_dtype, copy=False) - column_means.astype(gram_dtype)
        centred_gram += centred @ centred.T
        cross += centred @ column_means
        row_sums_centred += centred.sum(axis=1, dtype=np.float64)
        mean_norm2 += float(column_means @ column_means)
        mean_sum += float(column_means.sum())
        if projection is not None:
            projection += project_block(block, seed, start, n_features, n_components)
    if not finite:
        nan = np.full((n_images, n_images), np.nan)
        return LayerReduction(n_features, nan, nan, None, finite=False, constant=False)
    row_gram = _row_centred_gram(
        centred_gram, cross, row_sums_centred, mean_norm2, mean_sum, n_features
    )
    # Constant up to rounding: the spread across images is negligible next to the values.
    raw_power = np.trace(centred_gram) + n_images * mean_norm2
    constant = bool(np.trace(centred_gram) <= CONSTANT_TOLERANCE * max(raw_power, 1e-300))
    return LayerReduction(
        n_features, centred_gram, rdm_from_centred_gram(row_gram), projection, True, constant
    )


def _row_centred_gram(centred_gram, cross, row_sums_centred, mean_norm2, mean_sum, n_features):
    """Gram of the image-wise centred features, from the feature-centred Gram and block sums.

    With X = Xc + 1 mu^T: X X^T = Kc + a 1^T + 1 a^T + |mu|^2 11^T (a = Xc mu), image sums are
    r = Xc 1 + sum(mu), and centring each image across features gives X X^T - r r^T / d.
    """
    raw = centred_gram + cross[:, None] + cross[None, :] + mean_norm2
    row_sums = row_sums_centred + mean_sum
    return raw - np.outer(row_sums, row_sums) / n_features


def centred_gram_of(matrix: np.ndarray) -> np.ndarray:
    """Xc Xc^T in float64 for a small in-memory (n x k) matrix, e.g. the SRP features."""
    x = np.asarray(matrix, dtype=np.float64)
    centred = x - x.mean(axis=0)
    return centred @ centred.T
