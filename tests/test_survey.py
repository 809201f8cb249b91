"""The configured model survey: complete, consistent with the source registries, offline."""

import random
import re
from pathlib import Path

import pytest

from nsdbench.config import load_config
from nsdbench.survey import HEADER, rewrite_models, slug, survey_table, timm_arch

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
TASKONOMY_CATEGORIES = {"2d", "3d", "semantic", "geometric"}


@pytest.fixture(scope="module")
def models():
    return load_config(ROOT / "config" / "config.yaml", SCHEMA)["models"]


def test_the_survey_has_the_papers_models(models):
    trained = [m for m in models if m["trained"]]
    assert len(trained) >= 85
    names = [m["name"] for m in models]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9_.-]+", name) for name in names)
    assert [m["name"] for m in models[:2]] == ["efficientnet_lite0", "efficientnet_lite0_random"]
    assert {m["source"] for m in trained} == {
        "timm", "torchvision", "open_clip", "taskonomy", "vissl", "detectron2"}


def test_imagenet_models_have_random_twins(models):
    by_name = {m["name"]: m for m in models}
    for model in models:
        if (model["trained"] and model["source"] in ("timm", "torchvision")
                and model["task"] == "classification"):
            twin = by_name.get(model["name"] + "_random")
            assert twin is not None, model["name"]
            assert not twin["trained"] and not twin.get("weights")
            assert (twin["source"], twin["arch"]) == (model["source"], model["arch"])
            assert twin.get("options") == model.get("options")


def test_trained_models_say_where_their_weights_are(models):
    for model in models:
        weights = model.get("weights", {})
        if not model["trained"]:
            assert not weights, model["name"]
        elif "package" not in weights and "path" not in weights:
            assert weights["url"].startswith("https://"), model["name"]
            assert "format" in weights, model["name"]


def test_taskonomy_has_24_tasks_and_a_random_encoder(models):
    taskonomy = [m for m in models if m["source"] == "taskonomy"]
    trained = [m for m in taskonomy if m["trained"]]
    assert len(trained) == 24 and len({m["arch"] for m in trained}) == 24
    assert [m["name"] for m in taskonomy if not m["trained"]] == ["taskonomy_random"]
    assert {m["task_category"] for m in taskonomy} <= TASKONOMY_CATEGORIES
    assert all(m["task"] == m["arch"] for m in trained)


def test_every_arch_exists_in_its_source(models):
    import open_clip
    import timm
    import torchvision
    from visualpriors.taskonomy_network import TASKONOMY_PRETRAINED_URLS

    torchvision_models = set(torchvision.models.list_models())
    clip_models = set(open_clip.list_models())
    for model in models:
        source, arch = model["source"], model["arch"]
        if source == "timm":
            assert timm.is_model(arch), arch
            if "." in arch:  # a pretrained tag
                assert arch in timm.list_pretrained(arch), arch
        elif source in ("torchvision", "vissl", "detectron2"):
            assert arch in torchvision_models, arch
        elif source == "open_clip":
            assert arch in clip_models, arch
        else:
            assert source == "taskonomy" and f"{arch}_encoder" in TASKONOMY_PRETRAINED_URLS


def test_pinned_hashes_match_the_urls(models):
    import open_clip
    from torchvision.models import get_model_weights
    from visualpriors.taskonomy_network import TASKONOMY_PRETRAINED_URLS

    for model in models:
        weights = model.get("weights", {})
        url, digest = weights.get("url"), weights.get("sha256")
        if url and digest:
            name = url.rsplit("/", 1)[-1]
            assert f"-{digest}." in name or f"/{digest}/" in url, model["name"]
        if not model["trained"]:
            continue
        if model["source"] == "torchvision" and weights.get("format") == "state_dict":
            assert url == get_model_weights(model["arch"])["IMAGENET1K_V1"].url
            assert digest
        elif model["source"] == "open_clip":
            cfg = open_clip.pretrained.get_pretrained_cfg(model["arch"], "openai")
            assert url == cfg["url"] and len(digest) == 64
            assert model["options"].get("quick_gelu", False) == cfg.get("quick_gelu", False)
        elif model["source"] == "taskonomy":
            assert url == TASKONOMY_PRETRAINED_URLS[f"{model['arch']}_encoder"]
            assert len(digest) == 64


def test_detectron2_backbones_carry_their_conventions(models):
    for model in models:
        if model["source"] != "detectron2":
            continue
        assert model["weights"]["format"] == "detectron2"
        assert re.fullmatch(r"https://dl\.fbaipublicfiles\.com/detectron2/[\w.-]+/\w+/"
                            r"\d+/model_final_[0-9a-f]{6}\.pkl", model["weights"]["url"])
        options = dict(model["options"])
        # DC5 configs (RES5_DILATION: 2) dilate res5 instead of striding it
        assert options.pop("res5_dilation", None) == (2 if "_dc5_" in model["name"] else None)
        if model["arch"] == "resnext101_32x8d":
            assert options == {"stride_in_1x1": False, "pixel_std": [57.375, 57.120, 58.395]}
        else:
            assert options == {"stride_in_1x1": True}


def test_timm_names_map_to_current_names_with_2021_tags():
    assert timm_arch("jx_nest_tiny") == "nest_tiny_jx.goog_in1k"
    assert timm_arch("xception") == "legacy_xception.tf_in1k"
    assert timm_arch("vit_base_patch16_224") == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert timm_arch("cait_s24_224") == "cait_s24_224.fb_dist_in1k"  # its only tag


def test_slug_and_table_are_deterministic(models):
    assert slug("ViT-B/32") == "vit_b_32"
    assert slug("ResNet50-SwAV-BS4096-2x224+6x96") == "resnet50_swav_bs4096_2x224_6x96"
    shuffled = list(models)
    random.Random(0).shuffle(shuffled)
    table = survey_table(models)
    assert survey_table(shuffled) == table
    trained = sum(m["trained"] for m in models)
    assert f"| **all** | **{trained}** | **{len(models) - trained}** | **{len(models)}** |" in table


def test_rewrite_replaces_only_the_models_section(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("# top\nseed: 0\nmodels:\n  - {name: a}\nlater: 1\n")
    new = HEADER + "models:\n  - {name: b}\n"
    text = rewrite_models(config, new)
    assert text == "# top\nseed: 0\n" + new + "later: 1\n"
    config.write_text(text)
    assert rewrite_models(config, new) == text  # rerunning replaces its own header


def test_readme_table_is_current(models):
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- survey-table -->\n(.*?)<!-- /survey-table -->", readme, re.S)
    if not match or not match.group(1).strip():
        pytest.skip("README.md has no survey table between <!-- survey-table --> markers yet")
    assert match.group(1).strip() == survey_table(models).strip()
