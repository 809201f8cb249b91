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

from nsdbench.float16 import to_float32
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
    # With ``gram_blocks``: name -> that block of centred_gram (centred_gram and rdm are None),
    # and for each square block on the diagonal (rows a == rows b) its RDM.
    gram_blocks: dict | None = None
    rdm_blocks: dict | None = None


def srp_seed(global_seed: int, model: str, layer: str) -> np.random.SeedSequence:
    """A seed that depends only on (global seed, model, layer), stable across runs and machines."""
    digest = hashlib.sha256(f"{global_seed}\0{model}\0{layer}".encode()).digest()
    return np.random.SeedSequence(int.from_bytes(digest[:16], "little"))


def srp_dimension(ridge: dict, n_images: int) -> int | None:
    """The SRP dimension a config's ``ridge`` section asks for: None for ``reduction: none``,
    else ``srp_dim`` or, if unset, the Johnson-Lindenstrauss bound for n images at eps 0.1."""
    if ridge["reduction"] == "none":
        return None
    if ridge["srp_dim"]:
        return ridge["srp_dim"]
    # Imported only here: sklearn's import takes seconds, and resource callables call this.
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    return int(johnson_lindenstrauss_min_dim(n_images, eps=0.1))


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


def _transposed_float32(block: np.ndarray) -> np.ndarray:
    """(width x n) float32 copy of an (n x width) block, features as rows.

    The SRP product below wants each feature's values over images contiguous. A band of
    images at a time is converted (:func:`nsdbench.float16.to_float32`, 2.5x faster than
    numpy's cast) into a small buffer, then copied out in square tiles, which keeps source and
    destination in cache (a plain transposed copy runs at ~8 ns per value, tiles at ~2)."""
    n_images, width = block.shape
    transposed = np.empty((width, n_images), dtype=np.float32)
    band = np.empty((min(_TILE, n_images), width), dtype=np.float32)
    for start in range(0, n_images, _TILE):
        images = slice(start, min(start + _TILE, n_images))
        values = to_float32(block[images], out=band[:images.stop - start])
        for column in range(0, width, _TILE):
            transposed[column:column + _TILE, images] = values[:, column:column + _TILE].T
    return transposed


_TILE = 128  # measured fastest of 64-512 at n=1000


def _project_transposed(transposed: np.ndarray, seed, first_column: int, n_features: int,
                        transposed_out: np.ndarray) -> None:
    """Add R^T X^T for the feature rows of ``transposed`` (width x n) to ``transposed_out``
    (k x n), in place.

    Why this layout: with features as rows, scipy's CSR kernel adds each nonzero r_jc times
    feature j's n values to output row c, a contiguous axpy, directly into the accumulator
    (no (k x n) temporary per sub-matrix). The public ``R.T @ X.T`` allocates and adds one
    (measured 4.5x slower per sub-matrix at n=1000, k=5960)."""
    n_components = transposed_out.shape[0]
    n_images = transposed.shape[1]
    for start in range(0, transposed.shape[0], SRP_BLOCK):
        rows = transposed[start:start + SRP_BLOCK]
        matrix = srp_submatrix(
            seed, (first_column + start) // SRP_BLOCK, rows.shape[0], n_features, n_components
        )
        by_component = _transpose_csr(matrix)
        _csr_matvecs(n_components, rows.shape[0], n_images, by_component.indptr,
                     by_component.indices, by_component.data, rows.ravel(),
                     transposed_out.ravel())


def _transpose_csr(matrix: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    transposed = matrix.T.tocsr()
    transposed.sort_indices()  # ascending feature rows: the axpys read ``rows`` in order
    return transposed


try:  # scipy's in-place CSR x dense kernel (private; stable since scipy 0.x)
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a future scipy without it: same result, a temporary
    def _csr_matvecs(n_row, n_col, n_vecs, indptr, indices, data, x, y):
        matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n_row, n_col))
        y.reshape(n_row, n_vecs)[...] += matrix @ x.reshape(n_col, n_vecs)


def reduce_layer(
    features, *, n_components: int | None, seed: np.random.SeedSequence | None = None,
    read_block: int = DEFAULT_READ_BLOCK, gram_dtype=np.float32, gram_blocks: dict | None = None,
) -> LayerReduction:
    """Stream ``features`` (anything sliceable as [:, a:b], e.g. a zarr array) in column blocks.

    ``n_components=None`` skips the SRP. ``gram_dtype`` float32 (the default) is twice as fast
    on the n^2 d Gram and, because each block is centred first, accurate to ~1e-6 in the RDM
    and in LOO r (compute-notes.md); float64 is exact to rounding. Sums are kept in float64.

    ``gram_blocks`` (name -> (row slice a, row slice b)): accumulate only those blocks of the
    Gram, e.g. for held-out images only each subject's own test block and the test x train
    block, not (5000 x 5000) for 4 subjects' 1000 test images. The read block then narrows
    so that it holds about as many values as DEFAULT_READ_BLOCK columns of 1000 images.
    """
    n_images, n_features = features.shape
    if read_block % SRP_BLOCK:
        raise ValueError(f"read_block must be a multiple of {SRP_BLOCK}")
    if gram_blocks is None:
        centred_gram = np.zeros((n_images, n_images), dtype=np.float64)
        blocks = {}
    else:
        centred_gram = None
        blocks = {name: np.zeros((a.stop - a.start, b.stop - b.start))
                  for name, (a, b) in gram_blocks.items()}
        squared_norms = np.zeros(n_images)  # diag(Kc), for the constant-layer check
        read_block = min(read_block, max(SRP_BLOCK, read_block * 1000 // n_images
                                         // SRP_BLOCK * SRP_BLOCK))
    # Sums that recover the row-centred Gram: see _row_centred_gram.
    cross = np.zeros(n_images)  # Xc @ mu
    row_sums_centred = np.zeros(n_images)  # Xc @ 1
    mean_norm2 = 0.0  # mu . mu
    mean_sum = 0.0  # sum(mu)
    transposed_projection = None
    if n_components is not None:
        # Accumulated as (k x n): see _project_transposed.
        transposed_projection = np.zeros((n_components, n_images), dtype=np.float32)
    finite = True
    for start in range(0, n_features, read_block):
        block = np.asarray(features[:, start:start + read_block])
        rows = _feature_rows(block, gram_dtype, float32_copy=transposed_projection is not None)
        del block
        # A NaN or inf anywhere makes its feature's sum non-finite: no separate pass over X.
        # (The sums only set the centring offset, and any offset gives the exact sums below,
        # so a BLAS product with float32 accumulation is enough: 3x faster than numpy's.)
        column_sums = (rows @ np.ones(n_images, dtype=rows.dtype)).astype(np.float64)
        if not np.all(np.isfinite(column_sums)):
            finite = False
            break
        if transposed_projection is not None:
            _project_transposed(rows if rows.dtype == np.float32 else rows.astype(np.float32),
                                seed, start, n_features, transposed_projection)
        column_means = column_sums / n_images
        rows -= column_means.astype(gram_dtype)[:, None]  # in place: rows is our own copy
        # rows.T @ rows: numpy runs it as one symmetric rank-k update (half the flops).
        if gram_blocks is None:
            centred_gram += rows.T @ rows
        else:
            for name, (a, b) in gram_blocks.items():
                blocks[name] += rows[:, a].T @ rows[:, b]
            squared_norms += np.einsum("ji,ji->i", rows, rows)
        # Xc mu and Xc 1 in one pass over the block.
        sums = np.stack([column_means, np.ones_like(column_means)]).astype(gram_dtype) @ rows
        cross += sums[0]
        row_sums_centred += sums[1]
        mean_norm2 += float(column_means @ column_means)
        mean_sum += float(column_means.sum())
        del rows
    if not finite:
        nan = np.full((n_images, n_images), np.nan) if gram_blocks is None else None
        return LayerReduction(n_features, nan, nan, None, finite=False, constant=False)
    spread = np.trace(centred_gram) if gram_blocks is None else squared_norms.sum()
    # Constant up to rounding: the spread across images is negligible next to the values.
    raw_power = spread + n_images * mean_norm2
    constant = bool(spread <= CONSTANT_TOLERANCE * max(raw_power, 1e-300))
    projection = None if transposed_projection is None else transposed_projection.T
    sums = (cross, row_sums_centred, mean_norm2, mean_sum, n_features)
    if gram_blocks is None:
        rdm = rdm_from_centred_gram(_row_centred_gram(centred_gram, *sums), overwrite=True)
        return LayerReduction(n_features, centred_gram, rdm, projection, True, constant)
    rdms = {
        name: rdm_from_centred_gram(_row_centred_gram(blocks[name], *sums, rows=a), overwrite=True)
        for name, (a, b) in gram_blocks.items() if a == b
    }
    return LayerReduction(n_features, None, None, projection, True, constant, blocks, rdms)


def _feature_rows(block: np.ndarray, dtype, float32_copy: bool) -> np.ndarray:
    """The block as (width x n) rows of ``dtype`` that this pass owns (it centres them in
    place). With the SRP, a true transposed float32 copy (the layout its kernel needs); without,
    a cast copy whose transpose is a free view."""
    if float32_copy:
        rows = _transposed_float32(block)
        return rows if dtype == np.float32 else rows.astype(dtype)
    if block.dtype == dtype and block.flags.c_contiguous and block.flags.owndata:
        return block.T  # a fresh read (e.g. from zarr), nobody else's data
    if dtype == np.float32:
        return to_float32(block).T
    return np.array(block, dtype=dtype, order="C").T


def _row_centred_gram(centred_gram, cross, row_sums_centred, mean_norm2, mean_sum, n_features,
                      rows=slice(None)):
    """Gram of the image-wise centred features, from the feature-centred Gram and block sums.

    With X = Xc + 1 mu^T: X X^T = Kc + a 1^T + 1 a^T + |mu|^2 11^T (a = Xc mu), image sums are
    r = Xc 1 + sum(mu), and centring each image across features gives X X^T - r r^T / d.
    ``centred_gram`` may be the square block of ``rows`` only.
    """
    cross, row_sums = cross[rows], row_sums_centred[rows] + mean_sum
    # Every term is built symmetric (a_i + a_j, r_i r_j), so a symmetric Gram stays exactly so.
    raw = np.add.outer(cross, cross)
    raw += mean_norm2
    raw += centred_gram
    raw -= np.outer(row_sums, row_sums) / n_features
    return raw


def centred_gram_of(matrix: np.ndarray) -> np.ndarray:
    """Xc Xc^T (float64 result) for a small in-memory (n x k) matrix, e.g. the SRP features.

    float32 input is centred in float64 and multiplied in float32, the rule of
    compute-notes.md (centre first, then a float32 Gram is accurate to ~1e-6); float64 input
    stays float64 throughout."""
    x = np.asarray(matrix)
    mean = x.mean(axis=0, dtype=np.float64)
    if x.dtype == np.float64:
        centred = x - mean
    else:  # as the streaming pass centres its blocks: float64 mean, float32 values
        centred = np.subtract(x, mean.astype(np.float32), dtype=np.float32)
    return (centred @ centred.T).astype(np.float64)
