"""Response sets: z-scoring, averaging, reliability, voxel selection, image sets, stores."""

import shutil
import warnings
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import zarr

from nsdbench.brain import (
    SUMMARY_COLUMNS,
    brain_summary,
    build_subject_responses,
    read_response_store,
    read_stimuli_store,
    shared_train_ids,
    split_half_reliability,
    store_image_counts,
    write_response_store,
    write_stimuli_store,
    write_summary,
    zscore_session,
)
from nsdbench.demo.nsd_tree import Region, write_fake_nsd
from nsdbench.nsd import NsdError, NsdTree, RoiSpec

N_SHARED = 40
OWN = 70
N_IMAGES = N_SHARED + 2 * OWN
TRIALS_PER_SESSION = 66
N_SESSIONS = 3 * (N_SHARED + OWN) // TRIALS_PER_SESSION
GRID = (8, 8, 6)
N_TEST = 20
N_RELIABILITY = 40
ROIS = [
    RoiSpec("V1", "prf-visualrois", ["V1v", "V1d"]),
    RoiSpec("FFA-1", "floc-faces", ["FFA-1"]),
    RoiSpec("OPA", "floc-places", ["OPA"]),  # pure noise
]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (N_IMAGES, 6, 5, 3), dtype=np.uint8)
    regions = [
        Region("V1", "prf-visualrois", ["V1v", "V1d"], rng.normal(size=(N_IMAGES, 30))),
        Region("FFA-1", "floc-faces", ["FFA-1"], rng.normal(size=(N_IMAGES, 16))),
        Region("OPA", "floc-places", ["OPA"], np.zeros((N_IMAGES, 30))),
    ]
    written = write_fake_nsd(
        tmp_path_factory.mktemp("nsd"),
        images,
        n_shared=N_SHARED,
        subjects={1: regions, 2: regions},
        own_images_per_subject=OWN,
        trials_per_session=TRIALS_PER_SESSION,
        grid=GRID,
        noise_sd=1.0,
        seed=5,
        write_nifti=True,
    )
    return written, images


@pytest.fixture(scope="module")
def tree(fake):
    return NsdTree(fake[0].root)


def build(tree, **options):
    """Build subject 1's responses; the pure-noise ROI's 'too few voxels' warning is expected."""
    arguments = {"n_test": N_TEST, "n_reliability": N_RELIABILITY} | options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_subject_responses(tree, 1, ROIS, **arguments)


@pytest.fixture(scope="module")
def responses(tree):
    return build(tree)


# ---------------------------------------------------------------------------- numerics
def test_zscore_session_matches_numpy_and_masks_empty_voxels():
    rng = np.random.default_rng(0)
    betas = rng.normal(3.0, 2.0, (50, 6)).astype(np.float32)
    betas[:, 2] = 0.0  # out of the field of view in this session
    betas[:, 4] = 1.5  # constant: no information either
    zscored, valid = zscore_session(betas)
    assert zscored.dtype == np.float32
    assert valid.tolist() == [True, True, False, True, False, True]
    good = betas[:, valid].astype(np.float64)
    expected = (good - good.mean(axis=0)) / good.std(axis=0, ddof=0)
    np.testing.assert_allclose(zscored[:, valid], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(zscored[:, valid], scipy.stats.zscore(good), rtol=1e-5, atol=1e-6)
    assert np.all(np.isnan(zscored[:, ~valid]))


def test_split_half_reliability_matches_scipy_pearsonr():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=(30, 1, 5))
    repetitions = signal + rng.normal(scale=[0.5, 1.0, 2.0, 4.0, 8.0], size=(30, 3, 5))
    expected = [
        np.mean(
            [
                scipy.stats.pearsonr(repetitions[:, i, v], repetitions[:, j, v])[0]
                for i, j in ((0, 1), (0, 2), (1, 2))
            ]
        )
        for v in range(5)
    ]
    np.testing.assert_allclose(split_half_reliability(repetitions), expected, rtol=1e-10)
    repetitions[3, 1, 2] = np.nan
    assert np.isnan(split_half_reliability(repetitions)[2])


# ------------------------------------------------------------------ a direct oracle
def session_volume(tree: NsdTree, session: int, betas_format: str) -> np.ndarray:
    """(X, Y, Z, T) percent change of one session of subject 1, read whole."""
    path = tree.betas_path(1, session, betas_format)
    if betas_format == "hdf5":
        with h5py.File(path) as handle:
            return handle["betas"][:].transpose(3, 2, 1, 0) / 300.0
    return np.asarray(nib.load(path).dataobj) / 300.0


def direct_repetitions(
    tree: NsdTree, xyz: np.ndarray, nsd_ids: np.ndarray, betas_format: str = "hdf5"
) -> np.ndarray:
    """(images, 3, voxels) z-scored betas, computed straight from the files and the CSV."""
    sessions = []
    for session in range(1, N_SESSIONS + 1):
        volume = session_volume(tree, session, betas_format)
        values = volume[tuple(xyz.T)].T  # (T, voxels)
        with np.errstate(invalid="ignore", divide="ignore"):
            sessions.append((values - values.mean(axis=0)) / values.std(axis=0))
    zscored = np.concatenate(sessions)
    info = pd.read_csv(tree.stim_info_path, index_col=0)
    trial_ids = info.loc[nsd_ids, [f"subject1_rep{rep}" for rep in range(3)]].to_numpy()
    return zscored[trial_ids - 1]


def kept_xyz(voxels: pd.DataFrame, roi: str) -> np.ndarray:
    rows = voxels[(voxels["roi"] == roi) & voxels["kept"]]
    return rows[["x", "y", "z"]].to_numpy()


@pytest.mark.parametrize("betas_format", ["hdf5", "nifti"])
def test_responses_equal_direct_zscore_and_average(tree, responses, betas_format):
    if betas_format == "nifti":
        responses = build(tree, betas_format="nifti")
    for roi in ("V1", "FFA-1"):
        xyz = kept_xyz(responses.voxels, roi)
        for split, nsd_ids in (
            ("train", responses.train_nsd_ids),
            ("test", responses.test_nsd_ids),
        ):
            expected = direct_repetitions(tree, xyz, nsd_ids, betas_format).mean(axis=1)
            actual = getattr(responses, split)[roi]
            assert actual.dtype == np.float32 and actual.shape == (
                len(nsd_ids),
                len(xyz),
            )
            np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_reliability_equals_pearsonr_over_the_reliability_images(tree, responses):
    table = responses.voxels[responses.voxels["roi"] == "V1"]
    xyz = table[["x", "y", "z"]].to_numpy()
    repetitions = direct_repetitions(tree, xyz, responses.reliability_nsd_ids)
    for voxel, reliability in enumerate(table["reliability"]):
        if np.isnan(repetitions[:, :, voxel]).any():
            assert np.isnan(reliability)
            continue
        pairs = [
            scipy.stats.pearsonr(repetitions[:, i, voxel], repetitions[:, j, voxel])[0]
            for i, j in ((0, 1), (0, 2), (1, 2))
        ]
        assert reliability == pytest.approx(np.mean(pairs), abs=1e-5)


def test_reliable_voxels_are_kept_and_noise_voxels_mostly_not(responses, fake):
    voxels = responses.voxels
    v1 = voxels[voxels["roi"] == "V1"]
    assert len(v1) == 30
    assert np.all(v1.loc[v1["kept"], "reliability"] >= 0.1)
    assert v1["kept"].mean() >= 0.85
    noise = voxels[voxels["roi"] == "OPA"]
    assert noise["kept"].mean() < 0.5
    assert np.nanmean(noise["reliability"]) < 0.1 < np.nanmean(v1["reliability"])
    assert list(voxels.columns) == [
        "subject",
        "roi",
        "x",
        "y",
        "z",
        "reliability",
        "ncsnr",
        "kept",
    ]
    assert responses.kept_counts() == {
        roi: int(voxels.loc[voxels["roi"] == roi, "kept"].sum()) for roi in ("V1", "FFA-1", "OPA")
    }


def test_voxels_out_of_view_in_any_session_are_not_kept(responses, fake):
    written, _ = fake
    blanked = {xyz for _, xyz in written.out_of_fov[1]}
    table = responses.voxels.set_index(["x", "y", "z"])
    in_rois = [xyz for xyz in blanked if xyz in table.index]
    assert in_rois  # the fake tree blanks region voxels
    for xyz in in_rois:
        assert not table.loc[[xyz], "kept"].any()


def test_image_sets_are_disjoint_and_seeded(tree, responses):
    train, test, reliability = (
        responses.train_nsd_ids,
        responses.test_nsd_ids,
        responses.reliability_nsd_ids,
    )
    assert np.array_equal(train, np.arange(N_SHARED))  # shared images in sorted order
    assert len(test) == N_TEST and len(reliability) == N_RELIABILITY
    assert np.all(np.diff(test) > 0)
    assert not set(train) & set(test)
    assert not set(train) & set(reliability)
    assert not set(test) & set(reliability)
    own = set(tree.read_design().subjectim[0, N_SHARED:] - 1)
    assert set(test) <= own and set(reliability) <= own
    again = build(tree)
    assert np.array_equal(again.test_nsd_ids, test)
    assert np.array_equal(again.train["V1"], responses.train["V1"])
    other_seed = build(tree, seed=1)
    assert not np.array_equal(other_seed.test_nsd_ids, test)


def test_hdf5_and_nifti_give_the_same_responses(tree, responses):
    from_nifti = build(tree, betas_format="nifti")
    pd.testing.assert_frame_equal(from_nifti.voxels, responses.voxels)
    for roi in responses.rois:
        np.testing.assert_array_equal(from_nifti.train[roi], responses.train[roi])


def test_ncsnr_selection_uses_the_released_volume(tree, responses):
    by_ncsnr = build(tree, selection="ncsnr", ncsnr_threshold=0.3)
    voxels = by_ncsnr.voxels
    ncsnr = tree.read_ncsnr(1)[voxels["x"], voxels["y"], voxels["z"]]
    np.testing.assert_allclose(voxels["ncsnr"], ncsnr)
    valid = responses.voxels["reliability"].notna()  # has data in every session
    np.testing.assert_array_equal(voxels["kept"], valid & (ncsnr >= 0.3))


def test_only_images_with_three_repetitions_on_disk_are_eligible(fake, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(fake[0].root, root)
    tree = NsdTree(root)
    (tree.betas_dir(1) / "betas_session02.hdf5").unlink()
    partial = build(tree, n_test=5, n_reliability=10)
    design = tree.read_design()
    lost = set(design.subject_trials(1, 2 * TRIALS_PER_SESSION)[TRIALS_PER_SESSION:])
    for nsd_ids in (
        partial.train_nsd_ids,
        partial.test_nsd_ids,
        partial.reliability_nsd_ids,
    ):
        assert not set(nsd_ids) & lost
    assert len(partial.train_nsd_ids) < N_SHARED


def test_small_rois_warn_with_subject_and_name(tree):
    with pytest.warns(UserWarning, match="subject 1 ROI OPA: .* skipped in scoring"):
        build_subject_responses(tree, 1, ROIS, n_test=N_TEST, n_reliability=N_RELIABILITY)


def test_study_subjects_share_one_train_set(fake, tmp_path):
    root = tmp_path / "nsd"
    shutil.copytree(fake[0].root, root)
    tree = NsdTree(root)
    # Subject 2 lost a session: the shared images shown there are eligible for subject 1 only.
    (tree.betas_dir(2) / "betas_session03.hdf5").unlink()
    common = shared_train_ids(tree, [1, 2])
    design = tree.read_design()
    lost = design.subject_trials(2, 3 * TRIALS_PER_SESSION)[2 * TRIALS_PER_SESSION :]
    assert np.array_equal(common, np.setdiff1d(np.arange(N_SHARED), lost))
    assert np.array_equal(shared_train_ids(tree, [1]), np.arange(N_SHARED))
    alone = build(tree)
    assert np.array_equal(alone.train_nsd_ids, np.arange(N_SHARED))
    for subject in (1, 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            study = build_subject_responses(
                tree, subject, ROIS, n_test=5, n_reliability=10, subjects=[1, 2]
            )
        assert np.array_equal(study.train_nsd_ids, common)
        assert study.train["V1"].shape[0] == common.size
    # Subject 1's responses to the common images are its own, whatever the set.
    rows = np.searchsorted(alone.train_nsd_ids, common)
    study_1 = build(tree, subjects=[1, 2])
    np.testing.assert_array_equal(study_1.train["V1"], alone.train["V1"][rows])


def test_summary_counts_kept_voxels_and_images_per_split(responses, tmp_path):
    path = tmp_path / "sub-01.zarr"
    write_response_store(path, responses)
    counts = store_image_counts(path)
    assert counts == {"train": N_SHARED, "test": N_TEST, "reliability": N_RELIABILITY}
    second = responses.voxels.assign(subject=2)
    voxels = pd.concat([responses.voxels, second], ignore_index=True)
    summary = brain_summary(voxels, {1: counts, 2: {"train": N_SHARED, "test": 7}})
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary[["subject", "roi"]].values.tolist() == [
        [subject, roi] for subject in (1, 2) for roi in ("V1", "FFA-1", "OPA")
    ]
    first = summary[summary["subject"] == 1].set_index("roi")
    assert first["voxels"].to_dict() == {"V1": 30, "FFA-1": 16, "OPA": 30}
    assert first["kept"].to_dict() == responses.kept_counts()
    assert first["scored"].to_dict() == {
        roi: kept >= 10 for roi, kept in responses.kept_counts().items()
    }
    assert not first.loc["OPA", "scored"]
    assert (first["train_images"] == N_SHARED).all() and (first["test_images"] == N_TEST).all()
    second_rows = summary[summary["subject"] == 2]
    assert (second_rows["test_images"] == 7).all()
    assert (second_rows["reliability_images"] == 0).all()
    written = write_summary(summary, tmp_path / "brain" / "summary.tsv")
    pd.testing.assert_frame_equal(pd.read_csv(written, sep="\t"), summary)
    assert siblings(written) == ["summary.tsv"]


def test_bad_requests_are_refused(fake, tree, tmp_path):
    with pytest.raises(ValueError, match="exceeds"):
        build(tree, n_test=50, n_reliability=50)
    with pytest.raises(ValueError, match="selection"):
        build(tree, selection="best")
    root = tmp_path / "nsd"
    shutil.copytree(fake[0].root, root)
    without_ncsnr = NsdTree(root)
    without_ncsnr.ncsnr_path(1).unlink()
    with pytest.raises(NsdError, match="ncsnr.nii.gz"):
        build(without_ncsnr, selection="ncsnr")
    assert build(without_ncsnr).voxels["ncsnr"].isna().all()


# ------------------------------------------------------------------------------ stores
def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_response_store_round_trip_is_atomic(responses, tmp_path):
    path = tmp_path / "brain" / "sub-01.zarr"
    write_response_store(path, responses)
    write_response_store(path, responses)  # overwriting leaves no temporary siblings
    assert siblings(path) == ["sub-01.zarr"]
    stored = read_response_store(path)
    assert stored.subject == 1 and stored.rois == ["V1", "FFA-1", "OPA"]
    group = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(group["reliability_nsd_ids"][:], responses.reliability_nsd_ids)
    np.testing.assert_array_equal(stored.train_nsd_ids, responses.train_nsd_ids)
    np.testing.assert_array_equal(stored.test_nsd_ids, responses.test_nsd_ids)
    for roi in responses.rois:
        np.testing.assert_array_equal(stored.train[roi], responses.train[roi])
        np.testing.assert_array_equal(stored.test[roi], responses.test[roi])
    assert stored.kept_counts() == responses.kept_counts()
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    assert group.attrs["kept_counts"] == responses.kept_counts()


def test_failed_write_leaves_nothing_that_looks_finished(responses, tmp_path):
    path = tmp_path / "sub-01.zarr"
    broken = type(responses)(**{**vars(responses), "train": {"V1": object()}})
    with pytest.raises((TypeError, ValueError)):
        write_response_store(path, broken)
    assert siblings(path) == []


def test_stimuli_store_round_trip(tree, fake, tmp_path):
    _, images = fake
    nsd_ids = np.array([12, 3, 150, 7])
    path = tmp_path / "stimuli" / "test.zarr"
    write_stimuli_store(path, tree, nsd_ids)
    stored = read_stimuli_store(path)
    np.testing.assert_array_equal(stored.nsd_ids, nsd_ids)
    assert stored.images.dtype == np.uint8 and stored.images.chunks == (1, 6, 5, 3)
    np.testing.assert_array_equal(stored.images[:], images[nsd_ids])
    assert siblings(path) == ["test.zarr"]
