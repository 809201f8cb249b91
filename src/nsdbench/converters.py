"""Foreign ResNet checkpoints -> torchvision state dicts, with torch and numpy only.

VISSL, Detectron2 and Caffe2 (Detectron1 / MSRA) store the same ResNet-50 under their own
names. Their own packages do not install here (docs/model-zoo.md, section 2), so the key
mappings below are written out from that document. Taskonomy encoders are not torchvision
networks; for them we only unwrap the state dict.

Names are not the whole story: Detectron2 and Caffe2 ResNets put the stride of each stage's
first block on the 1x1 conv (``STRIDE_IN_1X1``); see :func:`set_stride_in_1x1`. Their input is
also BGR in 0..255 minus a per-channel mean, which is the caller's preprocessing to apply.

``.pkl`` files are read with :func:`read_numpy_pickle`, a restricted unpickler that builds
numpy arrays and plain containers and refuses every other global: our ``weights_only`` for
numpy pickles.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from nsdbench.joblog import UserError

BN_FIELDS = ("weight", "bias", "running_mean", "running_var")

# Every name a torchvision ResNet's state dict may hold (any depth or width).
_BN_FIELD = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_TORCHVISION_KEY = re.compile(
    rf"conv1\.weight|bn1\.{_BN_FIELD}|fc\.(weight|bias)"
    rf"|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.{_BN_FIELD}"
    rf"|downsample\.0\.weight|downsample\.1\.{_BN_FIELD})"
)

_BN_MODULE = re.compile(r"bn1|layer[1-4]\.\d+\.(bn[1-3]|downsample\.1)")


class ConversionError(UserError):
    """A checkpoint that does not convert; the message names the format and the wrong keys."""


# --------------------------------------------------------------------------- shared helpers


def _preview(keys: Iterable[str], limit: int = 6) -> str:
    """A short, sorted listing of keys for an error message."""
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _as_tensor(fmt: str, key: str, value: Any) -> torch.Tensor:
    """A checkpoint value as a tensor. numpy arrays are copied: pickled ones may be read-only
    or big-endian, which torch.from_numpy refuses."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ConversionError(f"{fmt} checkpoint: key {key!r} holds an object array")
        return torch.from_numpy(np.array(value, dtype=value.dtype.newbyteorder("=")))
    raise ConversionError(
        f"{fmt} checkpoint: key {key!r} holds {type(value).__name__}, not an array or tensor"
    )


def _as_mapping(fmt: str, what: str, value: Any) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConversionError(f"{fmt} checkpoint: {what} is {type(value).__name__}, not a dict")
    return value


def _strip_leading(key: str, prefixes: tuple[str, ...]) -> str:
    """Remove any of ``prefixes`` from the front of ``key``, repeatedly, in any order
    (e.g. ``module._feature_blocks.conv1.weight`` -> ``conv1.weight``)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                stripped = True
    return key


def _put(fmt: str, out: dict, name: str, source_key: str, value: Any) -> None:
    """Store one converted tensor; two source keys mapping to one name is a broken file."""
    if name in out:
        raise ConversionError(
            f"{fmt} checkpoint: key {source_key!r} maps to {name!r}, which another key filled"
        )
    out[name] = _as_tensor(fmt, source_key, value)


def _norm_modules(state: Mapping[str, Any]) -> set[str]:
    """The batch-norm modules (``bn1``, ``layer2.0.downsample.1``, ...) that ``state`` touches."""
    modules = (key.rsplit(".", 1)[0] for key in state)
    return {module for module in modules if _BN_MODULE.fullmatch(module)}


def _check_torchvision_resnet(fmt: str, state: dict[str, torch.Tensor]) -> dict:
    """Fail here, naming the keys, rather than later inside load_state_dict."""
    unknown = [k for k in state if not _TORCHVISION_KEY.fullmatch(k)]
    if unknown:
        raise ConversionError(
            f"{fmt} checkpoint: keys that are not torchvision ResNet names: {_preview(unknown)}"
        )
    if "conv1.weight" not in state:
        raise ConversionError(
            f"{fmt} checkpoint: no stem convolution (conv1.weight) after conversion; "
            f"got {_preview(state)}"
        )
    incomplete = [
        f"{norm}.{field}" for norm in sorted(_norm_modules(state)) for field in BN_FIELDS
        if f"{norm}.{field}" not in state
    ]
    if incomplete:
        raise ConversionError(f"{fmt} checkpoint: batch-norm keys missing: {_preview(incomplete)}")
    return state


# --------------------------------------------------------------------------- VISSL

_VISSL_HEADS = ("projection_head.", "prototypes.", "heads.", "fc.")


def _vissl_trunk(checkpoint: Mapping) -> Mapping:
    """The trunk's state dict, wherever this kind of VISSL-style file keeps it."""
    if "classy_state_dict" in checkpoint:
        try:
            trunk = checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]
        except (KeyError, TypeError) as error:
            raise ConversionError(
                "VISSL checkpoint: has 'classy_state_dict' but no "
                "['base_model']['model']['trunk'] inside it"
            ) from error
        return _as_mapping("VISSL", "the trunk", trunk)
    for wrapper in ("model_state_dict", "state_dict"):
        if wrapper in checkpoint:
            return _as_mapping("VISSL", f"'{wrapper}'", checkpoint[wrapper])
    return checkpoint


def vissl_to_torchvision(checkpoint: dict) -> dict[str, torch.Tensor]:
    """A VISSL ``.torch`` trunk, or an official SwAV/DeepCluster ``.pth.tar``, in torchvision
    ResNet names. Heads are dropped, so there is no ``fc``; load with ``strict=False``."""
    trunk = _vissl_trunk(_as_mapping("VISSL", "the file", checkpoint))
    out: dict[str, torch.Tensor] = {}
    for key, value in trunk.items():
        # VISSL wraps the trunk's modules in `_feature_blocks`; DataParallel adds `module.`.
        name = _strip_leading(str(key), ("module.", "_feature_blocks."))
        if name.startswith(_VISSL_HEADS):
            continue
        _put("VISSL", out, name, key, value)
    return _check_torchvision_resnet("VISSL", out)


# --------------------------------------------------------------------------- Detectron2

_D2_NORM = r"norm\.(?P<field>weight|bias|running_mean|running_var|num_batches_tracked)"
_D2_STEM = re.compile(rf"stem\.conv1\.(weight|{_D2_NORM})")
_D2_BLOCK = re.compile(
    rf"res(?P<stage>[2-5])\.(?P<block>\d+)\.(?P<part>conv[1-3]|shortcut)\.(weight|{_D2_NORM})"
)
_D2_LINEAR = re.compile(r"linear\.(?P<param>weight|bias)")
_D2_TRUNK_START = re.compile(r"(stem|res[2-5]|linear)\.")


def _d2_trunk_key(key: str) -> str | None:
    """The key relative to the ResNet trunk, or None for keys outside it (FPN, heads)."""
    if key.startswith("backbone.bottom_up."):  # FPN models wrap the ResNet as bottom_up
        return key[len("backbone.bottom_up."):]
    if key.startswith("roi_heads.res5."):
        # C4 models run res5 as the box head, on pooled regions; it is still ResNet's stage 5.
        return key[len("roi_heads."):]
    if key.startswith("backbone."):
        rest = key[len("backbone."):]
        return None if rest.startswith(("fpn_", "top_block.")) else rest
    if _D2_TRUNK_START.match(key):  # a bare d2 ResNet state dict
        return key
    return None  # proposal_generator.*, roi_heads.* other than res5, pixel_mean, ...


def _d2_to_torchvision_name(rel: str) -> str | None:
    """``res3.0.conv1.norm.weight`` -> ``layer2.0.bn1.weight``; None if ``rel`` is no ResNet
    parameter."""
    if m := _D2_STEM.fullmatch(rel):
        return f"bn1.{m['field']}" if m["field"] else "conv1.weight"
    if m := _D2_BLOCK.fullmatch(rel):
        prefix = f"layer{int(m['stage']) - 1}.{m['block']}"
        if m["part"] == "shortcut":
            return f"{prefix}.downsample.1.{m['field']}" if m["field"] else (
                f"{prefix}.downsample.0.weight")
        k = m["part"][-1]
        return f"{prefix}.bn{k}.{m['field']}" if m["field"] else f"{prefix}.conv{k}.weight"
    if m := _D2_LINEAR.fullmatch(rel):  # d2 ImageNet classifiers name the fc `linear`
        return f"fc.{m['param']}"
    return None


def detectron2_to_torchvision(checkpoint: dict) -> dict[str, torch.Tensor]:
    """A Detectron2 checkpoint (model-zoo ``.pkl`` of numpy arrays, or a trained ``.pth``) in
    torchvision ResNet names. FPN, proposal and ROI heads are dropped; a C4 model's
    ``roi_heads.res5`` becomes ``layer4``. Apply :func:`set_stride_in_1x1` to the model."""
    checkpoint = _as_mapping("Detectron2", "the file", checkpoint)
    model = _as_mapping("Detectron2", "'model'", checkpoint.get("model", checkpoint))
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in model.items():
        rel = _d2_trunk_key(str(key))
        if rel is None:
            continue
        name = _d2_to_torchvision_name(rel)
        if name is None:
            unknown.append(key)
        else:
            _put("Detectron2", out, name, key, value)
    if unknown:
        raise ConversionError(
            f"Detectron2 checkpoint: backbone keys with no torchvision counterpart: "
            f"{_preview(unknown)}"
        )
    if not out:
        looks_caffe2 = "blobs" in checkpoint or any(
            str(k) == "conv1_w" or str(k).startswith("res_conv1_") for k in model)
        hint = " (this looks like Caffe2 blobs: use caffe2_to_torchvision)" if looks_caffe2 else ""
        raise ConversionError(
            f"Detectron2 checkpoint: no backbone keys (backbone.bottom_up.*, backbone.*, "
            f"roi_heads.res5.*) among {_preview(map(str, model))}{hint}"
        )
    return _check_torchvision_resnet("Detectron2", out)


# --------------------------------------------------------------------------- Caffe2

_C2_BN = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_C2_STEM_BN = re.compile(r"res_conv1_bn_(?P<bn>s|b|rm|riv)")
_C2_BLOCK = re.compile(
    r"res(?P<stage>[2-5])_(?P<block>\d+)_branch(?P<branch>1|2a|2b|2c)_(w|bn_(?P<bn>s|b|rm|riv))"
)
_C2_FC = re.compile(r"(fc1000|pred)_(?P<param>w|b)")
_C2_SKIP = re.compile(r".*_momentum|lr|model_iter")  # optimiser state, not weights
_C2_TRUNK_LIKE = re.compile(r"conv1_|res_conv1_|res\d+_")
_C2_CONV_OF_BRANCH = {"2a": "1", "2b": "2", "2c": "3"}
# AffineChannel y = s * x + b equals BN with mean 0 and var + eps = 1 (d2's FrozenBN does this).
_BN_EPS = 1e-5


def _c2_to_torchvision_name(blob: str) -> str | None:
    """``res3_0_branch2a_bn_s`` -> ``layer2.0.bn1.weight``; None if not a ResNet blob."""
    if blob == "conv1_w":
        return "conv1.weight"
    if m := _C2_STEM_BN.fullmatch(blob):
        return f"bn1.{_C2_BN[m['bn']]}"
    if m := _C2_BLOCK.fullmatch(blob):
        prefix = f"layer{int(m['stage']) - 1}.{m['block']}"
        if m["branch"] == "1":
            module = "downsample.1" if m["bn"] else "downsample.0"
        else:
            k = _C2_CONV_OF_BRANCH[m["branch"]]
            module = f"bn{k}" if m["bn"] else f"conv{k}"
        return f"{prefix}.{module}.{_C2_BN[m['bn']]}" if m["bn"] else f"{prefix}.{module}.weight"
    if m := _C2_FC.fullmatch(blob):
        return f"fc.{'weight' if m['param'] == 'w' else 'bias'}"
    return None


def _fill_affine_channel_stats(out: dict[str, torch.Tensor]) -> None:
    """MSRA ImageNet files store AffineChannel (scale, bias) only: give those norms the
    running statistics that make torchvision's BatchNorm the identical affine map."""
    for norm in sorted(_norm_modules(out)):
        if f"{norm}.weight" not in out:
            continue  # reported by _check_torchvision_resnet
        has = [f"{norm}.{f}" in out for f in ("running_mean", "running_var")]
        if all(has):
            continue
        if any(has):
            raise ConversionError(
                f"Caffe2 checkpoint: {norm} has only one of its running statistics (_bn_rm/_bn_riv)"
            )
        scale = out[f"{norm}.weight"]
        out[f"{norm}.running_mean"] = torch.zeros_like(scale)
        out[f"{norm}.running_var"] = torch.full_like(scale, 1.0 - _BN_EPS)


def caffe2_to_torchvision(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Caffe2 / Detectron1 blobs (MSRA ``R-50.pkl``, Goyal19 conversions) in torchvision ResNet
    names, ``fc1000``/``pred`` as ``fc``. ``_bn_riv`` is taken as the running variance.
    Apply :func:`set_stride_in_1x1` to the model."""
    checkpoint = _as_mapping("Caffe2", "the file", checkpoint)
    blobs = checkpoint
    for wrapper in ("blobs", "model"):  # Detectron1 detection files, d2-rewrapped files
        if isinstance(checkpoint.get(wrapper), Mapping):
            blobs = checkpoint[wrapper]
            break
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in blobs.items():
        blob = str(key)
        if _C2_SKIP.fullmatch(blob):
            continue
        name = _c2_to_torchvision_name(blob)
        if name is not None:
            _put("Caffe2", out, name, key, value)
        elif _C2_TRUNK_LIKE.match(blob):
            unknown.append(blob)
        # anything else belongs to a detection head (rpn_*, fpn_*, cls_score_*, ...): dropped
    if unknown:
        raise ConversionError(
            f"Caffe2 checkpoint: ResNet-like blobs with no torchvision counterpart: "
            f"{_preview(unknown)}"
        )
    if not out:
        raise ConversionError(
            f"Caffe2 checkpoint: no ResNet blobs (conv1_w, res_conv1_bn_*, resN_M_branch*) among "
            f"{_preview(map(str, blobs))}"
        )
    _fill_affine_channel_stats(out)
    return _check_torchvision_resnet("Caffe2", out)


# --------------------------------------------------------------------------- Taskonomy


def taskonomy_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """A visualpriors Taskonomy file (``{"state_dict": ...}`` or the state dict itself) as a
    plain state dict for ``visualpriors.taskonomy_network.TaskonomyEncoder`` (or decoder)."""
    checkpoint = _as_mapping("Taskonomy", "the file", checkpoint)
    state = _as_mapping("Taskonomy", "'state_dict'", checkpoint.get("state_dict", checkpoint))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        _put("Taskonomy", out, _strip_leading(str(key), ("module.",)), key, value)
    if not out:
        raise ConversionError("Taskonomy checkpoint: the state dict is empty")
    return out


# --------------------------------------------------------------------------- semantics


def set_stride_in_1x1(resnet: torchvision.models.ResNet) -> None:
    """Move each stage's downsampling stride from the 3x3 conv to the 1x1 conv, in place.

    Caffe2/MSRA and Detectron2 model-zoo ResNets stride the first 1x1 conv of layer2..layer4
    (``STRIDE_IN_1X1=True``, the original ResNet paper); torchvision v1.5 strides the 3x3.
    The weights have the same shapes either way, so a wrong placement loads silently and
    only the outputs show it.
    """
    for stage in ("layer2", "layer3", "layer4"):
        block = getattr(resnet, stage)[0]
        if not isinstance(block, torchvision.models.resnet.Bottleneck):
            raise ConversionError(
                f"set_stride_in_1x1: {stage}[0] is {type(block).__name__}, not a Bottleneck"
            )
        if (2, 2) not in (tuple(block.conv1.stride), tuple(block.conv2.stride)):
            raise ConversionError(
                f"set_stride_in_1x1: {stage}[0] has no stride 2 to move (dilated network?)"
            )
        block.conv1.stride = (2, 2)
        block.conv2.stride = (1, 1)


# --------------------------------------------------------------------------- numpy pickles


def _numpy_core(submodule: str):
    """numpy's private core module: ``numpy._core`` on numpy 2, ``numpy.core`` before."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a pickle of numpy arrays, scalars, dtypes and plain containers references, under
    the module names numpy 1, numpy 2 and Python 2 wrote them with."""
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles
        ("collections", "OrderedDict"): OrderedDict,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    for builtins in ("builtins", "__builtin__"):
        for name, obj in (("set", set), ("frozenset", frozenset), ("slice", slice),
                          ("complex", complex), ("bytearray", bytearray)):
            allowed[(builtins, name)] = obj
    return allowed


class _NumpyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and containers; refuses any other global, so loading a file
    cannot call into arbitrary code."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # Python 2 pickles hold arrays as str
        self._path = path
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise ConversionError(
                f"{self._path}: refused to load global '{module}.{name}'; only numpy arrays "
                "and plain containers are allowed in a weights pickle"
            ) from None


def read_numpy_pickle(path) -> dict:
    """A ``.pkl`` of numpy arrays (Detectron2 model zoo, Caffe2 blobs), read without running
    code from the file: anything but arrays and containers raises :class:`ConversionError`."""
    path = Path(path)
    with path.open("rb") as file:
        try:
            data = _NumpyUnpickler(file, path).load()
        except ConversionError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                ImportError, IndexError, KeyError) as error:
            raise ConversionError(f"{path}: not a readable numpy pickle: {error}") from error
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: the pickle holds {type(data).__name__}, not a dict")
    return data
