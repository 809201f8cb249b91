"""The bring-your-own format: a tiny tree with planted values, read into the stores, its errors,
and a dry run of the workflow on it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from nsdbench.brain import (
    brain_summary,
    build_responses,
    open_brain_source,
    read_response_store,
    read_stimuli_store,
    study_train_ids,
    write_response_store,
    write_stimuli_store,
)
from nsdbench.byo import ByoError, ByoTree
from nsdbench.nsd import RoiSpec

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [4, 9, 11, 20, 31, 42, 50, 66, 70, 81, 90, 95]
TEST = [100, 101, 102]
RELIABILITY = [200, 201, 202, 203, 204, 205, 206, 207]
N_UNITS = 16
N_RELIABLE = 11  # the first units carry a repeated signal, the others are pure noise
PX = 6


def image_of(image_id):
    return np.full((PX, PX, 3), image_id % 256, dtype=np.uint8)


def planted(ids, unit):
    return np.asarray(ids)[:, None] * 10.0 + unit[None, :]


def make_byo(root, subjects=(1, 2), reps=3):
    """V1: 2-D responses = id*10 + unit. IT: (reps, images, units) with reliable first units.

    image_ids.npy rows are deliberately not sorted, to check the reader reorders them."""
    root.mkdir(parents=True)
    (root / "images").mkdir()
    rows = []
    for split, ids in (("train", TRAIN), ("test", TEST), ("reliability", RELIABILITY)):
        for image_id in ids:
            name = f"images/img{image_id}.png"
            Image.fromarray(image_of(image_id)).save(root / name)
            rows.append({"image_id": image_id, "split": split, "file": name})
    pd.DataFrame(rows).to_csv(root / "stimuli.csv", index=False)
    rng = np.random.default_rng(0)
    for subject in subjects:
        folder = root / f"sub-{subject:02d}"
        folder.mkdir()
        ids = np.array(TRAIN + TEST + RELIABILITY)[::-1]
        np.save(folder / "image_ids.npy", ids)
        np.save(folder / "V1.npy", planted(ids, np.arange(N_UNITS)).astype(np.float32))
        signal = rng.normal(size=(ids.size, N_UNITS))
        signal[:, N_RELIABLE:] = 0
        repetitions = signal[None] + 0.1 * rng.normal(size=(reps, ids.size, N_UNITS))
        np.save(folder / "IT.npy", repetitions.astype(np.float32))
    return root


ROIS = [RoiSpec("V1", "unused", ["unused"]), RoiSpec("IT", "unused", ["unused"])]
OPTIONS = dict(
    n_test=30,
    n_reliability=30,
    reliability_threshold=0.5,
    seed=0,
    subjects=[1, 2],
    selection="reliability",
    ncsnr_threshold=0.2,
)


@pytest.fixture
def byo(tmp_path):
    return make_byo(tmp_path / "byo")


def test_stores_hold_the_planted_values(byo, tmp_path):
    source = open_brain_source({"root": str(byo), "format": "byo"})
    responses = build_responses(source, 1, ROIS, **OPTIONS)
    np.testing.assert_array_equal(responses.train_nsd_ids, TRAIN)
    np.testing.assert_array_equal(responses.test_nsd_ids, TEST)
    np.testing.assert_array_equal(responses.reliability_nsd_ids, RELIABILITY)
    store = read_response_store(write_response_store(tmp_path / "sub-01.zarr", responses))
    np.testing.assert_array_equal(store.train["V1"], planted(TRAIN, np.arange(N_UNITS)))
    np.testing.assert_array_equal(store.test["V1"], planted(TEST, np.arange(N_UNITS)))

    # IT: averages over repetitions of the reliable units only, rows in sorted id order.
    raw = np.load(byo / "sub-01/IT.npy")
    ids = np.load(byo / "sub-01/image_ids.npy")
    order = np.argsort(ids)
    averages = raw.mean(axis=0)[order]
    sorted_ids = ids[order]
    rows = np.searchsorted(sorted_ids, TRAIN)
    np.testing.assert_allclose(store.train["IT"], averages[rows][:, :N_RELIABLE], rtol=1e-6)

    voxels = responses.voxels
    v1, it = voxels[voxels["roi"] == "V1"], voxels[voxels["roi"] == "IT"]
    assert v1["kept"].all() and v1["reliability"].isna().all()
    np.testing.assert_array_equal(it["kept"], np.arange(N_UNITS) < N_RELIABLE)
    # Reliability from the reliability images, as direct numpy: mean pairwise Pearson r.
    rel = raw[:, order][:, np.searchsorted(sorted_ids, RELIABILITY)]
    pairs = [(0, 1), (0, 2), (1, 2)]
    direct = [
        np.mean([np.corrcoef(rel[i, :, unit], rel[j, :, unit])[0, 1] for i, j in pairs])
        for unit in range(N_RELIABLE)
    ]
    np.testing.assert_allclose(it["reliability"].to_numpy()[:N_RELIABLE], direct, rtol=1e-4)
    summary = brain_summary(voxels, {1: {"train": 12, "test": 3, "reliability": 8}})
    assert summary.set_index("roi")["kept"].to_dict() == {"V1": N_UNITS, "IT": N_RELIABLE}


def test_stimuli_match_the_image_files(byo, tmp_path):
    source = ByoTree(byo)
    ids = study_train_ids(source, [1, 2])
    stimuli = read_stimuli_store(write_stimuli_store(tmp_path / "train.zarr", source, ids))
    np.testing.assert_array_equal(stimuli.nsd_ids, TRAIN)
    np.testing.assert_array_equal(stimuli.images[:], np.stack([image_of(i) for i in TRAIN]))


def test_ncsnr_selection_is_refused_with_repetitions(byo):
    with pytest.raises(ValueError, match="voxels.selection"):
        build_responses(ByoTree(byo), 1, ROIS, **{**OPTIONS, "selection": "ncsnr"})


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda root: (root / "sub-01/IT.npy").unlink(), r"sub-01/IT.npy: missing file"),
        (
            lambda root: np.save(root / "sub-01/V1.npy", np.zeros((5, 3), np.float32)),
            r"sub-01/V1.npy: expected 23 image rows",
        ),
        (
            lambda root: np.save(root / "sub-01/V1.npy", np.zeros(23, np.float32)),
            r"sub-01/V1.npy: expected a numeric \(n_images, n_units\)",
        ),
        (
            lambda root: np.save(root / "sub-01/image_ids.npy", np.array([4, 9, 100])),
            r"sub-01/image_ids.npy: lacks train images \[11, 20",
        ),
        (
            lambda root: np.save(root / "sub-01/image_ids.npy", np.array(TRAIN + [999])),
            r"sub-01/image_ids.npy: image ids \[999\] have no row in .*stimuli.csv",
        ),
        (
            lambda root: (root / "stimuli.csv").write_text("image_id,file\n1,a.png\n"),
            r"stimuli.csv: missing columns \['split'\]",
        ),
        (
            lambda root: (root / "stimuli.csv").write_text("image_id,split,file\n1,val,a.png\n"),
            r"stimuli.csv: column split has \['val'\]",
        ),
    ],
)
def test_bad_input_names_the_file(byo, damage, expected):
    damage(byo)
    with pytest.raises(ByoError, match=expected):
        build_responses(ByoTree(byo), 1, ROIS, **OPTIONS)


def test_missing_image_file_is_named(byo, tmp_path):
    (byo / "images/img9.png").unlink()
    with pytest.raises(ByoError, match=r"images/img9.png: missing image file for image id 9"):
        write_stimuli_store(tmp_path / "train.zarr", ByoTree(byo), np.array(TRAIN))


def test_dry_run_plans_the_brain_jobs_without_nsd_inputs(byo, tmp_path):
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    config["nsd"] = {"root": str(byo), "format": "byo", "demo": False}
    config["rois"] = [
        {"name": "V1", "file": "none", "labels": ["none"]},
        {"name": "IT", "file": "none", "labels": ["none"]},
    ]
    del config["demo"]
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "-n",
            "--configfile",
            str(path),
            "-d",
            str(tmp_path / "run"),
            "results/brain/voxels.parquet",
            "results/stimuli/train.zarr",
            "results/stimuli/test-sub-01.zarr",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for rule in ("brain_responses", "voxel_table", "train_stimuli", "test_stimuli"):
        assert rule in result.stdout
    assert "demo_nsd" not in result.stdout and "nsd_expdesign" not in result.stdout
    assert str(byo / "sub-02/IT.npy") in result.stdout
