"""The fake NSD tree: real layout, dtypes and axis orders, and the simulated content."""

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from nsdbench.demo.nsd_tree import NSD_LABEL_NAMES, Region, write_fake_nsd

N_SHARED = 40
OWN = 60
N_IMAGES = N_SHARED + 2 * OWN
TRIALS_PER_SESSION = 60
N_SESSIONS = 3 * (N_SHARED + OWN) // TRIALS_PER_SESSION
GRID = (8, 8, 6)
BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
ROI_DIR = "nsddata/ppdata/subj01/func1pt8mm/roi"


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (N_IMAGES, 6, 5, 3), dtype=np.uint8)
    regions = [
        Region("V1", "prf-visualrois", ["V1v", "V1d"], rng.normal(size=(N_IMAGES, 24))),
        Region("FFA", "floc-faces", ["FFA-1"], rng.normal(size=(N_IMAGES, 12))),
    ]
    root = tmp_path_factory.mktemp("nsd")
    written = write_fake_nsd(
        root,
        images,
        n_shared=N_SHARED,
        subjects={1: regions, 3: regions[:1]},
        own_images_per_subject=OWN,
        trials_per_session=TRIALS_PER_SESSION,
        grid=GRID,
        noise_sd=0.5,
        seed=7,
        write_nifti=True,
    )
    return written, images, regions


def load_design(root: Path) -> dict:
    return scipy.io.loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")


def test_design_has_nsd_shapes_and_invariants(fake):
    written, _, _ = fake
    design = load_design(written.root)
    n_10k = N_SHARED + OWN
    assert design["masterordering"].shape == (1, 3 * n_10k)
    assert design["subjectim"].shape == (8, n_10k)
    assert design["sharedix"].shape == (1, N_SHARED)
    assert design["basiccnt"].shape == (3, N_SESSIONS)
    assert design["stimpattern"].shape[:2] == (N_SESSIONS, 12)
    # Every 10k index is shown exactly 3 times; basiccnt accounts for every trial.
    assert np.all(np.bincount(design["masterordering"].ravel())[1:] == 3)
    assert np.all(design["basiccnt"].T @ [1, 2, 3] == TRIALS_PER_SESSION)
    assert np.all(design["stimpattern"].sum(axis=(1, 2)) == TRIALS_PER_SESSION)
    # Shared images first and sorted, 1-based, in every row (also rows without data).
    subjectim = design["subjectim"]
    assert np.all(subjectim[:, :N_SHARED] == np.arange(1, N_SHARED + 1))
    assert np.all(design["sharedix"] == np.arange(1, N_SHARED + 1))
    own_1, own_3 = set(subjectim[0, N_SHARED:]), set(subjectim[2, N_SHARED:])
    assert len(own_1) == OWN and not own_1 & own_3
    assert min(own_1 | own_3) > N_SHARED and max(own_1 | own_3) <= N_IMAGES


def test_stim_info_has_41_columns_consistent_with_design(fake):
    written, _, _ = fake
    info = pd.read_csv(written.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv")
    assert info.shape == (N_IMAGES, 41)
    assert list(info.columns[:9]) == [
        "Unnamed: 0",
        "cocoId",
        "cocoSplit",
        "cropBox",
        "loss",
        "nsdId",
        "flagged",
        "BOLD5000",
        "shared1000",
    ]
    assert list(info.columns[-3:]) == [
        "subject8_rep0",
        "subject8_rep1",
        "subject8_rep2",
    ]
    assert info["nsdId"].tolist() == list(range(N_IMAGES))
    assert info["shared1000"].sum() == N_SHARED and info["shared1000"][:N_SHARED].all()
    assert info["cocoId"].is_unique
    design = load_design(written.root)
    order = design["masterordering"].ravel()
    for subject in (1, 2):
        seen = info[info[f"subject{subject}"] == 1]
        assert len(seen) == N_SHARED + OWN
        for rep in range(3):
            trial_ids = seen[f"subject{subject}_rep{rep}"].to_numpy()
            shown = design["subjectim"][subject - 1, order[trial_ids - 1] - 1] - 1
            assert np.array_equal(shown, seen["nsdId"].to_numpy())
        assert np.all(np.diff(seen[[f"subject{subject}_rep{r}" for r in range(3)]], axis=1) > 0)


def test_image_brick_holds_the_images(fake):
    written, images, _ = fake
    with h5py.File(written.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5") as handle:
        assert handle["imgBrick"].dtype == np.uint8
        assert np.array_equal(handle["imgBrick"][:], images)


def test_betas_files_have_released_axis_orders(fake):
    written, _, _ = fake
    directory = written.root / BETAS
    with h5py.File(directory / "betas_session02.hdf5") as handle:
        from_hdf5 = handle["betas"][:]
    from_nifti = nib.load(directory / "betas_session02.nii.gz")
    assert from_hdf5.dtype == np.int16
    assert from_hdf5.shape == (TRIALS_PER_SESSION, *GRID[::-1])
    assert from_nifti.get_data_dtype() == np.int16
    assert from_nifti.shape == (*GRID, TRIALS_PER_SESSION)
    assert np.array_equal(from_hdf5.transpose(3, 2, 1, 0), np.asarray(from_nifti.dataobj))
    assert written.n_sessions == N_SESSIONS
    assert len(list(directory.glob("betas_session*.hdf5"))) == N_SESSIONS


def session_volume(root: Path, session: int) -> np.ndarray:
    """(T, X, Y, Z) percent change of one session of subject 1."""
    with h5py.File(root / BETAS / f"betas_session{session:02d}.hdf5") as handle:
        return handle["betas"][:].transpose(0, 3, 2, 1) / 300.0


def test_region_voxels_respond_to_their_signal(fake):
    written, _, regions = fake
    design = load_design(written.root)
    shown = design["subjectim"][0, design["masterordering"].ravel() - 1] - 1
    first = session_volume(written.root, 1)
    trial_ids = shown[:TRIALS_PER_SESSION]
    for region in regions:
        for (x, y, z), signal in zip(
            written.region_voxels[1][region.name], region.signal.T, strict=True
        ):
            if np.any(first[:, x, y, z]):
                r = np.corrcoef(first[:, x, y, z], signal[trial_ids])[0, 1]
                assert r > 0.5
    # Outside the brain the betas are all zero in every session (out-of-FOV voxels are zero
    # in one session only) and the ROI volumes say "not cortex".
    outside = ~np.any(first != 0, axis=0) & ~np.any(session_volume(written.root, 2), axis=0)
    assert outside.sum() > 0
    visual = np.asarray(nib.load(written.root / ROI_DIR / "prf-visualrois.nii.gz").dataobj)
    assert np.all(visual[outside] == -1)


def test_out_of_fov_voxels_are_zero_in_one_session_only(fake):
    written, _, _ = fake
    assert len(written.out_of_fov[1]) == 3
    for session, (x, y, z) in written.out_of_fov[1]:
        for other in range(1, N_SESSIONS + 1):
            time_course = session_volume(written.root, other)[:, x, y, z]
            assert np.all(time_course == 0) == (other == session)


def test_roi_volumes_and_label_tables(fake):
    written, _, _ = fake
    roi_dir = written.root / ROI_DIR
    visual = np.asarray(nib.load(roi_dir / "prf-visualrois.nii.gz").dataobj)
    assert visual.shape == GRID
    labels = written.region_labels[1]["V1"]
    xyz = written.region_voxels[1]["V1"]
    assert set(labels) == {"V1v", "V1d"}
    assert np.array_equal(visual[tuple(xyz.T)], np.where(labels == "V1v", 1, 2))
    # Noise voxels and other regions' voxels are unlabelled cortex in this file.
    assert np.all(visual[tuple(written.noise_voxels[1].T)] == 0)
    assert np.all(visual[tuple(written.region_voxels[1]["FFA"].T)] == 0)
    assert set(np.unique(visual)) == {-1, 0, 1, 2}
    left = np.asarray(nib.load(roi_dir / "lh.prf-visualrois.nii.gz").dataobj)
    right = np.asarray(nib.load(roi_dir / "rh.prf-visualrois.nii.gz").dataobj)
    assert np.all((left == -1) | (right == -1))
    assert np.array_equal(np.maximum(left, right), visual)
    ctab = written.root / "nsddata/freesurfer/subj01/label/floc-faces.mgz.ctab"
    lines = ctab.read_text().splitlines()
    assert lines == [
        f"{i} {name}" for i, name in enumerate(["Unknown", *NSD_LABEL_NAMES["floc-faces"]])
    ]
    # Subject 3 only has V1, so it has no floc-faces files.
    assert not (written.root / "nsddata/ppdata/subj03/func1pt8mm/roi/floc-faces.nii.gz").exists()


def zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def test_ncsnr_follows_the_nsd_recipe(fake):
    written, _, _ = fake
    root = written.root
    ncsnr = np.asarray(nib.load(root / BETAS / "ncsnr.nii.gz").dataobj)
    design = load_design(root)
    shown = design["subjectim"][0, design["masterordering"].ravel() - 1] - 1
    blanked = {xyz for _, xyz in written.out_of_fov[1]}
    x, y, z = next(v for v in written.region_voxels[1]["FFA"] if tuple(v) not in blanked)
    time_course = np.concatenate(
        [zscore(session_volume(root, s)[:, x, y, z]) for s in range(1, N_SESSIONS + 1)]
    )
    variances = [np.var(time_course[shown == image], ddof=1) for image in np.unique(shown)]
    noise_sd = np.sqrt(np.mean(variances))
    expected = np.sqrt(max(0.0, 1 - noise_sd**2)) / noise_sd
    assert ncsnr[x, y, z] == pytest.approx(expected, rel=1e-5)
    # Signal voxels are far above the noise-only voxels.
    noise = ncsnr[tuple(written.noise_voxels[1].T)]
    signal = ncsnr[tuple(written.region_voxels[1]["V1"].T)]
    assert np.median(signal) > 0.8
    assert np.median(noise) < 0.3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trials_per_session": 7}, "trials_per_session"),
        ({"own_images_per_subject": 200}, "non-shared"),
        ({"subjects": {9: []}}, "subjects"),
        (
            {"subjects": {1: [Region("X", "floc-faces", ["PPA"], np.zeros((50, 3)))]}},
            "labels",
        ),
        (
            {"subjects": {1: [Region("X", "Kastner2015", ["V1v"], np.zeros((50, 3)))]}},
            "file",
        ),
        (
            {"subjects": {1: [Region("X", "floc-faces", ["OFA"], np.zeros((49, 3)))]}},
            "signal",
        ),
    ],
)
def test_invalid_inputs_are_refused(tmp_path, change, message):
    arguments = {
        "n_shared": 10,
        "subjects": {1: []},
        "own_images_per_subject": 20,
        "trials_per_session": 30,
    }
    images = np.zeros((50, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        write_fake_nsd(tmp_path, images, **(arguments | change))


def test_cortex_only_betas_and_a_region_box(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (N_IMAGES, 4, 4, 3), dtype=np.uint8)
    regions = [Region("V1", "prf-visualrois", ["V1v", "V1d"], rng.normal(size=(N_IMAGES, 24)))]
    box = (slice(None), slice(0, 4), slice(1, 5))
    written = write_fake_nsd(
        tmp_path, images, n_shared=N_SHARED, subjects={1: regions},
        own_images_per_subject=OWN, trials_per_session=TRIALS_PER_SESSION, grid=GRID,
        seed=3, n_unlabelled_cortex=10, betas_outside_cortex=False, region_box=box,
    )
    inside = np.zeros(GRID, dtype=bool)
    inside[box] = True
    cortex = np.zeros(GRID, dtype=bool)
    for xyz in (written.region_voxels[1]["V1"], written.noise_voxels[1]):
        assert inside[tuple(xyz.T)].all()
        cortex[tuple(xyz.T)] = True
    has_data = np.any(session_volume(tmp_path, 1) != 0, axis=0)
    assert np.array_equal(has_data & ~cortex, np.zeros(GRID, dtype=bool))
    assert has_data[cortex].mean() > 0.9  # all but out-of-view voxels
    visual = np.asarray(nib.load(tmp_path / ROI_DIR / "prf-visualrois.nii.gz").dataobj)
    assert np.array_equal(visual >= 0, cortex)


def test_real_grid_tree_has_the_released_shapes_and_converts(tmp_path, capsys):
    from nsdbench.demo.nsd_tree import (
        REAL_GRID,
        REAL_GRID_REGIONS,
        main,
        real_grid_box,
        write_real_grid_nsd,
    )

    assert REAL_GRID == (81, 104, 83) and len(REAL_GRID_REGIONS) == 16
    grid = (20, 24, 20)  # the real grid itself takes a minute (see tests/test_nsd_reads.py)
    written = write_real_grid_nsd(
        tmp_path / "nsd", n_sessions=3, grid=grid, trials_per_session=30, voxel_scale=0.03,
        write_nifti=True,
    )
    with h5py.File(written.root / BETAS / "betas_session03.hdf5") as handle:
        assert handle["betas"].shape == (30, *grid[::-1]) and handle["betas"].dtype == np.int16
    assert nib.load(written.root / BETAS / "betas_session03.nii.gz").shape == (*grid, 30)
    box = real_grid_box(grid)
    for xyz in written.region_voxels[1].values():
        assert np.all(xyz[:, 1] < box[1].stop) and np.all(xyz[:, 2] >= box[2].start)
    with pytest.warns(UserWarning, match="skipped in scoring"):  # the shrunken small ROIs
        main(["convert", str(written.root), str(tmp_path / "out"), "--n-test", "5",
              "--n-reliability", "5", "--betas-format", "nifti"])
    printed = capsys.readouterr().out
    assert "VWFA-2" in printed and "train_images" in printed
    assert (tmp_path / "out" / "sub-01.zarr").is_dir()
    voxels = pd.read_parquet(tmp_path / "out" / "voxels-sub-01.parquet")
    assert set(voxels["roi"]) == {name for name, *_ in REAL_GRID_REGIONS}
