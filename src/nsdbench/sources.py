"""One builder per model source: the network, its preprocessing, and how its weights load.

Every builder takes a config entry and the verified checkpoint path (None for a random-init
twin) and returns ``(module, preprocessing, tracer)``, where ``tracer`` names the torch.fx
tooling that knows the source's leaf modules ("timm" or "torchvision").

Preprocessing follows each source: timm's resolved data config, torchvision's ImageNet
transform, open_clip's resize-and-crop with CLIP statistics, Taskonomy's 256 px in [-1, 1], and
Detectron2's BGR 0-255 input with pixel means and (usually) no std.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from nsdbench.joblog import UserError
from nsdbench.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from nsdbench.weights import checkpoint_format, torch_load

# Detectron2's MSRA backbones take BGR pixels in 0-255 minus these means (model-zoo.md).
DETECTRON2_BGR_MEAN = (103.530, 116.280, 123.675)


class ModelError(UserError):
    """A model entry that cannot be built; the message names the model and the problem."""


def image_size(entry: dict) -> int | None:
    """An entry's forced input size (config ``image_size``), or None for the source's default."""
    return entry.get("image_size")


def imagenet_preprocessing(entry: dict) -> Preprocessing:
    size = image_size(entry) or 224
    return Preprocessing(size=size, resize=round(size * 256 / 224),
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)


def load_into(entry: dict, module: torch.nn.Module, state_dict: dict,
              may_lack: tuple[str, ...] = ()) -> None:
    """Load a state dict that must cover the module, except keys starting with ``may_lack``
    (the classifier of a trunk-only checkpoint) and BN batch counters."""
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    missing = [key for key in missing
               if not key.startswith(may_lack) and not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelError(
            f"model '{entry['name']}': the checkpoint does not fit '{entry['arch']}': "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


# --- timm -----------------------------------------------------------------------------------

def build_timm(entry: dict, checkpoint: Path | None):
    import timm

    kwargs = {}
    if image_size(entry) and _timm_takes_img_size(entry["arch"]):
        kwargs["img_size"] = image_size(entry)
    fmt = weights_format(entry)
    try:
        if checkpoint is not None and fmt == "timm":
            # timm's own loader applies the architecture's checkpoint filter (renamed keys,
            # resized position embeddings), reading the local file only.
            module = timm.create_model(entry["arch"], pretrained=True,
                                       pretrained_cfg_overlay={"file": str(checkpoint)}, **kwargs)
        else:
            module = timm.create_model(entry["arch"], pretrained=False, **kwargs)
    except Exception as error:  # noqa: BLE001 - timm's loaders raise many types for bad files
        source = f" with checkpoint {checkpoint}" if checkpoint is not None else ""
        raise ModelError(
            f"model '{entry['name']}': timm cannot build '{entry['arch']}'{source}: {error}"
        ) from error
    if checkpoint is not None and fmt == "lukemelas-efficientnet":
        load_into(entry, module, _zip_keys_in_order(entry, module, torch_load(entry, checkpoint)))
    elif checkpoint is not None and fmt != "timm":
        load_into(entry, module, _state_dict_of(torch_load(entry, checkpoint)))
    config = timm.data.resolve_data_config({}, model=module)
    size = image_size(entry) or config["input_size"][-1]
    interpolation = config.get("interpolation")
    preprocess = Preprocessing(
        size=size, resize=math.floor(size / config.get("crop_pct", 0.875)),  # as timm does
        mean=tuple(config["mean"]), std=tuple(config["std"]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
    )
    return module, preprocess, "timm"


def _timm_takes_img_size(arch: str) -> bool:
    # Patch-based models fix their token grid at construction; convolutional ones do not need it.
    return any(key in arch for key in ("vit", "deit", "mixer", "resmlp", "gmlp", "beit", "swin",
                                       "xcit", "cait", "pit", "levit", "coat", "convit", "twins"))


def _zip_keys_in_order(entry, module, state_dict):
    """lukemelas EfficientNet names -> timm names: same tensors in the same order (model-zoo.md)."""
    state_dict = _state_dict_of(state_dict)
    target = [(key, value) for key, value in module.state_dict().items()
              if not key.endswith("num_batches_tracked")]
    source = [(key, value) for key, value in state_dict.items()
              if not key.endswith("num_batches_tracked")]
    shapes_match = len(source) == len(target) and all(
        tuple(s.shape) == tuple(t.shape) for (_, s), (_, t) in zip(source, target)
    )
    if not shapes_match:
        raise ModelError(f"model '{entry['name']}': the checkpoint does not map onto "
                         f"'{entry['arch']}' ({len(source)} tensors for {len(target)})")
    return {name: value for (name, _), (_, value) in zip(target, source)}


def _state_dict_of(checkpoint):
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
    return checkpoint


# --- torchvision (also VISSL and Detectron2 trunks, which load into torchvision ResNets) ------

# What torchvision's builders set when given ImageNet weights: these networks were trained on
# inputs renormalised inside the model.
TORCHVISION_TRAINED_KWARGS = {
    "googlenet": {"transform_input": True},
    "inception_v3": {"transform_input": True},
}
# torchvision's DenseNet files predate its module names: 'norm.1' is now 'norm1'.
LEGACY_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.\w+)$")


def _torchvision_module(entry: dict):
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(entry["arch"])
    except ValueError as error:
        raise ModelError(
            f"model '{entry['name']}': torchvision has no '{entry['arch']}': {error}"
        ) from error
    kwargs = {"weights": None}
    if entry.get("trained"):
        kwargs.update(TORCHVISION_TRAINED_KWARGS.get(entry["arch"], {}))
    if image_size(entry) and entry["arch"].startswith("vit"):
        kwargs["image_size"] = image_size(entry)
    return builder(**kwargs)


def build_torchvision(entry: dict, checkpoint: Path | None):
    module = _torchvision_module(entry)
    if checkpoint is not None:
        fmt = weights_format(entry)
        # A trunk (DINO's ResNet-50) has no classifier; the classifier is not a brain layer.
        may_lack = ("fc.", "classifier.", "heads.") if fmt == "trunk" else ()
        state = _state_dict_of(torch_load(entry, checkpoint))
        if entry["arch"].startswith("densenet"):
            state = {LEGACY_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
        load_into(entry, module, state, may_lack)
    return module, imagenet_preprocessing(entry), "torchvision"


def build_vissl(entry: dict, checkpoint: Path | None):
    from nsdbench.converters import vissl_to_torchvision

    module = _torchvision_module(entry)
    if checkpoint is not None:
        trunk = _converted(entry, checkpoint,
                           lambda: vissl_to_torchvision(torch_load(entry, checkpoint)))
        load_into(entry, module, trunk, may_lack=("fc.",))
    return module, imagenet_preprocessing(entry), "torchvision"


def build_detectron2(entry: dict, checkpoint: Path | None):
    from nsdbench.converters import (
        caffe2_to_torchvision,
        detectron2_to_torchvision,
        read_numpy_pickle,
        set_stride_in_1x1,
    )

    module = _torchvision_module(entry)
    options = entry.get("options") or {}
    if options.get("stride_in_1x1", True):
        set_stride_in_1x1(module)
    if options.get("res5_dilation", 1) == 2:
        _dilate_res5(module)
    if checkpoint is not None:
        fmt = weights_format(entry)
        convert = caffe2_to_torchvision if fmt == "caffe2" else detectron2_to_torchvision
        trunk = _converted(entry, checkpoint, lambda: convert(read_numpy_pickle(checkpoint)))
        load_into(entry, module, trunk, may_lack=("fc.",))
    size = image_size(entry) or 224
    pixel_std = options.get("pixel_std", (1.0, 1.0, 1.0))
    # The Preprocessing scales pixels to [0, 1] first, so the 0-255 statistics are divided by 255.
    preprocess = Preprocessing(
        size=size, resize=round(size * 256 / 224),
        mean=tuple(m / 255 for m in DETECTRON2_BGR_MEAN), std=tuple(s / 255 for s in pixel_std),
        bgr=True,
    )
    return module, preprocess, "torchvision"


def _dilate_res5(resnet) -> None:
    """Detectron2's DC5 backbones: res5 (layer4) keeps stride 1 and every one of its 3x3 convs
    has dilation 2. (torchvision's replace_stride_with_dilation leaves the first block's 3x3
    undilated, so it is not the same network.)"""
    first = resnet.layer4[0]
    first.conv1.stride = first.conv2.stride = first.downsample[0].stride = (1, 1)
    for block in resnet.layer4:
        block.conv2.dilation = block.conv2.padding = (2, 2)


def _converted(entry: dict, checkpoint: Path, convert) -> dict:
    """``convert()``'s state dict; a conversion error names the model and the file."""
    from nsdbench.converters import ConversionError

    try:
        return convert()
    except ConversionError as error:
        raise ModelError(f"model '{entry['name']}': checkpoint {checkpoint}: {error}") from error


# --- open_clip ------------------------------------------------------------------------------

def build_open_clip(entry: dict, checkpoint: Path | None):
    import open_clip

    options = entry.get("options") or {}
    kwargs = {"force_image_size": image_size(entry)} if image_size(entry) else {}
    try:
        clip = open_clip.create_model(entry["arch"], pretrained=None,
                                      force_quick_gelu=options.get("quick_gelu", False), **kwargs)
    except RuntimeError as error:
        raise ModelError(
            f"model '{entry['name']}': open_clip cannot build '{entry['arch']}': {error}"
        ) from error
    if checkpoint is not None:
        state = _state_dict_of(torch_load(entry, checkpoint))
        state = {key.removeprefix("module."): value for key, value in state.items()}
        visual = {key.removeprefix("visual."): value for key, value in state.items()
                  if key.startswith("visual.")}
        load_into(entry, clip.visual, visual)
    module = clip.visual  # the image tower is the vision model; the text tower is not
    size = image_size(entry) or _clip_image_size(module)
    preprocess = Preprocessing(
        size=size, resize=size, mean=tuple(open_clip.OPENAI_DATASET_MEAN),
        std=tuple(open_clip.OPENAI_DATASET_STD), interpolation="bicubic",
    )
    return module, preprocess, "torchvision"


def _clip_image_size(visual) -> int:
    size = getattr(visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


# --- Taskonomy (visualpriors) ---------------------------------------------------------------

def build_taskonomy(entry: dict, checkpoint: Path | None):
    from nsdbench.converters import taskonomy_state_dict

    module = taskonomy_encoder()
    if checkpoint is not None:
        load_into(entry, module, _converted(
            entry, checkpoint, lambda: taskonomy_state_dict(torch_load(entry, checkpoint))))
    size = image_size(entry) or 256
    preprocess = Preprocessing(size=size, resize=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return module, preprocess, "torchvision"


def taskonomy_encoder() -> torch.nn.Module:
    from visualpriors.taskonomy_network import TaskonomyEncoder

    # Its train(self, val) has no default, which breaks fx tracing's .train() call.
    TaskonomyEncoder.train = lambda self, mode=True: torch.nn.Module.train(self, mode)
    return TaskonomyEncoder()


# The checkpoint formats each source reads (config weights.format).
FORMATS = {
    "timm": ("timm", "state_dict", "lukemelas-efficientnet"),
    "torchvision": ("state_dict", "trunk"),
    "open_clip": ("open_clip", "state_dict"),
    "taskonomy": ("taskonomy", "state_dict"),
    "vissl": ("vissl",),
    "detectron2": ("detectron2", "caffe2"),
}

def weights_format(entry: dict) -> str:
    """The checkpoint format of a trained entry: its own, or its source's first one."""
    return checkpoint_format(entry) or FORMATS[entry["source"]][0]


BUILDERS = {
    "timm": build_timm,
    "torchvision": build_torchvision,
    "open_clip": build_open_clip,
    "taskonomy": build_taskonomy,
    "vissl": build_vissl,
    "detectron2": build_detectron2,
}
