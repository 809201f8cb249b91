"""Where a layer's features live on disk, and how to open them (no torch needed here, so the
CPU fit jobs can read stores in an environment without it)."""

from __future__ import annotations

from pathlib import Path

import zarr


def layer_store_path(directory: Path, layer: str) -> Path:
    return Path(directory) / f"{layer}.zarr"


def open_layer(directory: Path, layer: str) -> zarr.Array:
    """The stored (images x features) float32 array of one layer, read lazily."""
    path = layer_store_path(directory, layer)
    try:
        return zarr.open_array(path, mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError) as error:
        raise FileNotFoundError(
            f"{path}: no feature store for layer '{layer}' (expected a Zarr array written by "
            "the extract rule)"
        ) from error
