"""Trial -> image -> repetition mapping and preprocessing on a tree written by hand.

Every number here is written out: a 2-session design of 12 trials, the 1-based files NSD
releases, and betas whose z-scores and averages are recomputed with plain numpy at the rows
the mapping below says. HDF5 and NIfTI betas hold the same values.
"""

import shutil

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from nsdbench.brain import build_subject_responses, trial_table
from nsdbench.nsd import NsdTree, RoiSpec

# 10k index (1-based) shown on each of the 12 trials; sessions are trials 0-5 and 6-11.
MASTERORDERING = [3, 1, 4, 1, 2, 3, 2, 4, 3, 1, 4, 2]
# 73k ids (1-based) of 10k indices 1..4: the 2 shared images (73k 1, 2), then own images.
SUBJECTIM_1 = [1, 2, 10, 7]
SUBJECTIM_2 = [1, 2, 5, 3]
# Hand-derived from the two lines above, for subject 1 (nsd ids are 0-based 73k ids):
# trial: 0  1  2  3  4  5  6  7  8  9 10 11
# 10k:   3  1  4  1  2  3  2  4  3  1  4  2
# nsd:   9  0  6  0  1  9  1  6  9  0  6  1
# rep:   0  0  0  1  0  1  1  1  2  2  2  2
EXPECTED_NSD_1 = [9, 0, 6, 0, 1, 9, 1, 6, 9, 0, 6, 1]
EXPECTED_REP = [0, 0, 0, 1, 0, 1, 1, 1, 2, 2, 2, 2]
# (session, row in the session file) of each presentation, per nsd id of subject 1.
PRESENTATIONS_1 = {
    0: [(1, 1), (1, 3), (2, 3)],
    1: [(1, 4), (2, 0), (2, 5)],
    6: [(1, 2), (2, 1), (2, 4)],
    9: [(1, 0), (1, 5), (2, 2)],
}
N_IMAGES = 10
GRID = (3, 2, 2)
V1 = RoiSpec("V1", "prf-visualrois", ["V1v", "V1d"])
V1_VOXELS = [(0, 0, 0), (1, 0, 1), (2, 1, 1)]  # labels 1 (V1v), 2 (V1d), 1
EMPTY_IN_SESSION_2 = (1, 0, 1)  # out of the field of view in session 2


def write_design(root):
    subjectim = np.tile(np.array(SUBJECTIM_2), (8, 1))
    subjectim[0] = SUBJECTIM_1
    stimpattern = np.zeros((2, 12, 1), dtype=np.uint8)
    stimpattern[:, :6, 0] = 1  # 6 stimulus trials per session
    path = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    path.parent.mkdir(parents=True)
    scipy.io.savemat(
        path,
        {
            "masterordering": np.array([MASTERORDERING]),
            "subjectim": subjectim,
            "sharedix": np.array([[1, 2]]),
            "basiccnt": np.array([[2, 2], [2, 2], [0, 0]]),
            "stimpattern": stimpattern,
        },
    )


def write_stim_info(root):
    info = pd.DataFrame(
        {
            "cocoId": np.arange(N_IMAGES) + 100,
            "nsdId": np.arange(N_IMAGES),
            "shared1000": np.arange(N_IMAGES) < 2,
        }
    )
    for subject in range(1, 9):
        for rep in range(3):
            info[f"subject{subject}_rep{rep}"] = 0
    for nsd_id, trials in {0: [2, 4, 10], 1: [5, 7, 12], 6: [3, 8, 11], 9: [1, 6, 9]}.items():
        info.loc[nsd_id, [f"subject1_rep{rep}" for rep in range(3)]] = trials  # 1-based
    info.to_csv(root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv")


def write_nifti(path, volume):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(volume, np.eye(4))
    image.header.set_data_dtype(volume.dtype)
    nib.save(image, path)


def session_values(session):
    """(X, Y, Z, 6) int16 betas x 300 of a session, a fixed pseudo-random pattern."""
    rng = np.random.default_rng(session)
    values = rng.integers(-900, 900, (*GRID, 6)).astype(np.int16)
    if session == 2:
        values[EMPTY_IN_SESSION_2] = 0
    return values


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("hand-nsd")
    write_design(root)
    write_stim_info(root)
    betas_dir = root / "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    betas_dir.mkdir(parents=True)
    for session in (1, 2):
        values = session_values(session)
        with h5py.File(betas_dir / f"betas_session{session:02d}.hdf5", "w") as handle:
            handle["betas"] = values.transpose(3, 2, 1, 0)  # h5py (T, Z, Y, X)
        write_nifti(betas_dir / f"betas_session{session:02d}.nii.gz", values)
    write_nifti(betas_dir / "ncsnr.nii.gz", np.ones(GRID, dtype=np.float32))
    roi = np.full(GRID, -1, dtype=np.int16)
    roi[0, 1, :] = 0  # unlabelled cortex
    for (x, y, z), label in zip(V1_VOXELS, [1, 2, 1], strict=True):
        roi[x, y, z] = label
    write_nifti(root / "nsddata/ppdata/subj01/func1pt8mm/roi/prf-visualrois.nii.gz", roi)
    ctab = root / "nsddata/freesurfer/subj01/label/prf-visualrois.mgz.ctab"
    ctab.parent.mkdir(parents=True)
    names = ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
    ctab.write_text("".join(f"{i} {name}\n" for i, name in enumerate(names)))
    return NsdTree(root)


def test_trial_table_matches_the_hand_mapping(tree):
    trials = trial_table(tree, 1, [1, 2])
    assert trials["session"].tolist() == [1] * 6 + [2] * 6
    assert trials["row"].tolist() == list(range(6)) * 2
    assert trials["trial"].tolist() == list(range(12))
    assert trials["nsd_id"].tolist() == EXPECTED_NSD_1
    assert trials["rep"].tolist() == EXPECTED_REP
    assert (trials["n_reps"] == 3).all()
    # Subject 2 sees the same 10k order through its own subjectim row: 10k 3 -> 73k 5 -> 4.
    assert trial_table(tree, 2, [1, 2])["nsd_id"].tolist() == [4, 0, 2, 0, 1, 4, 1, 2, 4, 0, 2, 1]


def test_repetitions_count_only_the_sessions_given(tree):
    first_session = trial_table(tree, 1, [1])
    assert first_session["nsd_id"].tolist() == EXPECTED_NSD_1[:6]
    assert first_session.groupby("nsd_id")["n_reps"].first().to_dict() == {0: 2, 1: 1, 6: 1, 9: 2}
    second_session = trial_table(tree, 1, [2])
    assert second_session["trial"].tolist() == list(range(6, 12))
    assert second_session["rep"].tolist() == [0, 0, 0, 0, 1, 1]  # reps among trials on disk


@pytest.mark.parametrize("betas_format", ["hdf5", "nifti"])
def test_betas_are_int16_over_300_in_both_formats(tree, betas_format):
    mask = np.zeros(GRID, dtype=bool)
    mask[tuple(np.array(V1_VOXELS).T)] = True
    betas = tree.read_session_betas(1, 1, mask, betas_format)
    raw = session_values(1)[tuple(np.array(V1_VOXELS).T)].T  # (6 trials, 3 voxels)
    np.testing.assert_array_equal(betas, raw.astype(np.float32) / np.float32(300))


def numpy_zscores(session):
    """(6 trials, X, Y, Z) z-scores over the session's trials (ddof=0), NaN where all zero."""
    values = session_values(session).astype(np.float64) / 300
    with np.errstate(invalid="ignore", divide="ignore"):
        zscored = (values - values.mean(axis=3, keepdims=True)) / values.std(axis=3, keepdims=True)
    return np.moveaxis(zscored, 3, 0)


@pytest.mark.parametrize("betas_format", ["hdf5", "nifti"])
def test_responses_average_the_zscores_at_the_hand_mapped_rows(tree, betas_format):
    with pytest.warns(UserWarning, match="only 2 voxels"):  # a 3-voxel ROI is too small to score
        responses = build_subject_responses(
            tree, 1, [V1], n_test=1, n_reliability=1, selection="ncsnr", betas_format=betas_format
        )
    zscores = {session: numpy_zscores(session) for session in (1, 2)}
    kept = [xyz for xyz in V1_VOXELS if xyz != EMPTY_IN_SESSION_2]

    def expected(nsd_id):
        return [
            np.mean([zscores[session][row][xyz] for session, row in PRESENTATIONS_1[nsd_id]])
            for xyz in kept
        ]

    assert responses.train_nsd_ids.tolist() == [0, 1]
    assert sorted([*responses.test_nsd_ids, *responses.reliability_nsd_ids]) == [6, 9]
    np.testing.assert_allclose(responses.train["V1"], [expected(0), expected(1)], rtol=1e-5)
    np.testing.assert_allclose(
        responses.test["V1"], [expected(responses.test_nsd_ids[0])], rtol=1e-5
    )
    # The voxel all zero in session 2 is masked: in the table, never kept.
    voxels = responses.voxels
    assert [tuple(row) for row in voxels[["x", "y", "z"]].to_numpy()] == V1_VOXELS
    assert voxels["kept"].tolist() == [xyz != EMPTY_IN_SESSION_2 for xyz in V1_VOXELS]


def test_trials_per_session_come_from_stimpattern_not_basiccnt(tree, tmp_path):
    # basiccnt read as first/second/third presentations per session instead of images shown
    # once/twice/three times: 1*4 + 2*2 = 8 "trials" in session 1. The count must not change.
    root = tmp_path / "nsd"
    shutil.copytree(tree.root, root)
    design = scipy.io.loadmat(root / "nsddata/experiments/nsd/nsd_expdesign.mat")
    design["basiccnt"] = np.array([[4, 0], [2, 2], [0, 4]])
    scipy.io.savemat(
        root / "nsddata/experiments/nsd/nsd_expdesign.mat",
        {key: value for key, value in design.items() if not key.startswith("__")},
    )
    other = NsdTree(root)
    assert [other.design.trials_in_session(s) for s in (1, 2)] == [6, 6]
    assert trial_table(other, 1, [1, 2])["nsd_id"].tolist() == EXPECTED_NSD_1
