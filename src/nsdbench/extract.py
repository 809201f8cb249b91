"""Feature extraction: one forward pass over the probe images, one Zarr array per layer.

Each layer is stored as (images x flattened features) float32, chunked as (batch, column block)
so that extraction writes whole chunks per batch and the fit reads whole chunks per column
block. No compressor: activations compress poorly and write speed matters (model-zoo.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import zarr
from tqdm import tqdm

from nsdbench.features import layer_store_path
from nsdbench.layers import LayerReader
from nsdbench.models import LoadedModel
from nsdbench.reduce import DEFAULT_READ_BLOCK


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


def extract_features(
    model: LoadedModel, images: np.ndarray, method: str, layers: list[str], out_dir: Path, *,
    batch_size: int = 16, device: str = "auto", progress: bool = True,
) -> None:
    """Write every layer in ``layers`` for ``images`` (uint8, n x H x W x 3) under ``out_dir``.

    Written into a temporary sibling directory and renamed when complete, so a killed job
    leaves nothing that looks finished.
    """
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    target = pick_device(device)
    model.module.to(target)
    reader = LayerReader(model, method, layers)
    arrays: dict[str, zarr.Array] = {}
    n_images = images.shape[0]
    batches = range(0, n_images, batch_size)
    for start in tqdm(batches, desc=f"extract {model.name}", unit="batch", disable=not progress):
        batch = model.preprocess(np.asarray(images[start:start + batch_size])).to(target)
        outputs = reader(batch)
        for layer in layers:
            if layer not in outputs:
                raise RuntimeError(f"model '{model.name}': layer '{layer}' produced no output")
            values = outputs[layer].reshape(len(batch), -1).float().cpu().numpy()
            if layer not in arrays:
                arrays[layer] = zarr.create_array(
                    layer_store_path(partial, layer), shape=(n_images, values.shape[1]),
                    chunks=(batch_size, min(values.shape[1], DEFAULT_READ_BLOCK)),
                    dtype="float32", compressors=None, fill_value=np.nan,
                )
            arrays[layer][start:start + len(batch)] = values
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
