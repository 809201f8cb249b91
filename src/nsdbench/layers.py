"""Layers: every distinct computational sub-operation of a model, in execution order.

The primary method is symbolic tracing (torch.fx via torchvision's feature extraction, with
timm's leaf modules for timm models): every call is a node, so functional operations such as
residual adds and activations appear as layers of their own. Where tracing fails we fall back
to forward hooks on leaf modules, keyed by call count (a reused module fires several times),
cloning outputs so that in-place operations do not corrupt them; the inventory says which.

Layers whose outputs are identical up to a reordering of units (dropout and identity in eval
mode, reshapes, permutes) give the same RDM and the same ridge fit, so only the first is kept.
Outputs that do not depend on the image (a class token broadcast over the batch, a positional
embedding) are not layers of the image's representation and are left out.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch

from nsdbench.models import LoadedModel

INVENTORY_COLUMNS = [
    "model", "layer", "layer_index", "layer_depth", "shape", "n_features", "method",
]


class LayerReader:
    """Reads the outputs of chosen layers in one forward pass (``method`` "fx" or "hooks").

    The fx extractor is traced once, on first use, and reused for every batch.
    """

    def __init__(self, model: LoadedModel, method: str, layers: list[str]):
        if method not in ("fx", "hooks"):
            raise ValueError(f"unknown layer method '{method}', expected fx or hooks")
        self.model = model
        self.method = method
        self.layers = list(layers)
        self._extractor = None

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.method == "hooks":
            return _hook_outputs(self.model, images, self.layers)
        if self._extractor is None:
            self._extractor = _fx_extractor(self.model, self.layers)
        with torch.no_grad():
            return self._extractor(images)


def _fx_tools(source: str):
    """(get_graph_node_names, create_feature_extractor) for the model's source."""
    if source == "timm":
        from timm.models import create_feature_extractor, get_graph_node_names
    else:
        from torchvision.models.feature_extraction import (
            create_feature_extractor,
            get_graph_node_names,
        )
    return get_graph_node_names, create_feature_extractor


def _fx_extractor(model: LoadedModel, names=None):
    """A traced module that returns the outputs of ``names`` (all eval-mode nodes if None)."""
    get_names, create = _fx_tools(model.tracer)
    if names is None:
        _, names = get_names(model.module)
    extractor = create(model.module, return_nodes={name: name for name in names})
    return extractor.eval()


def _hook_outputs(model: LoadedModel, images: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
    outputs: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    wanted = set(names) if names is not None else None

    def make_hook(module_name):
        def hook(_module, _inputs, output):
            count = calls.get(module_name, 0)
            calls[module_name] = count + 1
            key = module_name if count == 0 else f"{module_name}:{count}"
            if isinstance(output, torch.Tensor) and (wanted is None or key in wanted):
                outputs[key] = output.detach().clone()

        return hook

    handles = [
        module.register_forward_hook(make_hook(name))
        for name, module in model.module.named_modules()
        if name and not list(module.children())
    ]
    try:
        with torch.no_grad():
            model.module(images)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _fingerprint(tensor: torch.Tensor) -> str:
    """Equal for outputs that hold the same values per image in any order."""
    values = tensor.detach().float().reshape(tensor.shape[0], -1)
    ordered = torch.sort(values, dim=1).values.numpy()
    return hashlib.sha256(ordered.tobytes()).hexdigest()


def _same_for_every_image(tensor: torch.Tensor) -> bool:
    flat = tensor.detach().reshape(tensor.shape[0], -1)
    return bool(torch.equal(flat[0], flat[1]))


def layer_inventory(model: LoadedModel, example_images: np.ndarray) -> pd.DataFrame:
    """The model's layers in execution order, with relative depth, shape and feature count.

    ``example_images``: uint8 (2+, H, W, 3); a batch of two tells the batch axis apart.
    """
    images = model.preprocess(example_images[:2])
    try:
        with torch.no_grad():
            outputs = _fx_extractor(model)(images)
        method = "fx"
    except Exception as error:  # noqa: BLE001 - tracing fails in many ways; hooks still work
        import warnings

        warnings.warn(f"model '{model.name}': fx tracing failed ({error}); using module hooks",
                      stacklevel=2)
        outputs = _hook_outputs(model, images)
        method = "hooks"
    rows = []
    seen = {_fingerprint(images)}  # the input itself is not a layer
    for name, output in outputs.items():
        keep = (
            isinstance(output, torch.Tensor)
            and output.is_floating_point()
            and output.ndim >= 2
            and output.shape[0] == images.shape[0]
        )
        if not keep:
            continue
        fingerprint = _fingerprint(output)
        if fingerprint in seen or _same_for_every_image(output):
            continue
        seen.add(fingerprint)
        rows.append({
            "model": model.name,
            "layer": name,
            "shape": "x".join(str(size) for size in output.shape[1:]),
            "n_features": int(np.prod(output.shape[1:])),
            "method": method,
        })
    if not rows:
        raise ValueError(f"model '{model.name}': no layer output depends on the input image")
    table = pd.DataFrame(rows)
    table.insert(2, "layer_index", np.arange(len(table)))
    table.insert(3, "layer_depth", (np.arange(len(table)) + 1) / len(table))
    return table[INVENTORY_COLUMNS]
