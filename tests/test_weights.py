"""Checkpoints are fetched once from their URL into the cache, verified, and read safely."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nsdbench.models import build_model
from nsdbench.weights import WeightsError, fetch, sha256_of, torch_load, verified_file

ROOT = Path(__file__).resolve().parents[1]


def served_checkpoint(tmp_path, name="served.pth", state=None):
    """A checkpoint behind a file:// URL, and its sha256."""
    path = tmp_path / "server" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state or {"weight": torch.arange(6.0).reshape(2, 3)}, path)
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def url_entry(url, sha256=None, name="m", fmt="state_dict"):
    weights = {"url": url, "format": fmt, **({"sha256": sha256} if sha256 else {})}
    return {"name": name, "source": "torchvision", "arch": "resnet18", "trained": True,
            "weights": weights}


def test_fetch_verifies_the_pinned_digest_and_caches(tmp_path):
    url, digest = served_checkpoint(tmp_path)
    cache = tmp_path / "cache"
    path = fetch(url_entry(url, digest), cache)
    assert path == cache / "m" / "served.pth"
    assert sha256_of(path) == digest
    assert (cache / "m" / "served.pth.sha256").read_text().strip() == digest
    # The digest prefix that torchvision and others publish in file names is a pin too.
    assert fetch(url_entry(url, digest[:8]), cache) == path


def test_wrong_digest_is_refused_and_nothing_is_left_in_the_cache(tmp_path):
    url, digest = served_checkpoint(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match=f"has sha256 {digest}, but the config pins 0000"):
        fetch(url_entry(url, "0" * 64), cache)
    assert list((cache / "m").iterdir()) == []


def test_unreachable_url_names_the_model_and_url(tmp_path):
    with pytest.raises(WeightsError, match="model 'm': cannot download file://"):
        fetch(url_entry((tmp_path / "absent.pth").as_uri()), tmp_path / "cache")
    assert not (tmp_path / "cache" / "m" / "absent.pth").exists()


def test_missing_file_says_which_rule_fetches_it(tmp_path):
    entry = url_entry("https://example.org/w/resnet18-f37072fd.pth", "f37072fd")
    entry["weights_cache"] = str(tmp_path)
    with pytest.raises(WeightsError, match="rule fetch_weights downloads it from https://example"):
        build_model(entry)


def test_a_file_changed_after_fetching_is_refused(tmp_path):
    url, _ = served_checkpoint(tmp_path)
    entry = url_entry(url)  # no pin in the config: the digest recorded at fetch time is the pin
    path = fetch(entry, tmp_path / "cache")
    torch.save({"weight": torch.zeros(2, 3)}, path)
    with pytest.raises(WeightsError, match="refusing to load it"):
        verified_file(entry, tmp_path / "cache")


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_a_pickle_that_is_not_plain_tensors_needs_the_full_digest_pinned(tmp_path, capsys):
    path = tmp_path / "old.torch"
    torch.save({"weight": Payload()}, path)
    entry = {"name": "old", "weights": {"path": str(path)}}
    with pytest.raises(WeightsError, match=f"weights.sha256: {sha256_of(path)}"):
        torch_load(entry, path)
    assert "pickled code ran" not in capsys.readouterr().out
    entry["weights"]["sha256"] = sha256_of(path)
    assert torch_load(entry, path) == {"weight": None}  # print's return value: it is trusted now


def snakemake(*args, cwd):
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def test_fetch_weights_rule_fetches_every_checkpoint_and_refuses_a_wrong_digest(tmp_path):
    good_url, good_digest = served_checkpoint(tmp_path, "good.pth")
    bad_url, _ = served_checkpoint(tmp_path, "bad.pth", {"weight": torch.ones(1)})
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    meta = {"architecture": "convolutional", "task": "classification",
            "task_category": "semantic", "input_diet": "imagenet", "trained": True}
    config["weights_cache"] = "cache"
    config["models"] += [
        {"name": "good", "source": "torchvision", "arch": "resnet18", **meta,
         "weights": {"url": good_url, "sha256": good_digest}},
        {"name": "bad", "source": "torchvision", "arch": "resnet18", **meta,
         "weights": {"url": bad_url, "sha256": "1" * 64}},
    ]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("fetch_weights", "--cores", "1", "--keep-going",
                       "--configfile", "config.yaml", cwd=tmp_path)
    assert result.returncode != 0
    log = (tmp_path / "logs/weights/bad/bad.pth.log")
    assert "config pins 1111" in result.stderr + result.stdout + (
        log.read_text() if log.exists() else "")
    assert sha256_of(tmp_path / "cache/good/good.pth") == good_digest
    assert not (tmp_path / "cache/bad/bad.pth").exists()
    # Fetched once: a second run has nothing to do for the good checkpoint.
    again = snakemake("cache/good/good.pth", "--cores", "1", "-n", "--configfile", "config.yaml",
                      cwd=tmp_path)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
