"""Bad input: each gets one clear error naming the file and what was expected.

Every case damages a private copy of a small fake tree and runs the converter's entry point,
``build_subject_responses``, as the workflow's brain job does.
"""

import logging
import shutil
import warnings

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from nsdbench.brain import build_subject_responses, write_stimuli_store
from nsdbench.demo.nsd_tree import Region, write_fake_nsd
from nsdbench.fit import BrainTargets
from nsdbench.nsd import NsdError, NsdTree, RoiSpec

N_SHARED = 40
OWN = 70
N_IMAGES = N_SHARED + OWN
TRIALS_PER_SESSION = 66
GRID = (8, 8, 6)
ROIS = [
    RoiSpec("V1", "prf-visualrois", ["V1v", "V1d"]),
    RoiSpec("FFA-1", "floc-faces", ["FFA-1"]),
    RoiSpec("OPA", "floc-places", ["OPA"]),  # pure noise: too few reliable voxels
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (N_IMAGES, 4, 4, 3), dtype=np.uint8)
    regions = [
        Region("V1", "prf-visualrois", ["V1v", "V1d"], rng.normal(size=(N_IMAGES, 30))),
        Region("FFA-1", "floc-faces", ["FFA-1"], rng.normal(size=(N_IMAGES, 16))),
        Region("OPA", "floc-places", ["OPA"], np.zeros((N_IMAGES, 30))),
    ]
    written = write_fake_nsd(
        tmp_path_factory.mktemp("nsd"),
        images,
        n_shared=N_SHARED,
        subjects={1: regions},
        own_images_per_subject=OWN,
        trials_per_session=TRIALS_PER_SESSION,
        grid=GRID,
        seed=8,
        write_nifti=True,
    )
    return written.root


@pytest.fixture()
def tree(pristine, tmp_path):
    """A private copy of the tree that a test may damage."""
    root = tmp_path / "nsd"
    shutil.copytree(pristine, root)
    return NsdTree(root)


def build(tree, **options):
    arguments = {"n_test": 20, "n_reliability": 40, "rois": ROIS} | options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # OPA is expected to be too small
        return build_subject_responses(tree, 1, arguments.pop("rois"), **arguments)


def assert_error_names(path, expected, **options):
    """Building fails with an NsdError that names ``path`` and says what was ``expected``."""
    with pytest.raises(NsdError) as caught:
        build(options.pop("tree"), **options)
    message = str(caught.value)
    assert str(path) in message and expected in message, message


def rewrite_hdf5(path, transform):
    with h5py.File(path, "r+") as handle:
        values = transform(handle["betas"][:])
        del handle["betas"]
        handle["betas"] = values


def rewrite_nifti(path, transform):
    values = transform(np.asarray(nib.load(path).dataobj))
    image = nib.Nifti1Image(values, np.eye(4))
    image.header.set_data_dtype(values.dtype)
    nib.save(image, path)


# ------------------------------------------------------------------------ missing files
@pytest.mark.parametrize(
    ("locate", "expected"),
    [
        (lambda t: t.expdesign_path, "missing file; expected the NSD design"),
        (lambda t: t.stim_info_path, "missing file; expected the merged stimulus info CSV"),
        (lambda t: t.roi_path(1, "floc-faces"), "missing file; expected an integer ROI volume"),
        (lambda t: t.label_table_path(1, "floc-places"), "missing file; expected a label table"),
        (lambda t: t.betas_dir(1), "missing directory; expected betas_sessionNN files"),
    ],
    ids=["design", "stim-info", "roi-volume", "label-table", "betas-directory"],
)
def test_a_missing_file_is_named(tree, locate, expected):
    path = locate(tree)
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert_error_names(path, expected, tree=tree)


def test_a_missing_ncsnr_volume_is_named_when_selection_needs_it(tree):
    tree.ncsnr_path(1).unlink()
    assert_error_names(tree.ncsnr_path(1), "missing file; selection='ncsnr'", tree=tree,
                       selection="ncsnr")


def test_a_missing_stimulus_brick_is_named(tree, tmp_path):
    tree.stimuli_path.unlink()
    with pytest.raises(NsdError, match="missing file; expected an hdf5 file with dataset"):
        write_stimuli_store(tmp_path / "train.zarr", tree, np.arange(3))


def test_a_design_without_stimpattern_is_refused(tree):
    design = scipy.io.loadmat(tree.expdesign_path)
    del design["stimpattern"]
    scipy.io.savemat(tree.expdesign_path, {k: v for k, v in design.items() if k[0] != "_"})
    assert_error_names(tree.expdesign_path, "missing field 'stimpattern'", tree=tree)


# -------------------------------------------------------------------------- wrong shape
def test_hdf5_betas_off_the_roi_grid_are_named(tree):
    path = tree.betas_path(1, 2)
    rewrite_hdf5(path, lambda betas: betas[:, :5])  # (T, Z, Y, X): one z plane short
    expected = "expected int16 betas (T, Z, Y, X) of shape (T, 6, 8, 8) on the ROI volumes' grid"
    assert_error_names(path, expected, tree=tree)


def test_nifti_betas_off_the_roi_grid_are_named(tree):
    path = tree.betas_path(1, 3, "nifti")
    rewrite_nifti(path, lambda betas: betas[:, :7])
    expected = "expected int16 betas (X, Y, Z, T) of shape (8, 8, 6, T) on the ROI volumes' grid"
    assert_error_names(path, expected, tree=tree, betas_format="nifti")


def test_float_betas_are_named(tree):
    path = tree.betas_path(1, 1)
    rewrite_hdf5(path, lambda betas: betas.astype(np.float32))
    assert_error_names(path, "expected int16 betas", tree=tree)


def test_an_roi_volume_on_another_grid_is_named(tree):
    path = tree.roi_path(1, "floc-faces")
    rewrite_nifti(path, lambda volume: volume[:, :, :5])
    assert_error_names(path, "expected an (X, Y, Z) volume of shape (8, 8, 6)", tree=tree)


def test_a_4d_roi_volume_is_named(tree):
    path = tree.roi_path(1, "prf-visualrois")
    rewrite_nifti(path, lambda volume: volume[..., None])
    assert_error_names(path, "expected a 3-D (X, Y, Z) volume", tree=tree)


def test_an_ncsnr_volume_on_another_grid_is_named(tree):
    path = tree.ncsnr_path(1)
    rewrite_nifti(path, lambda volume: volume[:-1])
    assert_error_names(path, "expected shape (8, 8, 6) like the ROIs", tree=tree)


def test_a_design_with_a_wrong_field_shape_is_named(tree):
    design = scipy.io.loadmat(tree.expdesign_path)
    design["subjectim"] = design["subjectim"][:7]
    scipy.io.savemat(tree.expdesign_path, {k: v for k, v in design.items() if k[0] != "_"})
    assert_error_names(tree.expdesign_path, "subjectim must be (8, K)", tree=tree)


# ------------------------------------------------------------------ trials vs. design
@pytest.mark.parametrize("betas_format", ["hdf5", "nifti"])
def test_a_session_with_the_wrong_trial_count_is_named(tree, betas_format):
    path = tree.betas_path(1, 4, betas_format)
    if betas_format == "hdf5":
        rewrite_hdf5(path, lambda betas: betas[:-5])
    else:
        rewrite_nifti(path, lambda betas: betas[..., :-5])
    expected = f"holds {TRIALS_PER_SESSION - 5} trials but the design (nsd_expdesign.mat) "
    assert_error_names(path, expected + f"expects {TRIALS_PER_SESSION}", tree=tree,
                       betas_format=betas_format)


def test_a_session_the_design_lacks_is_named(tree):
    n_sessions = tree.design.n_sessions
    extra = tree.betas_path(1, n_sessions + 1)
    shutil.copy(tree.betas_path(1, 1), extra)
    assert_error_names(extra, f"session {n_sessions + 1} is not in the design", tree=tree)


def test_a_stim_info_csv_that_disagrees_with_the_design_is_named(tree):
    info = pd.read_csv(tree.stim_info_path, index_col=0)
    first_shared = info.index[0]
    info.loc[first_shared, "subject1_rep0"] += 1  # a trial id off by one
    info.to_csv(tree.stim_info_path)
    assert_error_names(tree.stim_info_path, f"for nsd id {first_shared}, but", tree=tree)


# ---------------------------------------------------------------------------- the ROIs
def test_an_roi_label_missing_from_the_label_table_is_named(tree):
    wrong = RoiSpec("PPA", "floc-faces", ["PPA"])
    path = tree.label_table_path(1, "floc-faces")
    assert_error_names(path, "ROI 'PPA' asks for labels ['PPA']; the table has", tree=tree,
                       rois=[ROIS[0], wrong])


def test_an_roi_with_too_few_kept_voxels_warns_and_is_not_scored(tree, tmp_path, caplog):
    with pytest.warns(UserWarning) as caught:
        responses = build_subject_responses(tree, 1, ROIS, n_test=20, n_reliability=40)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1
    kept = responses.kept_counts()["OPA"]
    assert messages[0] == (
        f"subject 1 ROI OPA: only {kept} voxels pass reliability >= 0.1 (fewer than 10); "
        "the ROI is skipped in scoring"
    )
    # Scoring (fit, generalize, ceilings) goes through BrainTargets, which leaves it out.
    with caplog.at_level(logging.WARNING, logger="nsdbench.fit"):
        targets = BrainTargets.from_stores({"sub-01.zarr": responses}, responses.train_nsd_ids)
    assert set(targets.columns) == {("01", "V1"), ("01", "FFA-1")}
    assert "ROI OPA has" in caplog.text and "skipped in scoring" in caplog.text


def test_bad_session_files_are_refused_before_any_betas_are_read(tree, monkeypatch):
    last = tree.design.n_sessions
    rewrite_hdf5(tree.betas_path(1, last), lambda betas: betas[:-1])
    reads = []
    original = NsdTree.read_session_betas

    def counting(self, *args, **options):
        reads.append(args)
        return original(self, *args, **options)

    monkeypatch.setattr(NsdTree, "read_session_betas", counting)
    assert_error_names(tree.betas_path(1, last), "trials but the design", tree=tree)
    assert reads == []  # refused from the headers, not after reading sessions 1..last-1
