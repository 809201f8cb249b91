"""Foreign checkpoints round-trip: a torchvision resnet50 with random weights is written in each
foreign layout (VISSL, Detectron2 .pkl, Caffe2 .pkl, Taskonomy .pth) using inverse key maps
written here, independently of the converters; reading it back must reproduce the outputs."""

import os
import pickle
import re

import numpy as np
import pytest
import torch
import torchvision
from visualpriors.taskonomy_network import TaskonomyEncoder

from nsdbench.converters import (
    ConversionError,
    caffe2_to_torchvision,
    detectron2_to_torchvision,
    read_numpy_pickle,
    set_stride_in_1x1,
    taskonomy_state_dict,
    vissl_to_torchvision,
)

TOLERANCE = 1e-5
AFFINE_VAR = 1.0 - 1e-5  # running_var that makes BN(eps=1e-5) an AffineChannel


# --------------------------------------------------------------------------- model helpers


def _randomise_norms(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random BN affine and running statistics, so that getting them wrong changes outputs."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = torch.rand(n, generator=generator) * 0.5 + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean = torch.randn(n, generator=generator) * 0.1
            module.running_var = torch.rand(n, generator=generator) + 0.5


def _reference_resnet50(seed: int = 0, stride_in_1x1: bool = False) -> torchvision.models.ResNet:
    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    _randomise_norms(model, torch.Generator().manual_seed(seed + 1))
    if stride_in_1x1:
        set_stride_in_1x1(model)
    return model.eval()


def _fresh_resnet50(state: dict, stride_in_1x1: bool = False) -> torchvision.models.ResNet:
    """A differently seeded resnet50 with ``state`` loaded the way the loader does it."""
    torch.manual_seed(12345)
    model = torchvision.models.resnet50(weights=None)
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith("fc.") or k.endswith(".num_batches_tracked")
               for k in result.missing_keys), result.missing_keys
    if stride_in_1x1:
        set_stride_in_1x1(model)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The inputs are tiny; on a busy machine extra intra-op threads only spin and wait
    (measured: 4 s against 0.05 s per forward)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))


# Shared by several tests to keep the file fast; no test modifies them.
@pytest.fixture(scope="module")
def reference() -> torchvision.models.ResNet:
    return _reference_resnet50(seed=0)


@pytest.fixture(scope="module")
def reference_1x1() -> torchvision.models.ResNet:
    """Stride on the 1x1 conv, as in Detectron2 and Caffe2 ResNets."""
    return _reference_resnet50(seed=3, stride_in_1x1=True)


def _pooled(model: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    """Features after avgpool (the formats without fc are compared here)."""
    trunk = torch.nn.Sequential(*list(model.children())[:-1])
    with torch.no_grad():
        return trunk(x).flatten(1)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def _assert_same_outputs(name, reference, loaded, x, outputs=_pooled) -> float:
    expected, got = outputs(reference, x), outputs(loaded, x)
    assert expected.abs().max() > 1e-3  # the comparison means something
    diff = _max_diff(expected, got)
    print(f"{name}: max abs diff {diff:.3g} (output scale {expected.abs().max():.3g})")
    assert diff <= TOLERANCE
    return diff


def _tv_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The reference state without num_batches_tracked (no foreign format stores it)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


# --------------------------------------------------------------------------- inverse key maps

_BN_D2 = {"weight": "weight", "bias": "bias", "running_mean": "running_mean",
          "running_var": "running_var"}
_BN_C2 = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}


def _torchvision_to_d2(name: str) -> str:
    """torchvision resnet name -> Detectron2 ResNet name (d2's convert-torchvision-to-d2)."""
    if name == "conv1.weight":
        return "stem.conv1.weight"
    if m := re.fullmatch(r"bn1\.(\w+)", name):
        return f"stem.conv1.norm.{_BN_D2[m[1]]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", name)
    stage, block, rest = int(m[1]) + 1, m[2], m[3]
    rest = re.sub(r"^conv(\d)\.weight$", r"conv\1.weight", rest)
    rest = re.sub(r"^bn(\d)\.(\w+)$", lambda r: f"conv{r[1]}.norm.{_BN_D2[r[2]]}", rest)
    rest = rest.replace("downsample.0.weight", "shortcut.weight")
    rest = re.sub(r"^downsample\.1\.(\w+)$", lambda r: f"shortcut.norm.{_BN_D2[r[1]]}", rest)
    return f"res{stage}.{block}.{rest}"


def _torchvision_to_c2(name: str, fc: str = "fc1000") -> str:
    """torchvision resnet name -> Caffe2 / Detectron1 blob name."""
    if name == "conv1.weight":
        return "conv1_w"
    if m := re.fullmatch(r"bn1\.(\w+)", name):
        return f"res_conv1_bn_{_BN_C2[m[1]]}"
    if m := re.fullmatch(r"fc\.(weight|bias)", name):
        return f"{fc}_{m[1][0]}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", name)
    prefix = f"res{int(m[1]) + 1}_{m[2]}"
    rest = m[3]
    if r := re.fullmatch(r"conv(\d)\.weight", rest):
        return f"{prefix}_branch2{'abc'[int(r[1]) - 1]}_w"
    if r := re.fullmatch(r"bn(\d)\.(\w+)", rest):
        return f"{prefix}_branch2{'abc'[int(r[1]) - 1]}_bn_{_BN_C2[r[2]]}"
    if rest == "downsample.0.weight":
        return f"{prefix}_branch1_w"
    r = re.fullmatch(r"downsample\.1\.(\w+)", rest)
    return f"{prefix}_branch1_bn_{_BN_C2[r[1]]}"


def test_inverse_maps_spot_checks():
    assert _torchvision_to_d2("layer2.0.bn1.running_var") == "res3.0.conv1.norm.running_var"
    assert _torchvision_to_d2("layer1.0.downsample.1.bias") == "res2.0.shortcut.norm.bias"
    assert _torchvision_to_d2("layer4.2.conv3.weight") == "res5.2.conv3.weight"
    assert _torchvision_to_c2("layer3.5.bn2.running_var") == "res4_5_branch2b_bn_riv"
    assert _torchvision_to_c2("layer1.0.downsample.0.weight") == "res2_0_branch1_w"
    assert _torchvision_to_c2("bn1.weight") == "res_conv1_bn_s"
    assert _torchvision_to_c2("fc.bias", fc="pred") == "pred_b"


def _assert_tensors_equal(converted: dict, expected: dict) -> None:
    assert set(converted) == set(expected)
    for key, value in expected.items():
        assert torch.equal(converted[key].to(value.dtype), value), key


# --------------------------------------------------------------------------- VISSL


def test_vissl_classy_state_dict_trunk_round_trip(tmp_path, images, reference):
    state = reference.state_dict()
    trunk = {f"_feature_blocks.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    heads = {"0.clf.0.weight": torch.randn(128, 2048), "0.clf.0.bias": torch.randn(128)}
    checkpoint = {
        "classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads}}},
        "phase_idx": 7, "iteration": 1000, "type": "checkpoint",
    }
    path = tmp_path / "model_final_checkpoint_phase199.torch"
    torch.save(checkpoint, path)

    converted = vissl_to_torchvision(torch.load(path, map_location="cpu", weights_only=True))

    assert not any(k.startswith("fc.") for k in converted)
    _assert_tensors_equal(converted, {k: v for k, v in state.items() if not k.startswith("fc.")})
    loaded = _fresh_resnet50(converted)
    _assert_same_outputs("VISSL classy_state_dict", reference, loaded, images)


def test_vissl_official_swav_pth_tar_with_module_prefix(tmp_path, images, reference):
    state = {f"module.{k}": v for k, v in reference.state_dict().items()
             if not k.startswith("fc.")}
    state["module.projection_head.0.weight"] = torch.randn(2048, 2048)
    state["module.projection_head.0.bias"] = torch.randn(2048)
    state["module.prototypes.weight"] = torch.randn(3000, 128)
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save({"state_dict": state, "epoch": 800}, path)

    converted = vissl_to_torchvision(torch.load(path, map_location="cpu", weights_only=True))

    assert "conv1.weight" in converted
    assert not any(k.startswith(("module.", "projection_head", "prototypes", "fc."))
                   for k in converted)
    loaded = _fresh_resnet50(converted)
    _assert_same_outputs("VISSL SwAV .pth.tar", reference, loaded, images)


def test_vissl_model_state_dict_of_numpy_arrays(images, reference):
    trunk = {f"_feature_blocks.{k}": v.numpy() for k, v in reference.state_dict().items()
             if not k.startswith("fc.")}

    converted = vissl_to_torchvision({"model_state_dict": trunk})

    assert all(isinstance(v, torch.Tensor) for v in converted.values())
    _assert_same_outputs("VISSL numpy", reference, _fresh_resnet50(converted), images)


# --------------------------------------------------------------------------- Detectron2

_D2_JUNK = {
    "backbone.fpn_lateral2.weight": np.ones((256, 256, 1, 1), np.float32),
    "backbone.fpn_output5.bias": np.ones(256, np.float32),
    "backbone.top_block.p6.weight": np.ones((256, 256, 3, 3), np.float32),
    "proposal_generator.rpn_head.conv.weight": np.ones((256, 256, 3, 3), np.float32),
    "roi_heads.box_head.fc1.weight": np.ones((1024, 12544), np.float32),
    "roi_heads.box_predictor.cls_score.weight": np.ones((81, 1024), np.float32),
    "pixel_mean": np.array([103.53, 116.28, 123.675], np.float32),
}


def _d2_model_zoo_pickle(path, model_dict):
    with open(path, "wb") as file:
        pickle.dump({"model": model_dict, "__author__": "Detectron2 Model Zoo",
                     "matching_heuristics": True}, file)


def test_detectron2_fpn_model_zoo_pkl_round_trip(tmp_path, images, reference_1x1):
    reference = reference_1x1
    model = {f"backbone.bottom_up.{_torchvision_to_d2(k)}": v.numpy()
             for k, v in _tv_state(reference).items() if not k.startswith("fc.")}
    assert "backbone.bottom_up.res3.0.conv1.norm.running_mean" in model
    model.update(_D2_JUNK)
    path = tmp_path / "model_final_f10217.pkl"
    _d2_model_zoo_pickle(path, model)

    converted = detectron2_to_torchvision(read_numpy_pickle(path))

    expected = {k: v for k, v in _tv_state(reference).items() if not k.startswith("fc.")}
    _assert_tensors_equal(converted, expected)
    loaded = _fresh_resnet50(converted, stride_in_1x1=True)
    _assert_same_outputs("Detectron2 FPN .pkl", reference, loaded, images)

    # The stride placement is part of the format: torchvision's own placement changes outputs.
    wrong = _fresh_resnet50(converted, stride_in_1x1=False)
    assert _max_diff(_pooled(reference, images), _pooled(wrong, images)) > 1e-2


def test_detectron2_config_entry_loads_the_pkl_with_its_stride(tmp_path, images, reference_1x1):
    """The whole source path: a config entry with a model-zoo .pkl builds the same network."""
    from nsdbench.models import build_model

    model = {f"backbone.bottom_up.{_torchvision_to_d2(k)}": v.numpy()
             for k, v in _tv_state(reference_1x1).items() if not k.startswith("fc.")}
    path = tmp_path / "model_final_280758.pkl"
    _d2_model_zoo_pickle(path, model)
    entry = {"name": "faster_rcnn", "source": "detectron2", "arch": "resnet50", "trained": True,
             "weights": {"path": str(path), "format": "detectron2"}}
    loaded = build_model(entry).module
    _assert_same_outputs("Detectron2 entry", reference_1x1, loaded, images)


def test_detectron2_c4_model_keeps_res5_under_roi_heads(tmp_path, images, reference_1x1):
    reference = reference_1x1
    model = {}
    for key, value in _tv_state(reference).items():
        if key.startswith("fc."):
            continue
        d2_name = _torchvision_to_d2(key)
        prefix = "roi_heads." if d2_name.startswith("res5.") else "backbone."
        model[prefix + d2_name] = value.numpy()
    assert "roi_heads.res5.2.conv3.norm.weight" in model
    assert "backbone.stem.conv1.weight" in model
    model["roi_heads.box_predictor.bbox_pred.weight"] = np.ones((320, 2048), np.float32)
    model["proposal_generator.rpn_head.objectness_logits.weight"] = np.ones((15, 1024, 1, 1))
    path = tmp_path / "model_final_721ade.pkl"
    _d2_model_zoo_pickle(path, model)

    converted = detectron2_to_torchvision(read_numpy_pickle(path))

    assert "layer4.2.bn3.weight" in converted
    loaded = _fresh_resnet50(converted, stride_in_1x1=True)
    _assert_same_outputs("Detectron2 C4 .pkl", reference, loaded, images)


# --------------------------------------------------------------------------- Caffe2


def _c2_blobs(model, with_running_stats: bool, fc: str) -> dict:
    blobs = {}
    for i, (key, value) in enumerate(_tv_state(model).items()):
        if not with_running_stats and key.endswith(("running_mean", "running_var")):
            continue
        blob = _torchvision_to_c2(key, fc=fc)
        blobs[blob] = value.numpy()
        if i % 8 == 0 or blob == "res_conv1_bn_s":  # optimiser state (junk), on some blobs
            blobs[f"{blob}_momentum"] = np.full_like(value.numpy(), 99.0)
    blobs["lr"] = np.array([0.1], np.float32)
    blobs["model_iter"] = np.array([450000], np.int64)
    return blobs


def test_caffe2_affine_channel_blobs_round_trip(tmp_path, images):
    reference = _reference_resnet50(seed=5, stride_in_1x1=True)
    for module in reference.modules():  # what an MSRA AffineChannel network computes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.zero_()
            module.running_var.fill_(AFFINE_VAR)
    blobs = _c2_blobs(reference, with_running_stats=False, fc="fc1000")
    assert "res3_0_branch2a_bn_s" in blobs and "res3_0_branch2a_bn_rm" not in blobs
    assert "res_conv1_bn_s_momentum" in blobs and "conv1_w_momentum" in blobs
    blobs["rpn_cls_logits_w"] = np.ones((15, 1024, 1, 1), np.float32)  # a detection head
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as file:
        pickle.dump({"blobs": blobs}, file, protocol=2)  # the Python 2 era layout

    converted = caffe2_to_torchvision(read_numpy_pickle(path))

    assert torch.equal(converted["layer2.0.bn1.running_mean"], torch.zeros(128))
    assert torch.equal(converted["layer2.0.bn1.running_var"], torch.full((128,), AFFINE_VAR))
    _assert_tensors_equal(converted, _tv_state(reference))
    loaded = _fresh_resnet50(converted, stride_in_1x1=True)
    _assert_same_outputs("Caffe2 AffineChannel .pkl", reference, loaded, images, _logits)
    wrong = _fresh_resnet50(converted, stride_in_1x1=False)
    assert _max_diff(_logits(reference, images), _logits(wrong, images)) > 1e-2


def test_caffe2_blobs_with_running_statistics(tmp_path, images, reference_1x1):
    reference = reference_1x1
    blobs = _c2_blobs(reference, with_running_stats=True, fc="pred")
    assert "res4_0_branch1_bn_riv" in blobs and "pred_w" in blobs
    path = tmp_path / "jigsaw_goyal19.pkl"
    with open(path, "wb") as file:
        pickle.dump(blobs, file, protocol=pickle.HIGHEST_PROTOCOL)

    converted = caffe2_to_torchvision(read_numpy_pickle(path))

    _assert_tensors_equal(converted, _tv_state(reference))
    loaded = _fresh_resnet50(converted, stride_in_1x1=True)
    _assert_same_outputs("Caffe2 rm/riv .pkl", reference, loaded, images, _logits)


# --------------------------------------------------------------------------- Taskonomy


def test_taskonomy_encoder_round_trip(tmp_path):
    torch.manual_seed(8)
    reference = TaskonomyEncoder()
    _randomise_norms(reference, torch.Generator().manual_seed(9))
    reference.eval()
    torch.manual_seed(99)
    loaded = TaskonomyEncoder().eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(10)) * 2 - 1
    assert _max_diff(_logits(reference, x), _logits(loaded, x)) > 1e-2  # before loading

    for layout, prefix in (("plain", ""), ("DataParallel", "module.")):
        state = {prefix + k: v for k, v in reference.state_dict().items()}
        path = tmp_path / f"normal_encoder_{layout}.pth"
        torch.save({"state_dict": state}, path)

        converted = taskonomy_state_dict(torch.load(path, map_location="cpu", weights_only=True))

        assert set(converted) == set(reference.state_dict())
        loaded.load_state_dict(converted)  # strict, as visualpriors' own loader is
        _assert_same_outputs(f"Taskonomy ({layout})", reference, loaded, x, _logits)


# --------------------------------------------------------------------------- semantics


def test_set_stride_in_1x1_moves_the_stride_of_each_stage_first_block():
    model = torchvision.models.resnet50(weights=None)
    set_stride_in_1x1(model)
    for stage in (model.layer2, model.layer3, model.layer4):
        assert stage[0].conv1.stride == (2, 2)
        assert stage[0].conv2.stride == (1, 1)
        assert stage[0].downsample[0].stride == (2, 2)
        assert all(block.conv1.stride == (1, 1) and block.conv2.stride == (1, 1)
                   for block in stage[1:])
    assert model.layer1[0].conv1.stride == (1, 1) and model.layer1[0].conv2.stride == (1, 1)
    set_stride_in_1x1(model)  # idempotent
    assert model.layer2[0].conv1.stride == (2, 2)
    with pytest.raises(ConversionError, match="Bottleneck"):
        set_stride_in_1x1(torchvision.models.resnet18(weights=None))


# --------------------------------------------------------------------------- numpy pickles


class _Marker:
    """Pickles as a call that would create ``path``, if an unpickler ever made it."""

    def __init__(self, call, path):
        self.call, self.path = call, path

    def __reduce__(self):
        if self.call == "system":
            return os.system, (f"touch {self.path}",)
        return eval, (f"open({str(self.path)!r}, 'w').close()",)


@pytest.mark.parametrize("call", ["system", "eval"])
def test_read_numpy_pickle_refuses_other_globals_without_running_them(tmp_path, call):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as file:
        pickle.dump({"conv1_w": np.zeros(3), "payload": _Marker(call, marker)}, file)

    with pytest.raises(ConversionError) as error:
        read_numpy_pickle(path)

    assert str(path) in str(error.value)
    assert f".{call}'" in str(error.value)  # the refused global, e.g. 'posix.system'
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_numpy_pickle_reads_arrays_scalars_and_containers(tmp_path, protocol):
    from collections import OrderedDict

    data = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "iter": np.int64(7),
        "dtype": np.dtype("f2"),
        "nested": OrderedDict(a=np.ones(2, np.int32), b=[1, 2.5, "x", (3, None)]),
        "set": {1, 2},
        "bytes": b"\x00\xff",
    }
    path = tmp_path / f"p{protocol}.pkl"
    with open(path, "wb") as file:
        pickle.dump(data, file, protocol=protocol)

    back = read_numpy_pickle(path)

    np.testing.assert_array_equal(back["w"], data["w"])
    assert back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["fortran"], data["fortran"])
    assert back["iter"] == 7 and back["dtype"] == np.dtype("f2")
    assert isinstance(back["nested"], OrderedDict)
    np.testing.assert_array_equal(back["nested"]["a"], [1, 1])
    assert back["nested"]["b"] == [1, 2.5, "x", (3, None)]
    assert back["set"] == {1, 2} and back["bytes"] == b"\x00\xff"


def test_read_numpy_pickle_rejects_non_dicts_and_garbage(tmp_path):
    listed = tmp_path / "list.pkl"
    listed.write_bytes(pickle.dumps([np.zeros(2)]))
    with pytest.raises(ConversionError, match="list, not a dict"):
        read_numpy_pickle(listed)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(ConversionError, match="garbage.pkl"):
        read_numpy_pickle(garbage)


# --------------------------------------------------------------------------- malformed files

_T = torch.zeros(1)
_A = np.zeros(1, np.float32)


@pytest.mark.parametrize(
    ("convert", "checkpoint", "expected"),
    [
        (vissl_to_torchvision, {"classy_state_dict": {"base_model": {}}},
         ["VISSL", "classy_state_dict", "trunk"]),
        (vissl_to_torchvision, {"state_dict": {"module.encoder_q.conv1.weight": _T}},
         ["VISSL", "encoder_q.conv1.weight", "not torchvision ResNet names"]),
        (vissl_to_torchvision, {"model_state_dict": {"conv1.weight": _T, "bn1.weight": _T}},
         ["VISSL", "batch-norm keys missing", "bn1.bias", "bn1.running_var"]),
        (vissl_to_torchvision, {"state_dict": {"conv1.weight": [1.0, 2.0]}},
         ["VISSL", "conv1.weight", "list"]),
        (detectron2_to_torchvision,
         {"model": {"backbone.bottom_up.stem.conv1.weight": _A,
                    "backbone.bottom_up.res2.0.conv9.weight": _A}},
         ["Detectron2", "backbone.bottom_up.res2.0.conv9.weight"]),
        (detectron2_to_torchvision, {"blobs": {"conv1_w": _A, "res_conv1_bn_s": _A}},
         ["Detectron2", "no backbone keys", "caffe2_to_torchvision"]),
        (detectron2_to_torchvision,
         {"model": {"backbone.res5.0.conv1.weight": _A, "roi_heads.res5.0.conv1.weight": _A}},
         ["Detectron2", "layer4.0.conv1.weight"]),
        (caffe2_to_torchvision, {"conv1_w": _A, "res_conv1_bn_s": _A},
         ["Caffe2", "bn1.bias"]),
        (caffe2_to_torchvision, {"conv1_w": _A, "res2_0_branch2d_w": _A},
         ["Caffe2", "res2_0_branch2d_w"]),
        (caffe2_to_torchvision,
         {"conv1_w": _A, "res_conv1_bn_s": _A, "res_conv1_bn_b": _A, "res_conv1_bn_rm": _A},
         ["Caffe2", "bn1", "running statistics"]),
        (caffe2_to_torchvision, {"lr": _A, "rpn_cls_logits_w": _A},
         ["Caffe2", "no ResNet blobs", "rpn_cls_logits_w"]),
        (taskonomy_state_dict, {"state_dict": {"conv1.weight": "not a tensor"}},
         ["Taskonomy", "conv1.weight", "str"]),
        (taskonomy_state_dict, {"state_dict": {}}, ["Taskonomy", "empty"]),
        (taskonomy_state_dict, {"state_dict": [_T]}, ["Taskonomy", "state_dict", "list"]),
    ],
)
def test_malformed_checkpoints_raise_a_clear_conversion_error(convert, checkpoint, expected):
    with pytest.raises(ConversionError) as error:
        convert(checkpoint)
    assert isinstance(error.value, ValueError)
    for text in expected:
        assert text in str(error.value), (text, str(error.value))
