"""The NSD reader against a fake tree written with known content."""

import gzip
import shutil
import struct

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from nsdbench.demo.nsd_tree import NSD_LABEL_NAMES, Region, write_fake_nsd
from nsdbench.nsd import NsdError, NsdTree, RoiSpec

N_SHARED = 40
OWN = 60
N_IMAGES = N_SHARED + 2 * OWN
TRIALS_PER_SESSION = 60
N_SESSIONS = 3 * (N_SHARED + OWN) // TRIALS_PER_SESSION
GRID = (8, 8, 6)
V1 = RoiSpec("V1", "prf-visualrois", ["V1v", "V1d"])
FFA = RoiSpec("FFA-1", "floc-faces", ["FFA-1"])


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (N_IMAGES, 6, 5, 3), dtype=np.uint8)
    regions = [
        Region("V1", "prf-visualrois", ["V1v", "V1d"], rng.normal(size=(N_IMAGES, 20))),
        Region("FFA-1", "floc-faces", ["FFA-1"], rng.normal(size=(N_IMAGES, 10))),
    ]
    written = write_fake_nsd(
        tmp_path_factory.mktemp("nsd"),
        images,
        n_shared=N_SHARED,
        subjects={1: regions, 2: regions},
        own_images_per_subject=OWN,
        trials_per_session=TRIALS_PER_SESSION,
        grid=GRID,
        seed=11,
        write_nifti=True,
    )
    return written, images, {region.name: region.signal for region in regions}


@pytest.fixture()
def tree(fake):
    return NsdTree(fake[0].root)


@pytest.fixture()
def broken_tree(fake, tmp_path):
    """A private copy of the tree that a test may damage."""
    root = tmp_path / "nsd"
    shutil.copytree(fake[0].root, root)
    return NsdTree(root)


def coordinates_mask(xyz: np.ndarray) -> np.ndarray:
    mask = np.zeros(GRID, dtype=bool)
    mask[tuple(xyz.T)] = True
    return mask


# ---------------------------------------------------------------------------- design
def test_design_maps_trials_to_the_nsd_ids_of_the_stim_info(tree):
    design = tree.read_design()
    assert design.masterordering.shape == (3 * (N_SHARED + OWN),)
    assert design.subjectim.shape == (8, N_SHARED + OWN)
    assert design.n_shared == N_SHARED and design.n_sessions == N_SESSIONS
    assert np.array_equal(design.shared_nsd_ids(), np.arange(N_SHARED))
    assert design.masterordering.min() == 1  # raw 1-based values are kept
    info = tree.read_stim_info()
    for subject in (1, 2):
        nsd_of_trial = design.subject_trials(subject, design.masterordering.size)
        for rep in range(3):
            trial_ids = info[f"subject{subject}_rep{rep}"]
            shown = trial_ids[trial_ids > 0]
            assert np.array_equal(nsd_of_trial[shown.to_numpy() - 1], shown.index.to_numpy())
    assert design.subject_trials(1, 5).shape == (5,)
    assert [design.first_trial(s) for s in (1, 2, 3)] == [0, 60, 120]
    assert design.trials_in_session(2) == TRIALS_PER_SESSION


def test_stim_info_is_indexed_by_nsd_id(tree):
    info = tree.read_stim_info()
    assert info.shape == (N_IMAGES, 40)
    assert np.array_equal(info.index, info["nsdId"])
    assert info["shared1000"].dtype == bool


# ----------------------------------------------------------------------------- betas
def test_sessions_match_the_strict_file_pattern(broken_tree):
    directory = broken_tree.betas_dir(1)
    for stray in (
        "meanbeta_session01.hdf5",
        "betas_session1.hdf5",
        "betas_session07.hdf5.bak",
        "R2_session01.nii.gz",
        "ncsnr_split1.nii.gz",
    ):
        (directory / stray).write_bytes(b"")
    assert broken_tree.sessions(1) == list(range(1, N_SESSIONS + 1))
    assert broken_tree.sessions(1, "nifti") == list(range(1, N_SESSIONS + 1))
    (directory / "betas_session03.hdf5").unlink()
    assert broken_tree.sessions(1) == [1, 2, 4, 5]


def test_session_betas_are_percent_change_of_the_masked_voxels(tree, fake):
    written, _, _ = fake
    xyz = written.region_voxels[1]["V1"]
    mask = coordinates_mask(xyz)
    betas = tree.read_session_betas(1, 2, mask)
    assert betas.dtype == np.float32 and betas.shape == (TRIALS_PER_SESSION, len(xyz))
    with h5py.File(tree.betas_path(1, 2)) as handle:
        volume = handle["betas"][:].transpose(0, 3, 2, 1)  # (T, X, Y, Z)
    expected = volume[:, *np.argwhere(mask).T] / np.float32(300)
    np.testing.assert_array_equal(betas, expected)


def test_hdf5_and_nifti_betas_are_identical(tree):
    mask = tree.read_roi_volume(1, "prf-visualrois") >= 0  # every cortical voxel
    for session in (1, N_SESSIONS):
        from_hdf5 = tree.read_session_betas(1, session, mask, "hdf5")
        from_nifti = NsdTree(tree.root, betas_format="nifti").read_session_betas(1, session, mask)
        np.testing.assert_array_equal(from_hdf5, from_nifti)


def test_betas_of_an_empty_mask_keep_the_trial_axis(tree):
    empty = np.zeros(GRID, dtype=bool)
    assert tree.read_session_betas(1, 1, empty).shape == (TRIALS_PER_SESSION, 0)
    assert tree.read_session_betas(1, 1, empty, "nifti").shape == (
        TRIALS_PER_SESSION,
        0,
    )


def test_betas_trials_map_to_the_right_images(tree, fake):
    # Each V1 voxel's responses follow its signal at the nsd ids the design maps trials to.
    written, _, signals = fake
    design = tree.read_design()
    session = 4
    start = design.first_trial(session)
    nsd_ids = design.subject_trials(1, start + TRIALS_PER_SESSION)[start:]
    region_xyz = written.region_voxels[1]["V1"]
    mask = coordinates_mask(region_xyz)
    betas = tree.read_session_betas(1, session, mask)
    signal_column = {tuple(xyz): column for column, xyz in enumerate(region_xyz)}
    correlations = [
        np.corrcoef(betas[:, k], signals["V1"][nsd_ids, signal_column[tuple(xyz)]])[0, 1]
        for k, xyz in enumerate(np.argwhere(mask))
        if np.any(betas[:, k])  # skip a voxel out of the field of view in this session
    ]
    assert len(correlations) >= len(region_xyz) - 3
    assert min(correlations) > 0.4
    # A different trial order (the next session's ids) does not fit.
    shifted = design.subject_trials(1, start + 2 * TRIALS_PER_SESSION)[-TRIALS_PER_SESSION:]
    k, xyz = 0, np.argwhere(mask)[0]
    assert np.corrcoef(betas[:, k], signals["V1"][shifted, signal_column[tuple(xyz)]])[0, 1] < 0.4


# ------------------------------------------------------------------------------ ROIs
def test_label_table_and_roi_masks(tree, fake):
    written, _, _ = fake
    assert tree.read_label_table(1, "floc-faces") == {
        name: index + 1 for index, name in enumerate(NSD_LABEL_NAMES["floc-faces"])
    }
    assert tree.read_label_table(1, "lh.floc-faces") == tree.read_label_table(1, "floc-faces")
    volume = tree.read_roi_volume(1, "prf-visualrois")
    assert volume.dtype == np.int32 and volume.shape == GRID and volume.min() == -1
    v1 = tree.roi_mask(1, V1)
    assert np.array_equal(v1, coordinates_mask(written.region_voxels[1]["V1"]))
    v1_ventral = tree.roi_mask(1, RoiSpec("V1v", "prf-visualrois", ["V1v"]))
    assert 0 < v1_ventral.sum() < v1.sum() and not np.any(v1_ventral & ~v1)
    left = tree.roi_mask(1, RoiSpec("V1", "lh.prf-visualrois", ["V1v", "V1d"]))
    right = tree.roi_mask(1, RoiSpec("V1", "rh.prf-visualrois", ["V1v", "V1d"]))
    assert np.array_equal(left | right, v1) and not np.any(left & right)
    assert np.array_equal(
        tree.roi_mask(1, FFA), coordinates_mask(written.region_voxels[1]["FFA-1"])
    )


def test_ncsnr_volume_is_optional(broken_tree):
    ncsnr = broken_tree.read_ncsnr(1)
    assert ncsnr.shape == GRID and ncsnr.dtype == np.float32 and ncsnr.max() > 0
    broken_tree.ncsnr_path(1).unlink()
    assert broken_tree.read_ncsnr(1) is None


# --------------------------------------------------------------------------- stimuli
def test_stimuli_come_back_in_the_requested_order(tree, fake):
    _, images, _ = fake
    nsd_ids = np.array([57, 3, 57, 0, 159])
    np.testing.assert_array_equal(tree.read_stimuli(nsd_ids), images[nsd_ids])
    assert tree.read_stimuli([]).shape == (0, 6, 5, 3)


# ---------------------------------------------------------------------------- errors
def assert_nsd_error(call, path, message):
    with pytest.raises(NsdError, match=message) as caught:
        call()
    assert str(path) in str(caught.value)


def test_missing_files_name_the_file(broken_tree):
    tree = broken_tree
    tree.expdesign_path.unlink()
    assert_nsd_error(tree.read_design, tree.expdesign_path, "missing file")
    tree.stimuli_path.unlink()
    assert_nsd_error(lambda: tree.read_stimuli([0]), tree.stimuli_path, "imgBrick")
    roi = tree.roi_path(1, "floc-faces")
    roi.unlink()
    assert_nsd_error(lambda: tree.roi_mask(1, FFA), roi, "ROI volume")
    assert_nsd_error(lambda: tree.sessions(4), tree.betas_dir(4), "missing directory")
    assert_nsd_error(
        lambda: tree.read_session_betas(1, 9, np.ones(GRID, bool)),
        tree.betas_path(1, 9),
        "missing",
    )


def test_unknown_roi_label_names_the_label_table(tree):
    spec = RoiSpec("PPA", "floc-faces", ["PPA"])
    assert_nsd_error(lambda: tree.roi_mask(1, spec), tree.label_table_path(1, "floc-faces"), "PPA")


def test_malformed_label_table_is_refused(broken_tree):
    path = broken_tree.label_table_path(1, "floc-faces")
    path.write_text("1 OFA\n2 FFA-1\n")
    assert_nsd_error(lambda: broken_tree.read_label_table(1, "floc-faces"), path, "0 Unknown")


def test_wrong_betas_shape_or_dtype_names_the_file(broken_tree):
    mask = np.ones(GRID, dtype=bool)
    wrong_grid = np.ones((8, 8, 5), dtype=bool)
    path = broken_tree.betas_path(1, 1)
    assert_nsd_error(lambda: broken_tree.read_session_betas(1, 1, wrong_grid), path, "shape")
    nifti = broken_tree.betas_path(1, 1, "nifti")
    assert_nsd_error(
        lambda: broken_tree.read_session_betas(1, 1, wrong_grid, "nifti"),
        nifti,
        "shape",
    )
    with h5py.File(path, "r+") as handle:
        values = handle["betas"][:]
        del handle["betas"]
        handle["betas"] = values.astype(np.float32)
    assert_nsd_error(lambda: broken_tree.read_session_betas(1, 1, mask), path, "int16")


def test_session_trial_count_must_agree_with_the_design(broken_tree):
    path = broken_tree.betas_path(1, 2)
    with h5py.File(path, "r+") as handle:
        values = handle["betas"][:]
        del handle["betas"]
        handle["betas"] = values[:-5]
    assert_nsd_error(
        lambda: broken_tree.read_session_betas(1, 2, np.ones(GRID, bool)),
        path,
        "design",
    )


def test_scaled_nifti_betas_are_refused(broken_tree):
    # nibabel rewrites scl_slope on save, so patch the header field (bytes 112..116) directly.
    path = broken_tree.betas_path(1, 1, "nifti")
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[112:116] = struct.pack("<f", 2.0)
    path.write_bytes(gzip.compress(bytes(raw)))
    assert nib.load(path).dataobj.slope == 2.0
    assert_nsd_error(
        lambda: broken_tree.read_session_betas(1, 1, np.ones(GRID, bool), "nifti"),
        path,
        "slope",
    )


def test_design_without_shared_images_first_is_refused(broken_tree):
    path = broken_tree.expdesign_path
    design = scipy.io.loadmat(path)
    design["subjectim"][0, [0, N_SHARED]] = design["subjectim"][0, [N_SHARED, 0]]
    scipy.io.savemat(
        path, {key: value for key, value in design.items() if not key.startswith("__")}
    )
    assert_nsd_error(broken_tree.read_design, path, "sharedix")


def test_wrong_image_brick_dtype_names_the_file(broken_tree):
    with h5py.File(broken_tree.stimuli_path, "r+") as handle:
        values = handle["imgBrick"][:]
        del handle["imgBrick"]
        handle["imgBrick"] = values.astype(np.float32)
    assert_nsd_error(lambda: broken_tree.read_stimuli([0]), broken_tree.stimuli_path, "uint8")


def test_stim_info_without_required_columns_is_refused(broken_tree):
    pd.DataFrame({"x": [1]}).to_csv(broken_tree.stim_info_path)
    assert_nsd_error(broken_tree.read_stim_info, broken_tree.stim_info_path, "columns")
