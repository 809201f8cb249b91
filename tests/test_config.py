"""Configuration errors name the key and say what was expected."""

import copy
from pathlib import Path

import pytest
import yaml

from nsdbench.config import ConfigError, load_config, model_entry, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture
def demo():
    return yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


def test_shipped_configs_are_valid():
    study = load_config(ROOT / "config" / "config.yaml", SCHEMA)
    assert study["ridge"]["alphas"] == [100000.0]  # the paper's fixed penalty
    demo = load_config(ROOT / "config" / "demo.yaml", SCHEMA)
    assert demo["ridge"]["alphas"] == [100000.0]
    load_config(ROOT / "tests" / "configs" / "tiny.yaml", SCHEMA)


def test_defaults_are_filled(demo):
    del demo["ridge"]["reduction"]
    assert validate_config(demo, SCHEMA)["ridge"]["reduction"] == "srp"


def error_for(config):
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    return str(caught.value)


def test_unknown_key_is_named(demo):
    demo["ridge"]["lambda"] = 3
    message = error_for(demo)
    assert "ridge" in message and "'lambda' was unexpected" in message
    assert "valid keys: alphas, reduction, srp_dim" in message


def test_wrong_type_is_named(demo):
    demo["extraction"]["batch_size"] = "sixteen"
    message = error_for(demo)
    assert "config key 'extraction.batch_size'" in message and "integer" in message


def test_missing_model_field_is_named(demo):
    del demo["models"][2]["architecture"]
    message = error_for(demo)
    assert "config key 'models[2]'" in message and "'architecture' is a required" in message


def test_unknown_source_lists_valid_ones(demo):
    demo["models"][0]["source"] = "tensorflow"
    message = error_for(demo)
    assert "models[0].source" in message and "timm" in message and "torchvision" in message


def test_duplicate_model_names_are_refused(demo):
    demo["models"].append(copy.deepcopy(demo["models"][0]))
    assert "duplicate model names ['efficientnet_lite0']" in error_for(demo)


def test_planted_depths_must_cover_the_rois(demo):
    del demo["demo"]["planted_depths"]["PPA"]
    assert "demo.planted_depths" in error_for(demo)


def test_global_image_size_applies_to_models(demo):
    config = validate_config(demo, SCHEMA)
    assert model_entry(config, "alexnet_random")["image_size"] == 128
    with pytest.raises(ConfigError, match="no model named 'vgg'"):
        model_entry(config, "vgg")
