"""Where a layer's features live on disk, how they are written, and how to open them (no torch
needed here, so the CPU fit jobs can read stores in an environment without it).

A layer is one Zarr v3 array, (images x features), chunked as (extraction batch, column block),
uncompressed, written by zarr from a background thread (see ChunkWriter).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from nsdbench.joblog import UserError
from nsdbench.reduce import DEFAULT_READ_BLOCK

# Column block of a chunk: the fit reads this many feature columns at a time, so each of its
# reads is whole chunks.
COLUMN_BLOCK = DEFAULT_READ_BLOCK
# What a chunk file is called while it is written (zarr's own temporaries end the same way).
TORN_SUFFIX = ".partial"
STORE_DTYPES = ("float16", "float32")


class FeatureStoreError(UserError, FileNotFoundError):
    """A layer's feature store is missing, of the wrong kind, or cut short."""


def layer_store_path(directory: Path, layer: str) -> Path:
    return Path(directory) / f"{layer}.zarr"


def open_layer(directory: Path, layer: str) -> zarr.Array:
    """The stored (images x features) array of one layer, read lazily.

    Its dtype is whatever extraction stored (float16 by default, or float32); slices come back
    in that dtype, and the readers (nsdbench.reduce) cast each block to float32/float64 before
    any arithmetic, so float16 stores cost precision only in the stored values themselves.
    """
    path = layer_store_path(directory, layer)
    try:
        array = zarr.open_array(path, mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as error:
        raise FeatureStoreError(
            f"{path}: no feature store for layer '{layer}' (expected a Zarr array written by "
            "the extract rule)"
        ) from error
    except (ValueError, KeyError, TypeError) as error:  # zarr.json unreadable or not an array
        raise FeatureStoreError(
            f"{path}: not a readable Zarr array ({error}); delete it and extract again"
        ) from error
    check_layer_store(array, path)
    return array


def check_layer_store(array: zarr.Array, path: Path) -> None:
    """Refuse a store that is not what extraction writes: a 2-D float16/float32 array whose
    chunk files are all there and all whole. A chunk cut short (a disk that filled up, a copy
    interrupted) would fail deep inside the fit, and a missing one would read as NaN."""
    if array.ndim != 2 or str(array.dtype) not in STORE_DTYPES:
        raise FeatureStoreError(
            f"{path}: expected a 2-D (images x features) array of {' or '.join(STORE_DTYPES)}, "
            f"got {array.dtype} {array.shape}; delete it and extract again"
        )
    rows, columns = array.chunks
    chunk_bytes = rows * columns * array.dtype.itemsize  # uncompressed: edge chunks are whole
    for row in range(-(-array.shape[0] // rows)):
        for column in range(-(-array.shape[1] // columns)):
            chunk = Path(path) / "c" / str(row) / str(column)
            size = chunk.stat().st_size if chunk.is_file() else None
            if size != chunk_bytes:
                found = "missing" if size is None else f"{size} bytes"
                raise FeatureStoreError(
                    f"{chunk}: feature chunk is {found}, expected {chunk_bytes} bytes "
                    "(truncated or incomplete store); delete the store and extract again"
                )


def create_layer_store(
    directory: Path, layer: str, *, n_images: int, width: int, chunk_rows: int, dtype: str,
    column_block: int = COLUMN_BLOCK,
) -> zarr.Array:
    """An empty (NaN) uncompressed store for one layer: activations compress poorly and write
    speed matters (model-zoo.md)."""
    return zarr.create_array(
        layer_store_path(directory, layer), shape=(n_images, width),
        chunks=(chunk_rows, min(width, column_block)), dtype=dtype, compressors=None,
        fill_value=np.nan,
        # Else zarr compares every chunk with the fill value before writing it, which halves
        # float16 write speed (measured: 260 -> 540-720 MB/s) for nothing.
        config={"write_empty_chunks": True},
    )


class ChunkWriter:
    """Writes row blocks of layer arrays through zarr on a background thread, so that one
    batch's writes overlap the next batch's forward pass.

    One thread keeps the writes in order: two halves of a chunk (a batch halved after CUDA
    out-of-memory) are read-modify-writes of the same chunk and must not race. zarr writes each
    chunk file under a temporary name and renames it (``TORN_SUFFIX``), so a kill never leaves
    a torn chunk behind, only a temporary file that a resumed job removes.
    """

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: list[Future] = []

    def write(self, array: zarr.Array, start: int, values: np.ndarray) -> None:
        """Queue ``values`` for rows [start, start + len) of ``array``; ``wait`` to finish.
        ``values`` must not change until then."""
        self.pending.append(self.pool.submit(array.__setitem__, slice(start, start + len(values)),
                                             values))

    def take_pending(self) -> list[Future]:
        """The writes queued so far, handed over for a later ``wait(writes)``."""
        pending, self.pending = self.pending, []
        return pending

    def wait(self, writes: list[Future] | None = None) -> None:
        """Block until ``writes`` (default: every queued one) are on disk; raises the first
        write error."""
        writes = self.take_pending() if writes is None else writes
        for future in writes:
            future.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()
