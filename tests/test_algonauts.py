"""The Algonauts 2023 reader: a tiny fake release with planted values, read into the stores."""

import pickle

import numpy as np
import pytest
from PIL import Image

from nsdbench.algonauts import AlgonautsError, AlgonautsTree, read_label_mapping
from nsdbench.brain import (
    build_responses,
    open_brain_source,
    read_response_store,
    read_stimuli_store,
    study_train_ids,
    write_response_store,
    write_stimuli_store,
)
from nsdbench.nsd import RoiSpec

SHARED = [3, 10, 17, 25, 40]  # nsd ids both subjects have (shared1000 stand-ins)
OWN = {1: [1, 5, 12, 33, 50, 61], 2: [2, 7, 44, 70, 71, 90]}
N_VERTS = {"lh": 12, "rh": 9}
MAPPING = {0: "Unknown", 1: "V1v", 2: "V1d", 3: "V2v"}
PX = 8


def image_of(nsd_id):
    return np.full((PX, PX, 3), nsd_id % 256, dtype=np.uint8)


def make_release(root, subjects=(1, 2)):
    """Per subject: fMRI with value = nsd_id * 1000 + hemi * 100 + vertex; labels by vertex."""
    for subject in subjects:
        base = root / f"subj{subject:02d}"
        ids = sorted(SHARED + OWN[subject])
        images = base / "training_split/training_images"
        images.mkdir(parents=True)
        for i, nsd_id in enumerate(ids, start=1):
            Image.fromarray(image_of(nsd_id)).save(images / f"train-{i:04d}_nsd-{nsd_id:05d}.png")
        (base / "training_split/training_fmri").mkdir(parents=True)
        (base / "roi_masks").mkdir()
        np.save(base / "roi_masks/mapping_prf-visualrois.npy", MAPPING)
        for side, hemi in enumerate(("lh", "rh")):
            vertices = np.arange(N_VERTS[hemi])
            fmri = np.array(ids)[:, None] * 1000.0 + side * 100 + vertices[None, :]
            np.save(
                base / f"training_split/training_fmri/{hemi}_training_fmri.npy",
                fmri.astype(np.float32),
            )
            labels = (vertices % 4).astype(np.int32)  # 0 none, 1 V1v, 2 V1d, 3 V2v
            np.save(base / f"roi_masks/{hemi}.prf-visualrois_challenge_space.npy", labels)
    return root


ROIS = [
    RoiSpec("V1", "prf-visualrois", ["V1v", "V1d"]),
    RoiSpec("V2", "prf-visualrois", ["V2v"]),
]


@pytest.fixture
def release(tmp_path):
    return make_release(tmp_path / "alg")


def expected_columns(labels):
    """Planted (hemi offset + vertex) of the ROI's vertices: lh first, then rh."""
    parts = []
    for side, hemi in enumerate(("lh", "rh")):
        vertices = np.flatnonzero(np.isin(np.arange(N_VERTS[hemi]) % 4, labels))
        parts.append(side * 100 + vertices)
    return np.concatenate(parts)


def test_stores_hold_the_planted_values(release, tmp_path):
    source = open_brain_source({"root": str(release), "format": "algonauts"})
    responses = build_responses(
        source,
        1,
        ROIS,
        n_test=4,
        seed=7,
        subjects=[1, 2],
        n_reliability=30,
        selection="reliability",
    )
    own = np.array(OWN[1])
    expected_test = np.sort(np.random.default_rng(7).permutation(own)[:4])
    np.testing.assert_array_equal(responses.train_nsd_ids, SHARED)
    np.testing.assert_array_equal(responses.test_nsd_ids, expected_test)

    store = read_response_store(write_response_store(tmp_path / "sub-01.zarr", responses))
    for roi, labels in (("V1", [1, 2]), ("V2", [3])):
        columns = expected_columns(labels)
        np.testing.assert_array_equal(
            store.train[roi], np.array(SHARED)[:, None] * 1000.0 + columns[None, :]
        )
        np.testing.assert_array_equal(
            store.test[roi], expected_test[:, None] * 1000.0 + columns[None, :]
        )
    voxels = responses.voxels
    assert voxels["kept"].all() and voxels["reliability"].isna().all()
    assert voxels["ncsnr"].isna().all()
    v1 = voxels[voxels["roi"] == "V1"]
    np.testing.assert_array_equal(v1["y"] * 100 + v1["x"], expected_columns([1, 2]))


def test_train_stimuli_match_the_pngs(release, tmp_path):
    source = open_brain_source({"root": str(release), "format": "algonauts"})
    ids = study_train_ids(source, [1, 2])
    stimuli = read_stimuli_store(write_stimuli_store(tmp_path / "train.zarr", source, ids))
    np.testing.assert_array_equal(stimuli.nsd_ids, SHARED)
    np.testing.assert_array_equal(stimuli.images[:], np.stack([image_of(i) for i in SHARED]))


def test_one_hemisphere_roi(release):
    tree = AlgonautsTree(release)
    vertices = tree.roi_vertices(1, RoiSpec("V2lh", "lh.prf-visualrois", ["V2v"]), N_VERTS)
    np.testing.assert_array_equal(vertices["lh"], [3, 7, 11])
    assert vertices["rh"].size == 0


def test_a_single_subject_cannot_tell_shared_images(release):
    with pytest.raises(ValueError, match="at least 2 subjects"):
        AlgonautsTree(release).study_train_ids([1])


def test_missing_fmri_file_is_named(release):
    path = release / "subj02/training_split/training_fmri/rh_training_fmri.npy"
    path.unlink()
    with pytest.raises(AlgonautsError, match=str(path)):
        build_responses(AlgonautsTree(release), 2, ROIS, n_test=2, subjects=[1, 2])


def test_wrong_fmri_shape_is_named(release):
    path = release / "subj01/training_split/training_fmri/lh_training_fmri.npy"
    np.save(path, np.zeros((3, N_VERTS["lh"]), dtype=np.float32))
    with pytest.raises(AlgonautsError, match=rf"{path}: expected shape \(11, n_vertices\)"):
        build_responses(AlgonautsTree(release), 1, ROIS, n_test=2, subjects=[1, 2])


def test_wrong_mask_length_is_named(release):
    path = release / "subj01/roi_masks/rh.prf-visualrois_challenge_space.npy"
    np.save(path, np.zeros(5, dtype=np.int32))
    with pytest.raises(AlgonautsError, match=rf"{path}: expected shape \(9,\)"):
        build_responses(AlgonautsTree(release), 1, ROIS, n_test=2, subjects=[1, 2])


def test_label_missing_from_mapping_is_named(release):
    rois = [RoiSpec("hV4", "prf-visualrois", ["hV4"])]
    path = release / "subj01/roi_masks/mapping_prf-visualrois.npy"
    with pytest.raises(AlgonautsError, match=rf"{path}: ROI hV4 asks for labels \['hV4'\]"):
        build_responses(AlgonautsTree(release), 1, rois, n_test=2, subjects=[1, 2])


def test_missing_image_file_is_named(release, tmp_path):
    source = AlgonautsTree(release)
    for png in release.glob("subj*/training_split/training_images/*_nsd-00010.png"):
        png.unlink()
    with pytest.raises(AlgonautsError, match="missing image file for image id 10"):
        write_stimuli_store(tmp_path / "train.zarr", source, np.array([3, 10]))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_mapping_reader_refuses_foreign_pickles(tmp_path):
    path = tmp_path / "mapping_x.npy"
    np.save(path, np.array({1: Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(AlgonautsError, match=f"{path}: cannot read"):
        read_label_mapping(path)
    good = tmp_path / "mapping_y.npy"
    np.save(good, {np.int64(1): "V1v", 0: "Unknown"})
    assert read_label_mapping(good) == {1: "V1v", 0: "Unknown"}
    with open(tmp_path / "raw.npy", "wb") as handle:  # not an .npy at all
        pickle.dump({1: "V1v"}, handle)
    with pytest.raises(AlgonautsError, match="raw.npy: cannot read"):
        read_label_mapping(tmp_path / "raw.npy")
