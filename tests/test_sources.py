"""Every model source builds offline, traces into layers, and loads its own checkpoint format.

The checkpoints are built here from random weights (nothing is downloaded): each is written in
the source's own on-disk format, loaded back through the config entry, and must reproduce the
network that wrote it.
"""

import re

import numpy as np
import pytest
import safetensors.torch
import torch

from nsdbench.layers import layer_inventory
from nsdbench.models import build_model
from nsdbench.sources import ModelError

META = {"architecture": "convolutional", "task": "t", "task_category": "c", "input_diet": "i"}


def entry(name, source, arch, trained=False, **extra):
    return {"name": name, "source": source, "arch": arch, "trained": trained, **META, **extra}


def photos(n=2, px=72, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


RANDOM_INIT = {
    "timm": entry("deit_random", "timm", "deit_tiny_patch16_224", image_size=64),
    "torchvision": entry("resnet18_random", "torchvision", "resnet18", image_size=64),
    "open_clip": entry("clip_vit_random", "open_clip", "ViT-B-32", image_size=64),
    "taskonomy": entry("taskonomy_random", "taskonomy", "normal", image_size=64),
    "vissl": entry("simclr_random", "vissl", "resnet50", image_size=64),
    "detectron2": entry("faster_rcnn_random", "detectron2", "resnet50", image_size=64),
}


@pytest.mark.parametrize("source", sorted(RANDOM_INIT))
def test_random_init_builds_offline_and_traces_functional_ops(source):
    model = build_model(RANDOM_INIT[source])
    inventory = layer_inventory(model, photos())
    names = inventory["layer"].tolist()
    assert inventory["method"].eq("fx").all()
    assert len(names) == len(set(names)) > 20
    assert any(name.split(".")[-1].startswith("add") for name in names)  # residual adds
    assert inventory["layer_index"].tolist() == list(range(len(names)))
    np.testing.assert_allclose(inventory["layer_depth"], np.arange(1, len(names) + 1) / len(names))
    shapes = inventory["shape"].str.split("x").map(lambda dims: int(np.prod(list(map(int, dims)))))
    assert (shapes == inventory["n_features"]).all()


def test_timm_vit_inventory_has_query_key_and_value():
    model = build_model(RANDOM_INIT["timm"])
    inventory = layer_inventory(model, photos()).set_index("layer")
    block = [name for name in inventory.index if name.startswith("blocks.0.attn.")]
    # qkv, then q, k and v split out of it (each one third of qkv), then the attention output
    assert block[0] == "blocks.0.attn.qkv"
    qkv_features = inventory.loc["blocks.0.attn.qkv", "n_features"]
    assert [inventory.loc[name, "n_features"] for name in block[1:4]] == [qkv_features // 3] * 3
    assert block[4] == "blocks.0.attn.scaled_dot_product_attention"


def test_random_init_is_the_same_network_every_time():
    first = build_model(RANDOM_INIT["taskonomy"]).module.state_dict()
    second = build_model(RANDOM_INIT["taskonomy"]).module.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_detectron2_backbone_has_the_stride_on_the_1x1_and_bgr_input():
    model = build_model(RANDOM_INIT["detectron2"])
    block = model.module.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    rgb = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    x = model.preprocess(rgb)
    # BGR, 0-255 minus the pixel means, std 1: red is the last channel
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), [-103.53, -116.28, 255 - 123.675],
                               atol=1e-3)


def test_a_format_the_source_cannot_read_lists_the_ones_it_can():
    entry_ = {**RANDOM_INIT["vissl"], "trained": True,
              "weights": {"path": "/nonexistent.torch", "format": "detectron2"}}
    with pytest.raises(ModelError, match="a vissl model reads weights.format vissl, not "):
        build_model(entry_)


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(ModelError, match="valid architectures: convolutional, transformer"):
        build_model({**RANDOM_INIT["torchvision"], "architecture": "recurrent"})


# --- trained weights, from a checkpoint in each source's own format ---------------------------

def reference_and_loaded(tmp_path, base, write, fmt, suffix=".pth"):
    """A differently seeded twin of ``base`` is the reference; its weights are written with
    ``write(module, path)`` and loaded back through a trained config entry."""
    reference = build_model({**base, "name": base["name"] + "_reference"})
    path = tmp_path / f"{base['name']}{suffix}"
    write(reference.module, path)
    loaded = build_model({**base, "trained": True, "weights": {"path": str(path), "format": fmt}})
    return reference, loaded


def assert_same_outputs(base, reference, loaded, atol=1e-5):
    """The loaded model computes what the reference computes, and not what its random twin
    (``base``, untrained) computes, so the weights really were loaded."""
    x = loaded.preprocess(photos())
    outputs = []
    for model in (reference, loaded, build_model(base)):
        with torch.no_grad():
            output = model.module(x)
        outputs.append(output[0] if isinstance(output, tuple) else output)
    expected, actual, untrained = outputs
    assert (expected - actual).abs().max() <= atol
    assert (untrained - actual).abs().max() > 1e-3


def trunk_features(model, x):
    """A torchvision ResNet's pooled features (the trunk without its classifier)."""
    with torch.no_grad():
        return torch.nn.Sequential(*list(model.module.children())[:-1])(x)


def test_torchvision_state_dict_and_trunk(tmp_path):
    resnet = entry("resnet18", "torchvision", "resnet18", image_size=64)
    reference, loaded = reference_and_loaded(
        tmp_path, resnet, lambda module, path: torch.save(module.state_dict(), path), "state_dict")
    assert_same_outputs(resnet, reference, loaded)

    def trunk_only(module, path):
        torch.save({k: v for k, v in module.state_dict().items() if not k.startswith("fc.")}, path)

    dino = entry("dino_resnet18", "torchvision", "resnet18", image_size=64)
    reference, loaded = reference_and_loaded(tmp_path, dino, trunk_only, "trunk")
    x = loaded.preprocess(photos())
    torch.testing.assert_close(trunk_features(reference, x), trunk_features(loaded, x),
                               atol=1e-5, rtol=0)
    with pytest.raises(ModelError, match="missing"):  # a strict state_dict must have the fc
        build_model({**dino, "trained": True,
                     "weights": {"path": str(tmp_path / "dino_resnet18.pth")}})


def test_timm_safetensors_through_timms_loader(tmp_path):
    deit = entry("deit_tiny", "timm", "deit_tiny_patch16_224", image_size=64)
    reference, loaded = reference_and_loaded(
        tmp_path, deit, lambda module, path: safetensors.torch.save_file(module.state_dict(), path),
        "timm", suffix=".safetensors")
    assert_same_outputs(deit, reference, loaded)


def test_open_clip_full_checkpoint_loads_the_image_tower(tmp_path):
    clip = entry("clip_vit", "open_clip", "ViT-B-32", image_size=64)

    def full_clip(visual, path):
        # A real CLIP checkpoint holds both towers; only visual.* belongs to the vision model.
        state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
        state["positional_embedding"] = torch.zeros(77, 512)
        state["logit_scale"] = torch.tensor(4.6)
        torch.save({"state_dict": state}, path)

    reference, loaded = reference_and_loaded(tmp_path, clip, full_clip, "open_clip")
    assert_same_outputs(clip, reference, loaded)


def test_taskonomy_checkpoint(tmp_path):
    taskonomy = entry("taskonomy_normal", "taskonomy", "normal", image_size=64)
    reference, loaded = reference_and_loaded(
        tmp_path, taskonomy,
        lambda module, path: torch.save({"state_dict": module.state_dict()}, path), "taskonomy")
    assert_same_outputs(taskonomy, reference, loaded)
    assert loaded.preprocess(np.full((1, 8, 8, 3), 255, np.uint8)).max() == 1.0  # [-1, 1] input


def test_vissl_classy_state_dict_trunk(tmp_path):
    simclr = entry("simclr", "vissl", "resnet50", image_size=64)

    def vissl_checkpoint(module, path):
        trunk = {f"_feature_blocks.{k}": v for k, v in module.state_dict().items()
                 if not k.startswith("fc.")}
        heads = {"0.clf.0.weight": torch.zeros(128, 2048)}
        torch.save({"classy_state_dict": {"base_model": {"model": {
            "trunk": trunk, "heads": heads}}}, "phase_idx": 999}, path)

    reference, loaded = reference_and_loaded(tmp_path, simclr, vissl_checkpoint, "vissl")
    x = loaded.preprocess(photos())
    torch.testing.assert_close(trunk_features(reference, x), trunk_features(loaded, x),
                               atol=1e-5, rtol=0)


def test_torchvision_legacy_densenet_keys_and_trained_input_transform(tmp_path):
    densenet = entry("densenet121", "torchvision", "densenet121", image_size=64)

    def legacy_keys(module, path):
        # torchvision's published DenseNet files say 'norm.1' where the module is 'norm1'
        state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key): value
                 for key, value in module.state_dict().items()}
        assert any(".norm.1." in key for key in state)
        torch.save(state, path)

    reference, loaded = reference_and_loaded(tmp_path, densenet, legacy_keys, "state_dict")
    assert_same_outputs(densenet, reference, loaded)
    googlenet = entry("googlenet", "torchvision", "googlenet")
    assert build_model({**googlenet, "trained": False}).module.transform_input is False
    # with ImageNet weights torchvision renormalises the input inside the network
    torch.save(build_model(googlenet).module.state_dict(), tmp_path / "googlenet.pth")
    trained = build_model({**googlenet, "trained": True,
                           "weights": {"path": str(tmp_path / "googlenet.pth")}})
    assert trained.module.transform_input is True


def test_detectron2_dc5_backbone_keeps_res5_at_stride_1_with_dilated_3x3s():
    model = build_model({**RANDOM_INIT["detectron2"], "name": "faster_rcnn_dc5",
                         "options": {"stride_in_1x1": True, "res5_dilation": 2}})
    resnet = model.module
    assert all(block.conv2.dilation == (2, 2) for block in resnet.layer4)
    x = model.preprocess(photos())
    with torch.no_grad():
        stem = torch.nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                   resnet.layer1, resnet.layer2, resnet.layer3)(x)
        res5 = resnet.layer4(stem)
    assert res5.shape[-2:] == stem.shape[-2:]  # no downsampling in res5
