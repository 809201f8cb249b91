"""Build the configured models, offline, with the preprocessing their source uses.

A model entry (config ``models:``) names its ``source`` and the source's own architecture name
(``arch``). ``trained: false`` gives the randomly initialised twin, initialised the way the source
does by default. Trained weights always come from a local file (the weights cache filled by the
``fetch_weights`` rule, ``weights.path``, or an installed package that ships them); nothing is
downloaded at run time. The builders per source live in ``nsdbench.sources``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from nsdbench.preprocess import Preprocessing
from nsdbench.sources import BUILDERS, FORMATS, ModelError, image_size, weights_format
from nsdbench.weights import verified_file

SOURCES = tuple(BUILDERS)
ARCHITECTURES = ("convolutional", "transformer", "mlp-mixer")

__all__ = ["ARCHITECTURES", "SOURCES", "LoadedModel", "ModelError", "build_model", "image_size"]


@dataclass
class LoadedModel:
    name: str
    module: torch.nn.Module
    preprocess: Preprocessing
    source: str
    tracer: str = "torchvision"  # whose torch.fx leaf-module rules trace this module


def build_model(entry: dict, with_weights: bool = True) -> LoadedModel:
    """The model of a config entry in eval mode. ``with_weights=False`` skips loading the
    checkpoint (a dry look at the architecture)."""
    source = entry["source"]
    if source not in BUILDERS:
        raise ModelError(f"model '{entry['name']}': unknown source '{source}'; "
                         f"valid sources: {', '.join(SOURCES)}")
    architecture = entry.get("architecture")
    if architecture is not None and architecture not in ARCHITECTURES:
        raise ModelError(f"model '{entry['name']}': unknown architecture '{architecture}'; "
                         f"valid architectures: {', '.join(ARCHITECTURES)}")
    if entry.get("trained") and weights_format(entry) not in FORMATS[source]:
        raise ModelError(f"model '{entry['name']}': a {source} model reads weights.format "
                         f"{' or '.join(FORMATS[source])}, not '{weights_format(entry)}'")
    checkpoint = verified_file(entry) if entry.get("trained") and with_weights else None
    # Random-init twins must be the same network on every run and machine.
    torch.manual_seed(int(hashlib.sha256(entry["name"].encode()).hexdigest()[:8], 16))
    module, preprocess, tracer = BUILDERS[source](entry, checkpoint)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for submodule in module.modules():
        # An in-place activation overwrites the output of the layer before it, which the
        # extraction has captured by then (model-zoo.md measured it); compute out of place.
        if getattr(submodule, "inplace", False) is True:
            submodule.inplace = False
    return LoadedModel(entry["name"], module, preprocess, source, tracer)
