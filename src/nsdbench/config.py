"""Load and validate the workflow configuration against config/schema.yaml.

Errors name the key (as a path such as ``models[2].source``) and say what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from nsdbench.joblog import UserError


class ConfigError(UserError):
    """The configuration does not match the schema or is inconsistent."""


def _key_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _fill_defaults(config: dict, schema: dict) -> None:
    """Insert schema defaults for missing keys of objects that are present."""
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        elif key not in config and sub.get("type") == "object" and not sub.get("required"):
            config[key] = {}  # an optional section: its own defaults are filled below
        if isinstance(config.get(key), dict):
            _fill_defaults(config[key], sub)
        if isinstance(config.get(key), list) and isinstance(sub.get("items"), dict):
            for item in config[key]:
                if isinstance(item, dict):
                    _fill_defaults(item, sub["items"])


def validate_config(config: dict, schema_path: Path) -> dict:
    """A validated copy of ``config`` with defaults filled in; ``ConfigError`` otherwise."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda error: list(error.absolute_path))
    if errors:
        lines = []
        for error in errors:
            where = _key_path(error.absolute_path)
            if error.validator == "additionalProperties":
                allowed = ", ".join(sorted(error.schema.get("properties", {})))
                lines.append(f"config key '{where}': {error.message}; valid keys: {allowed}")
            else:
                lines.append(f"config key '{where}': {error.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    config = copy.deepcopy(config)
    _fill_defaults(config, schema)
    _check_consistency(config)
    return config


def _check_consistency(config: dict) -> None:
    names = [model["name"] for model in config["models"]]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"config key 'models': duplicate model names {duplicates}")
    roi_names = [roi["name"] for roi in config["rois"]]
    if len(set(roi_names)) != len(roi_names):
        raise ConfigError("config key 'rois': ROI names must be unique")
    for model in config["models"]:
        if model["trained"] and not model.get("weights"):
            raise ConfigError(
                f"config key 'models[{names.index(model['name'])}].weights': trained model "
                f"'{model['name']}' needs weights (url, path or package)"
            )
    demo = config.get("demo")
    if config["nsd"].get("demo"):
        if not demo:
            raise ConfigError("config key 'demo': nsd.demo is true but there is no demo section")
        if demo["ground_truth"] not in names:
            raise ConfigError(
                f"config key 'demo.ground_truth': '{demo['ground_truth']}' is not a model name"
            )
        _check_demo_sizes(config)
        unknown = sorted(set(demo["planted_depths"]) - set(roi_names))
        if unknown or set(roi_names) - set(demo["planted_depths"]):
            raise ConfigError(
                "config key 'demo.planted_depths': needs exactly one depth per ROI "
                f"({', '.join(roi_names)}); unknown: {unknown}"
            )


def _check_demo_sizes(config: dict) -> None:
    """The demo tree's sizes must fit together (else its generator fails after minutes)."""
    demo, images = config["demo"], config["images"]
    own = demo.get("own_images_per_subject", 120)
    # Every demo image is shown 3 times (nsdbench.demo.nsd_tree).
    trials = 3 * (demo.get("n_shared", 300) + own)
    per_session = demo.get("trials_per_session", 150)
    if trials % per_session:
        raise ConfigError(
            f"config key 'demo.trials_per_session': {per_session} must divide the demo's "
            f"{trials} trials per subject (3 x (n_shared + own_images_per_subject))"
        )
    if images["n_test"] + images["n_reliability"] > own:
        raise ConfigError(
            f"config keys 'images.n_test' + 'images.n_reliability': "
            f"{images['n_test']} + {images['n_reliability']} exceed the demo's "
            f"{own} own images per subject (demo.own_images_per_subject)"
        )


def load_config(path: Path, schema_path: Path) -> dict:
    return validate_config(yaml.safe_load(Path(path).read_text()) or {}, schema_path)


def model_entry(config: dict, name: str) -> dict:
    """The config entry of model ``name``, with the global ``extraction.image_size`` and the
    weights cache directory applied."""
    for entry in config["models"]:
        if entry["name"] == name:
            entry = dict(entry)
            if config.get("weights_cache"):
                entry["weights_cache"] = config["weights_cache"]
            forced = config.get("extraction", {}).get("image_size")
            if forced and "image_size" not in entry:
                entry["image_size"] = forced
            return entry
    raise ConfigError(f"config key 'models': no model named '{name}'")
