"""Feature extraction: one forward pass over the probe images, one Zarr array per layer.

Each layer is stored as (images x flattened features), float16 by default (half the disk and
write time of float32; readers compute in float32/float64 whatever the store holds), chunked as
(batch, column block) so that extraction writes whole chunks per batch and the fit reads whole
chunks per column block. No compressor: activations compress poorly and write speed matters
(model-zoo.md).

A job killed at any moment resumes where it stopped: the stores grow in ``<out_dir>.partial``
beside the output, with a small progress record written after every finished chunk of images,
and are renamed to ``out_dir`` only when complete. A rerun whose fingerprint (model, weights,
layers, images, batch size, dtype) matches the record continues from the recorded image; any
other starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

import nsdbench
from nsdbench.features import (
    TORN_SUFFIX,
    ChunkWriter,
    create_layer_store,
    layer_store_path,
)
from nsdbench.joblog import UserError
from nsdbench.layers import LayerReader
from nsdbench.models import LoadedModel

log = logging.getLogger(__name__)

STORE_DTYPES = {"float16": torch.float16, "float32": torch.float32}
FLOAT16_MAX = float(torch.finfo(torch.float16).max)  # 65504
PROGRESS_FILE = "progress.json"
FORMAT_VERSION = 1  # bump when the store layout changes, so old partial stores start over


class FeatureOverflowError(UserError):
    """A layer's values do not fit the store's float16 range."""


@dataclass(frozen=True)
class ExtractionReport:
    """What one call did: where it started (0, or the image a resumed job continued from), how
    many forward passes it ran, and the batch size it ended with (smaller after CUDA OOM)."""

    first_image: int
    n_images: int
    batches_computed: int
    batch_size: int


class StackedImages:
    """Several (n_i, H, W, 3) image arrays read as one, lazily, in the order given (the train
    images, then each subject's test images)."""

    def __init__(self, parts):
        self.parts = list(parts)
        sizes = [part.shape[0] for part in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        pieces = []
        for part, offset in zip(self.parts, self.offsets[:-1]):
            low, high = max(start - offset, 0), min(stop - offset, part.shape[0])
            if low < high:
                pieces.append(np.asarray(part[low:high]))
        return np.concatenate(pieces)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def partial_dir(out_dir: Path) -> Path:
    """Where an unfinished extraction into ``out_dir`` keeps its stores and progress. A sibling,
    not a child: Snakemake deletes a failed job's declared outputs, and this must survive."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def extract_features(
    model: LoadedModel, images: np.ndarray, method: str, layers: list[str], out_dir: Path, *,
    batch_size: int = 16, dtype: str = "float16", device: str = "auto", progress: bool = True,
) -> ExtractionReport:
    """Write every layer in ``layers`` for ``images`` (uint8, n x H x W x 3) under ``out_dir``.

    ``dtype`` ("float16" or "float32") is how values are stored. ``batch_size`` is also the
    chunk height; on CUDA a batch that runs out of memory is halved (down to 1) and retried.
    """
    if dtype not in STORE_DTYPES:
        raise ValueError(f"unknown feature dtype '{dtype}', expected float16 or float32")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    partial = partial_dir(out_dir)
    n_images = images.shape[0]
    fingerprint = extraction_fingerprint(model, images, method, layers, batch_size, dtype)
    arrays, first_image = _resume_or_start(partial, fingerprint, layers, model.name)
    stores = _LayerStores(partial, arrays, dtype=dtype, chunk_rows=batch_size, n_images=n_images)
    target = pick_device(device)
    model.module.to(target)
    reader = LayerReader(model, method, layers)
    batches = AdaptiveBatches(batch_size, adaptive=target.type == "cuda")

    buffers = HostBuffers(STORE_DTYPES[dtype])

    def compute(start: int, stop: int) -> None:
        batch = model.preprocess(np.asarray(images[start:stop])).to(target)
        outputs = reader(batch)
        del batch
        # Chunks alternate between two sets of host buffers: one chunk is being written while
        # the next is computed (see _ProgressRecord). A halved batch fills its own rows of its
        # chunk's buffer, so the writes of the chunk's earlier batches are left alone.
        slot = (start // batch_size) % 2
        offset = start % batch_size
        try:
            for layer in layers:
                if layer not in outputs:
                    raise RuntimeError(
                        f"model '{model.name}': layer '{layer}' produced no output")
                # pop: each layer's device memory is freed as soon as it is on the host. The
                # writes run in threads while the next layers are cast.
                output = outputs.pop(layer)
                values = stored_values(output, stop - start, dtype, model.name, layer, start,
                                       out=buffers.get(layer, slot, output, offset, batch_size))
                stores.write(layer, start, values)
        except BaseException:
            # A retry with a halved batch must not race this batch's writes. (A write error
            # here would only hide the one being raised.)
            with contextlib.suppress(Exception):
                stores.writer.wait()
            raise

    bar = tqdm(total=n_images, initial=first_image, desc=f"extract {model.name}", unit="image",
               disable=not progress)
    computed = 0
    record = _ProgressRecord(partial, fingerprint, stores.writer)
    try:
        # One chunk of rows at a time: the progress record only ever points at a chunk
        # boundary, so a resumed job rewrites whole chunks and never leans on a half-written
        # one.
        for chunk_start in range(first_image, n_images, batch_size):
            chunk_stop = min(chunk_start + batch_size, n_images)
            computed += batches.run(compute, chunk_start, chunk_stop)
            record.chunk_queued(chunk_stop)
            bar.update(chunk_stop - chunk_start)
        record.settle()
    except BaseException:
        # The chunk before the failure is complete once its writes are: keep it for the rerun.
        with contextlib.suppress(Exception):
            record.settle()
        raise
    finally:
        stores.close()
        bar.close()
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return ExtractionReport(first_image, n_images, computed, batches.size)


def stored_values(
    output: torch.Tensor, n_rows: int, dtype: str, model_name: str, layer: str, first_row: int = 0,
    *, out: torch.Tensor | None = None,
) -> np.ndarray:
    """A layer's batch output as the (rows x features) host array to store, cast in torch (numpy
    ``astype`` to float16 is 2-3x slower, model-zoo.md) and on the device, so half as many
    bytes cross to the host. ``out``: a host tensor of that shape and dtype to fill (filling
    memory already mapped is 4x faster than a fresh allocation, measured on CPU). Raises
    FeatureOverflowError where float16 turns finite values into inf."""
    flat = output.detach().reshape(n_rows, -1)
    if dtype == "float16" and not _within_float16(flat):
        _raise_overflow(flat, model_name, layer, first_row)
    if out is None:
        return flat.to(STORE_DTYPES[dtype]).cpu().numpy()
    # On a GPU, cast there first: half the bytes cross to the host.
    out.copy_(flat if flat.device.type == "cpu" else flat.to(out.dtype))
    return out.numpy()


def _raise_overflow(flat: torch.Tensor, model_name: str, layer: str, first_row: int) -> None:
    """Raise FeatureOverflowError if float16 turns finite values of ``flat`` into inf (values
    that were NaN or inf already are stored as they are: the fit scores such a layer NaN)."""
    stored = flat.to(torch.float16)
    overflowed = torch.isfinite(flat) & ~torch.isfinite(stored)
    if bool(overflowed.any()):
        largest = float(flat[torch.isfinite(flat)].abs().max())
        rows = torch.nonzero(overflowed.any(dim=1)).flatten() + first_row
        raise FeatureOverflowError(
            f"model '{model_name}': layer '{layer}' has values beyond the float16 range "
            f"(|value| up to {largest:.4g}, float16 holds up to {FLOAT16_MAX:g}) for image "
            f"rows {rows.tolist()[:5]}; store features as float32 instead by setting "
            "`extraction.dtype: float32` in the config"
        )


def _within_float16(values: torch.Tensor) -> bool:
    """True if every value is finite and inside float16's range. One min/max pass: on CPU it
    costs about as much as the cast, while torch.isfinite costs 5-10x more. False (then the
    caller looks closer) also for NaN or inf already there, which aminmax propagates."""
    if values.numel() == 0:
        return True
    low, high = torch.aminmax(values)
    return bool(-FLOAT16_MAX <= float(low)) and bool(float(high) <= FLOAT16_MAX)


class HostBuffers:
    """Host tensors the stored values are cast into, kept from batch to batch: fresh memory
    for every batch costs more than the cast itself (the page faults). ``slot`` picks one of
    several sets, so a set is not refilled while its previous values are still being written."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.buffers: dict[tuple[str, int], torch.Tensor] = {}

    def get(self, layer: str, slot: int, output: torch.Tensor, offset: int,
            chunk_rows: int) -> torch.Tensor | None:
        """Rows [offset, offset + batch) of a (chunk_rows x features) buffer for ``output``;
        None where the output itself can be stored as it is (on the host, in the store's
        dtype)."""
        if output.device.type == "cpu" and output.dtype == self.dtype:
            return None
        rows, width = output.shape[0], output[0].numel()
        buffer = self.buffers.get((layer, slot))
        if buffer is None or buffer.shape != (chunk_rows, width):
            buffer = torch.empty((chunk_rows, width), dtype=self.dtype)
            self.buffers[(layer, slot)] = buffer
        return buffer[offset:offset + rows]  # whole rows of a C-order buffer: contiguous


class AdaptiveBatches:
    """Runs rows [start, stop) in batches of ``size``. With ``adaptive`` (CUDA), a batch that
    runs out of GPU memory is halved, down to 1, and retried; the smaller size is kept for the
    rest of the run (the next batch would only fail the same way). Elsewhere, as configured."""

    def __init__(self, size: int, adaptive: bool):
        self.size = size
        self.adaptive = adaptive

    def run(self, compute, start: int, stop: int) -> int:
        """Call ``compute(a, b)`` over [start, stop); returns how many batches succeeded."""
        row, done = start, 0
        while row < stop:
            size = min(self.size, stop - row)
            try:
                compute(row, row + size)
            except torch.cuda.OutOfMemoryError:
                if not self.adaptive or size == 1:
                    raise
                out_of_memory = True
            else:
                out_of_memory = False
            if out_of_memory:
                # Outside the except block: the traceback no longer pins the batch's tensors,
                # so the cache can actually give their memory back.
                self.size = max(1, size // 2)
                log.warning("CUDA out of memory at images %d-%d; batch size %d -> %d",
                            row, row + size, size, self.size)
                torch.cuda.empty_cache()
                continue
            row, done = row + size, done + 1
        return done


class _LayerStores:
    """The partial directory's arrays, created on a layer's first batch (its width is known
    only then) and opened again when a job resumes, and the writer that fills them."""

    def __init__(self, directory: Path, arrays: dict[str, zarr.Array], *, dtype: str,
                 chunk_rows: int, n_images: int):
        self.directory = directory
        self.arrays = dict(arrays)
        self.dtype, self.chunk_rows, self.n_images = dtype, chunk_rows, n_images
        self.writer = ChunkWriter()

    def write(self, layer: str, start: int, values: np.ndarray) -> None:
        """Queue the rows; they are on disk once ``self.writer`` has waited for them."""
        if layer not in self.arrays:
            self.arrays[layer] = create_layer_store(
                self.directory, layer, n_images=self.n_images, width=values.shape[1],
                chunk_rows=self.chunk_rows, dtype=self.dtype,
            )
        self.writer.write(self.arrays[layer], start, values)

    def close(self) -> None:
        self.writer.close()


def extraction_fingerprint(
    model: LoadedModel, images, method: str, layers: list[str], batch_size: int, dtype: str,
) -> dict:
    """What must match for a partial store to be continued (JSON-safe, compared as a dict)."""
    return {
        "format": FORMAT_VERSION,
        "model": model.name,
        "weights": _weights_digest(model.module),
        "method": method,
        "layers": list(layers),
        "n_images": int(images.shape[0]),
        "image_shape": [int(size) for size in images.shape[1:]],
        "images": _images_digest(images),
        "batch_size": int(batch_size),
        "dtype": dtype,
        # The same weights through other preprocessing, or another version of this code,
        # give other features.
        "preprocess": repr(model.preprocess),
        "code": nsdbench.__version__,
    }


def _weights_digest(module: torch.nn.Module, per_tensor: int = 4096) -> str:
    # A weights file replaced under the same model name must not be mixed into old features.
    # Other weights change nearly every value, so evenly spaced samples of each tensor tell
    # them apart; hashing every byte would cost seconds per job for the largest models.
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // per_tensor)].cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _images_digest(images) -> str:
    # Up to 17 evenly spaced images, the last included: cheap to read, and a different
    # selection or order of images changes them.
    n = images.shape[0]
    digest = hashlib.blake2b(digest_size=16)
    rows = sorted(set(np.linspace(0, n - 1, num=min(n, 17)).astype(int).tolist())) if n else []
    for row in rows:
        digest.update(np.ascontiguousarray(images[row:row + 1]).tobytes())
    return digest.hexdigest()


def read_progress(partial: Path) -> dict | None:
    """The progress record of a partial directory, or None if it has none (or a torn one)."""
    try:
        return json.loads((Path(partial) / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class _ProgressRecord:
    """Moves the progress record past a chunk once the chunk's writes are on disk. They run in
    threads during the next chunk's forward pass (on a GPU they then cost almost nothing), so
    one chunk is in flight at a time."""

    def __init__(self, partial: Path, fingerprint: dict, writer: ChunkWriter):
        self.partial, self.fingerprint, self.writer = partial, fingerprint, writer
        self.in_flight = None  # (the chunk's writes, images finished once they are done)

    def chunk_queued(self, finished: int) -> None:
        """Every write of the chunk ending at image ``finished`` has been queued."""
        self.settle()
        self.in_flight = (self.writer.take_pending(), finished)

    def settle(self) -> None:
        """Wait for the chunk in flight, then record it."""
        if self.in_flight is None:
            return
        (writes, finished), self.in_flight = self.in_flight, None
        self.writer.wait(writes)
        _write_progress(self.partial, self.fingerprint, finished)


def _write_progress(partial: Path, fingerprint: dict, finished: int) -> None:
    # tmp + os.replace: a kill leaves either the old record or the new one, never half of one.
    # Written after every layer of the chunk is stored, so the record never runs ahead.
    tmp = partial / (PROGRESS_FILE + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "finished": finished}))
    os.replace(tmp, partial / PROGRESS_FILE)


def _resume_or_start(
    partial: Path, fingerprint: dict, layers: list[str], model_name: str,
) -> tuple[dict[str, zarr.Array], int]:
    """(layer arrays, first image to compute): the partial directory's own if its record
    matches the fingerprint and every layer's array opens, else a fresh, empty directory and 0."""
    record = read_progress(partial)
    if record is not None and record.get("fingerprint") == fingerprint:
        finished = int(record["finished"])
        try:
            arrays = {layer: zarr.open_array(layer_store_path(partial, layer), mode="r+")
                      for layer in layers} if finished else {}
        except (FileNotFoundError, zarr.errors.NodeNotFoundError):
            log.warning("model %s: %s misses a layer store; starting over", model_name, partial)
        else:
            _remove_torn_chunk_files(partial)
            log.info("model %s: resuming at image %d of %d (batch %d), from %s", model_name,
                     finished, fingerprint["n_images"], finished // fingerprint["batch_size"],
                     partial)
            return arrays, finished
    elif record is not None:
        log.info("model %s: %s was written for other settings; starting over", model_name,
                 partial)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return {}, 0


def _remove_torn_chunk_files(partial: Path) -> None:
    # Chunks are written to a temporary name and renamed (ChunkWriter, and zarr itself); a kill
    # mid-write leaves the temporary file behind. The chunk itself is rewritten on resume.
    for root, _, names in os.walk(partial):
        for name in names:
            if name.endswith(TORN_SUFFIX):
                os.unlink(os.path.join(root, name))
