"""Bad input, a battery: each case gets one clear error that names the file or config key and
says what was expected, or, for data that is legal but useless (constant or non-finite
features, zero-variance voxels), NaN scores and a logged warning instead of a crash.

Cases already covered elsewhere are not repeated here: the NSD tree's missing files, wrong
shapes and dtypes, trial counts and label tables (test_nsd_errors.py), the weights cache
(test_weights.py), the bring-your-own and Algonauts readers (test_byo.py,
test_algonauts.py). Job scripts report these errors as one log line, without a traceback
(nsdbench.joblog); the last tests check that end to end.
"""

import copy
import gzip
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT
from conftest import run_snakemake as snakemake
from test_nsd_errors import ROIS, build, pristine, rewrite_hdf5, tree  # noqa: F401 - fixtures

from nsdbench.brain import write_response_store
from nsdbench.config import ConfigError, validate_config
from nsdbench.extract import extract_features
from nsdbench.features import FeatureStoreError, create_layer_store, open_layer
from nsdbench.fit import BrainTargets, score_layer
from nsdbench.joblog import UserError
from nsdbench.layers import layer_inventory
from nsdbench.models import LoadedModel
from nsdbench.nsd import NsdError
from nsdbench.preprocess import Preprocessing
from nsdbench.tables import write_table
from nsdbench.weights import WeightsError, torch_load, verified_file

SCHEMA = ROOT / "config" / "schema.yaml"
MICRO = ROOT / "tests" / "configs" / "micro.yaml"


# ------------------------------------------------------------------------------ config
@pytest.fixture(scope="module")
def micro():
    return yaml.safe_load(MICRO.read_text())


def first_model(config):
    return config["models"][0]


CONFIG_CASES = {
    # id: (damage the config in place, what the one error must say)
    "unknown-top-level-key": (
        lambda c: c.update(ridges={}), ["config key '<top level>'", "'ridges' was unexpected",
                                        "valid keys:"]),
    "unknown-nested-key": (
        lambda c: c["extraction"].update(batchsize=4),
        ["config key 'extraction'", "'batchsize' was unexpected", "batch_size"]),
    "wrong-type-subjects": (
        lambda c: c.update(subjects="1"), ["config key 'subjects'", "is not of type 'array'"]),
    "wrong-type-alphas": (
        lambda c: c["ridge"].update(alphas=1e5), ["config key 'ridge.alphas'", "'array'"]),
    "wrong-type-trained": (
        lambda c: first_model(c).update(trained="yes"),
        ["config key 'models[0].trained'", "'boolean'"]),
    "unknown-model-source": (
        lambda c: first_model(c).update(source="keras"),
        ["config key 'models[0].source'", "'keras' is not one of", "torchvision"]),
    "unknown-architecture": (
        lambda c: first_model(c).update(architecture="rnn"),
        ["config key 'models[0].architecture'", "'rnn' is not one of", "transformer"]),
    "duplicate-model-name": (
        lambda c: c["models"].append(copy.deepcopy(first_model(c))),
        ["config key 'models'", "duplicate model names ['alexnet_random']"]),
    "empty-roi-list": (
        lambda c: c.update(rois=[]), ["config key 'rois'", "[] should be non-empty"]),
    "missing-nsd-root": (
        lambda c: c["nsd"].pop("root"), ["config key 'nsd'", "'root' is a required property"]),
    "subject-out-of-range": (
        lambda c: c.update(subjects=[1, 9]),
        ["config key 'subjects[1]'", "9 is greater than the maximum of 8"]),
    "negative-penalty": (
        lambda c: c["ridge"].update(alphas=[-1.0]),
        ["config key 'ridge.alphas[0]'", "less than or equal to the minimum of 0"]),
    "zero-srp-dim": (
        lambda c: c["ridge"].update(srp_dim=0),
        ["config key 'ridge.srp_dim'", "0 is less than the minimum of 1"]),
    "unknown-feature-dtype": (
        lambda c: c["extraction"].update(dtype="float64"),
        ["config key 'extraction.dtype'", "'float64' is not one of ['float16', 'float32']"]),
    "roi-name-with-a-slash": (
        lambda c: c["rois"][0].update(name="V1/left"),
        ["config key 'rois[0].name'", "does not match"]),
    "duplicate-roi-name": (
        lambda c: c["rois"][1].update(name="V1"), ["config key 'rois'", "must be unique"]),
    "trained-model-without-weights": (
        lambda c: first_model(c).update(trained=True),
        ["config key 'models[0].weights'", "needs weights (url, path or package)"]),
    "short-sha256": (
        lambda c: first_model(c).update(weights={"url": "https://x/y.pth", "sha256": "abc"}),
        ["config key 'models[0].weights.sha256'", "does not match"]),
    "demo-sessions-do-not-divide-the-trials": (
        lambda c: c["demo"].update(trials_per_session=64),
        ["config key 'demo.trials_per_session'", "must divide the demo's 210 trials"]),
    "more-held-out-images-than-the-demo-has": (
        lambda c: c["images"].update(n_test=25),
        ["config keys 'images.n_test' + 'images.n_reliability'", "exceed the demo's 30"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_gets_one_error_naming_the_key(micro, case):
    damage, expected = CONFIG_CASES[case]
    config = copy.deepcopy(micro)
    damage(config)
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    message = str(caught.value)
    for text in expected:
        assert text in message, message
    # One error, not a cascade: the damaged key is the only one named.
    assert message.count("config key") == 1, message


def test_a_bad_config_stops_the_workflow_with_the_key_and_no_traceback(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("models:\n- {name: a, source: keras, arch: a, architecture: rnn,\n"
                        "   task: t, task_category: s, input_diet: i, trained: false}\n")
    result = snakemake("-n", "--configfile", str(MICRO), str(override), "-d", str(tmp_path),
                       check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "config key 'models[0].architecture'" in output
    assert "config key 'models[0].source'" in output
    assert "Traceback" not in output


def test_a_missing_nsd_root_names_the_files_a_dry_run_needs(tmp_path):
    override = tmp_path / "override.yaml"
    missing = tmp_path / "no-such-nsd"
    override.write_text(f"nsd: {{root: '{missing}', demo: false}}\n")
    result = snakemake("-n", "--configfile", str(MICRO), str(override), "-d", str(tmp_path),
                       check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "MissingInputException" in output
    assert f"{missing}/nsddata/experiments/nsd/nsd_expdesign.mat" in output
    assert "Traceback" not in output


# ------------------------------------------------------------------------------ NSD files
def truncate(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_hdf5_betas_file_is_named(tree):  # noqa: F811 - fixture
    path = tree.betas_path(1, 1)
    truncate(path)
    with pytest.raises(NsdError, match="not a readable HDF5 file, truncated or corrupt") as caught:
        build(tree)
    assert str(path) in str(caught.value)


def test_a_truncated_nifti_betas_file_is_named(tree):  # noqa: F811 - fixture
    from nsdbench.nsd import NsdTree

    nifti = NsdTree(tree.root, betas_format="nifti")
    path = nifti.betas_path(1, 2)
    # Cut the decompressed data short and compress it again: a whole header, half the values.
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(NsdError, match="truncated or corrupt") as caught:
        build(nifti)
    assert str(path) in str(caught.value)


def test_hdf5_betas_of_the_wrong_rank_are_named(tree):  # noqa: F811 - fixture
    path = tree.betas_path(1, 1)
    with h5py.File(path, "r+") as handle:
        values = handle["betas"][:]
        del handle["betas"]
        handle["betas"] = values.reshape(values.shape[0], -1)  # (T, voxels): flattened
    with pytest.raises(NsdError, match=r"expected int16 betas \(T, Z, Y, X\)") as caught:
        build(tree)
    assert str(path) in str(caught.value)


def test_a_truncated_roi_volume_is_named(tree):  # noqa: F811 - fixture
    path = tree.roi_path(1, "prf-visualrois")
    truncate(path, keep=0.3)
    with pytest.raises(NsdError, match="truncated or corrupt|not a readable NIfTI") as caught:
        build(tree)
    assert str(path) in str(caught.value)


def test_a_label_table_with_a_malformed_line_is_named(tree):  # noqa: F811 - fixture
    path = tree.label_table_path(1, "floc-faces")
    path.write_text(path.read_text() + "FFA-3 seventeen\n")
    with pytest.raises(NsdError, match="expected '<int> <name>' on every line") as caught:
        build(tree)
    assert str(path) in str(caught.value)


def test_a_label_table_with_gaps_in_its_ids_is_named(tree):  # noqa: F811 - fixture
    path = tree.label_table_path(1, "prf-visualrois")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # id 2 is gone
    with pytest.raises(NsdError, match="expected consecutive ids 0..N") as caught:
        build(tree)
    assert str(path) in str(caught.value)


def test_a_truncated_stimulus_brick_is_named(tree, tmp_path):  # noqa: F811 - fixture
    path = tree.stimuli_path
    truncate(path, keep=0.6)
    with pytest.raises(NsdError, match="truncated or corrupt") as caught:
        tree.read_stimuli(np.arange(5))
    assert str(path) in str(caught.value)


def test_more_held_out_images_than_the_subject_has_names_the_config_keys(tree):  # noqa: F811
    with pytest.raises(NsdError, match="config keys 'images.n_test'"):
        build(tree, n_test=60, n_reliability=40)


# ------------------------------------------------------------------------------ checkpoints
def model_entry(path, **weights):
    return {"name": "net", "trained": True, "weights": {"path": str(path), **weights}}


def test_a_corrupt_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "net.pth"
    torch.save({"weight": torch.ones(64, 64)}, path)
    truncate(path)
    with pytest.raises(WeightsError) as caught:
        torch_load(model_entry(path), path)
    message = str(caught.value)
    assert str(path) in message and "model 'net'" in message, message
    assert "truncated or corrupt" in message


def test_a_checkpoint_with_a_wrong_pinned_sha256_is_refused_before_loading(tmp_path):
    path = tmp_path / "net.pth"
    torch.save({"weight": torch.ones(2)}, path)
    entry = model_entry(path, sha256="0" * 64)
    with pytest.raises(WeightsError, match="has sha256 .*, expected 0{64}; refusing") as caught:
        verified_file(entry)
    assert str(path) in str(caught.value)


# ------------------------------------------------------------------------------ feature stores
@pytest.fixture()
def store(tmp_path):
    array = create_layer_store(tmp_path, "conv1", n_images=12, width=10, chunk_rows=4,
                               dtype="float16")
    array[:] = np.arange(120, dtype=np.float16).reshape(12, 10)
    return tmp_path


def test_an_intact_store_opens(store):
    assert open_layer(store, "conv1")[:].sum() == np.arange(120).sum()


def test_a_truncated_chunk_of_a_feature_store_is_named(store):
    chunk = store / "conv1.zarr" / "c" / "1" / "0"
    truncate(chunk)
    with pytest.raises(FeatureStoreError, match="feature chunk is 40 bytes, expected 80") as caught:
        open_layer(store, "conv1")
    assert str(chunk) in str(caught.value)


def test_a_missing_chunk_of_a_feature_store_is_named(store):
    chunk = store / "conv1.zarr" / "c" / "2" / "0"
    chunk.unlink()
    with pytest.raises(FeatureStoreError, match="feature chunk is missing") as caught:
        open_layer(store, "conv1")
    assert str(chunk) in str(caught.value)


def test_a_feature_store_of_the_wrong_dtype_is_named(tmp_path):
    import zarr

    path = tmp_path / "conv1.zarr"
    zarr.create_array(path, shape=(4, 3), dtype="int32", fill_value=0)[:] = 1
    with pytest.raises(FeatureStoreError, match="float16 or float32, got int32") as caught:
        open_layer(tmp_path, "conv1")
    assert str(path) in str(caught.value)


def test_a_missing_feature_store_is_named(tmp_path):
    with pytest.raises(FeatureStoreError, match="no feature store for layer 'fc'"):
        open_layer(tmp_path, "fc")


# ------------------------------------------------------------------------------ layers, voxels
N_TRAIN = 24


@pytest.fixture(scope="module")
def targets():
    rng = np.random.default_rng(3)
    ids = np.arange(N_TRAIN)
    return BrainTargets.from_sets({("01", "V1"): rng.normal(size=(N_TRAIN, 12)),
                                   ("01", "V2"): rng.normal(size=(N_TRAIN, 15))}, ids)


def stored(tmp_path, values):
    layer = f"layer{uuid.uuid4().hex[:6]}"
    array = create_layer_store(tmp_path, layer, n_images=values.shape[0], width=values.shape[1],
                               chunk_rows=8, dtype="float32")
    array[:] = values
    return open_layer(tmp_path, layer)


@pytest.mark.parametrize(
    ("case", "make", "warning"),
    [
        ("all-constant", lambda rng: np.full((N_TRAIN, 30), 2.5), "only constant features"),
        ("a-nan", lambda rng: np.where(np.eye(N_TRAIN, 30) == 1, np.nan,
                                       rng.normal(size=(N_TRAIN, 30))), "NaN or inf values"),
        ("an-inf", lambda rng: np.where(np.eye(N_TRAIN, 30) == 1, np.inf,
                                        rng.normal(size=(N_TRAIN, 30))), "NaN or inf values"),
    ],
)
def test_a_useless_layer_scores_nan_with_a_warning(tmp_path, targets, caplog, case, make,
                                                   warning):
    features = stored(tmp_path, make(np.random.default_rng(0)).astype(np.float32))
    with caplog.at_level(logging.WARNING):
        scores = score_layer(features, targets, alphas=[1.0], srp_dim=None, seed=0, model="m",
                             layer=case)
    assert len(scores) == 2 * 3 and scores["score"].isna().all()
    assert f"model m layer {case} has {warning}: its scores are NaN" in caplog.text


def test_a_zero_variance_voxel_does_not_crash_the_fit(tmp_path, targets):
    rng = np.random.default_rng(1)
    sets = {("01", "V1"): rng.normal(size=(N_TRAIN, 12))}
    sets[("01", "V1")][:, 4] = 3.0  # a voxel that never changes
    with_flat = BrainTargets.from_sets(sets, np.arange(N_TRAIN))
    features = stored(tmp_path, rng.normal(size=(N_TRAIN, 30)).astype(np.float32))
    scores = score_layer(features, with_flat, alphas=[1.0], srp_dim=None, seed=0, model="m",
                         layer="l").set_index("metric")["score"]
    # Its correlation is undefined; the ROI's scores are still numbers.
    assert np.isfinite(scores[["crsa", "versa"]]).all(), scores


def test_a_voxel_that_never_varies_in_the_betas_is_not_kept(tree):  # noqa: F811 - fixture
    mask = tree.roi_mask(1, ROIS[0])
    x, y, z = np.argwhere(mask)[0]
    for session in tree.sessions(1):
        rewrite_hdf5(tree.betas_path(1, session), lambda betas: _flatten_voxel(betas, x, y, z))
    voxels = build(tree).voxels.set_index(["roi", "x", "y", "z"])
    flat = voxels.loc[(ROIS[0].name, x, y, z)]
    assert not flat["kept"] and np.isnan(flat["reliability"])
    assert voxels["kept"].any()  # the others are scored as before


def _flatten_voxel(betas, x, y, z):
    betas = betas.copy()
    betas[:, z, y, x] = 100  # (T, Z, Y, X): one voxel's betas constant in every trial
    return betas


def test_an_roi_with_fewer_than_10_voxels_is_skipped_with_a_warning(tmp_path, caplog):
    from nsdbench.brain import ResponseSet

    ids = np.arange(N_TRAIN)
    rng = np.random.default_rng(2)
    responses = ResponseSet(
        subject=1, train_nsd_ids=ids, test_nsd_ids=np.arange(100, 104),
        train={"V1": rng.normal(size=(N_TRAIN, 20)), "tiny": rng.normal(size=(N_TRAIN, 9))},
        test={"V1": rng.normal(size=(4, 20)), "tiny": rng.normal(size=(4, 9))},
    )
    path = write_response_store(tmp_path / "sub-01.zarr", responses)
    with caplog.at_level(logging.WARNING):
        targets = BrainTargets.load([path], ids)
    assert list(targets.columns) == [("01", "V1")]
    assert "ROI tiny has 9 kept voxels (< 10); skipped in scoring" in caplog.text


# ------------------------------------------------------------------------------ disk full
@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MB tmpfs (we are root in CI); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_stops_a_table_write_and_leaves_no_finished_table(small_disk):
    path = small_disk / "scores.parquet"
    noise = np.random.default_rng(0).normal(size=(400_000, 1))  # 3.2 MB > 1 MB
    with pytest.raises(OSError, match="No space left on device"):
        write_table(pd.DataFrame(noise, columns=["x"]), path, {"seed": 0})
    assert not path.exists()


def test_a_full_disk_stops_extraction_and_leaves_no_finished_store(small_disk):
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4000))
    preprocess = Preprocessing(size=4, resize=4, mean=(0, 0, 0), std=(1, 1, 1))
    model = LoadedModel("net", module.eval(), preprocess, source="torchvision")
    images = np.random.default_rng(0).integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    inventory = layer_inventory(model, images[:2])  # 200 x 4000 float32 = 3.2 MB > 1 MB
    out = small_disk / "group-0"
    with pytest.raises(OSError, match="No space left on device"):
        extract_features(model, images, inventory["method"].iloc[0], list(inventory["layer"]),
                         out, batch_size=20, dtype="float32", progress=False)
    assert not out.exists()  # only <out>.partial, which a rerun continues or starts over


def test_a_full_disk_stops_a_brain_store_write_and_leaves_nothing(small_disk):
    from nsdbench.brain import ResponseSet

    big = np.random.default_rng(0).normal(size=(400, 1000)).astype(np.float32)  # 1.6 MB
    responses = ResponseSet(subject=1, train_nsd_ids=np.arange(400), test_nsd_ids=np.arange(2),
                            train={"V1": big}, test={"V1": big[:2]})
    with pytest.raises(OSError, match="No space left on device"):
        write_response_store(small_disk / "sub-01.zarr", responses)
    assert not list(small_disk.iterdir())  # neither the store nor its temporary


# ------------------------------------------------------------------------------ end to end
def run_script(code, tmp_path):
    """A job-like script: logs through nsdbench.joblog and raises."""
    script = tmp_path / "job.py"
    script.write_text(
        "from nsdbench.joblog import setup_job_logging\n"
        f"log = setup_job_logging({str(tmp_path / 'job.log')!r})\n" + code
    )
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_a_job_stopped_by_a_user_error_logs_one_line_and_no_traceback(tmp_path):
    result = run_script(
        "from nsdbench.nsd import NsdError\n"
        "raise NsdError('/data/betas_session01.hdf5: expected int16 betas')\n", tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = (tmp_path / "job.log").read_text().splitlines()
    assert lines == [lines[0]] and lines[0].endswith(
        "ERROR nsdbench: NsdError: /data/betas_session01.hdf5: expected int16 betas")


def test_a_bug_keeps_its_traceback(tmp_path):
    result = run_script("{}['missing']\n", tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "KeyError" in result.stderr


def test_every_package_error_for_bad_input_is_a_user_error():
    from nsdbench.algonauts import AlgonautsError
    from nsdbench.byo import ByoError
    from nsdbench.converters import ConversionError
    from nsdbench.extract import FeatureOverflowError
    from nsdbench.sources import ModelError

    for kind in (ConfigError, NsdError, AlgonautsError, ByoError, WeightsError, ModelError,
                 ConversionError, FeatureOverflowError, FeatureStoreError):
        assert issubclass(kind, UserError), kind


# ------------------------------------------------------------------------------ safety
def test_no_rule_puts_an_unquoted_value_into_a_shell_command():
    """Rules run scripts (values reach them as Python objects) or Python `run:` blocks; a
    `shell:` command, if one is ever added, must quote every value it formats in (`:q`)."""
    import re

    for rule_file in [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]:
        text = rule_file.read_text()
        for command in re.findall(r"^\s*shell:\s*\n((?:\s{8,}.*\n)+)", text, re.MULTILINE):
            for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command):
                assert field.endswith(":q") or field in ("threads", "resources.mem_mb"), (
                    f"{rule_file.name}: shell command formats {{{field}}} unquoted")


def test_paths_with_spaces_quotes_and_command_substitution_are_never_run(tmp_path):
    """Paths from the config reach no shell: a dry run that prints every command (-p) plans
    the whole workflow on them and runs none of their embedded commands."""
    marker = tmp_path / "INJECTED"
    weird = tmp_path / f"nsd dir 'quoted' \"double\" $(touch {marker}) `touch {marker}`"
    for relative in ("nsddata/experiments/nsd/nsd_expdesign.mat",
                     "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
                     "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"):
        (weird / relative).parent.mkdir(parents=True, exist_ok=True)
        (weird / relative).touch()
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({
        "nsd": {"root": str(weird), "demo": False},
        "weights_cache": str(tmp_path / "weights $(touch INJECTED) ; rm -rf x"),
    }))
    result = snakemake("-n", "-p", "--configfile", str(MICRO), str(override),
                       "-d", str(tmp_path / "run; $(touch INJECTED)"), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "brain_responses" in output and str(weird) in output
    assert not marker.exists() and not list(tmp_path.rglob("INJECTED"))
