"""Betas reads touch only the ROIs' bounding boxes, in bounded blocks (issue 4, acceptance 2).

The full-size check (a fake tree at the real 81 x 104 x 83 grid, 750 trials per session) is
``python -m nsdbench.demo.nsd_tree real-grid`` then ``convert`` under ``/usr/bin/time -v``; it
takes about a minute, too long for CI. Here a mid-sized volume with two ROI blobs far apart
(as in two hemispheres) shows what is read and how much memory the read takes.
"""

import tracemalloc

import h5py
import nibabel as nib
import numpy as np
import pytest

from nsdbench import nsd

GRID = (40, 30, 24)  # (X, Y, Z)
N_TRIALS = 90


def blobs_mask() -> np.ndarray:
    """Two 5 x 4 x 3 blobs at either end of x, as an ROI set spanning both hemispheres."""
    mask = np.zeros(GRID, dtype=bool)
    mask[2:7, 10:14, 8:11] = True
    mask[33:38, 12:16, 9:12] = True
    mask[35, 12, 9] = False  # not a full box
    return mask


@pytest.fixture(scope="module")
def betas_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("betas")
    rng = np.random.default_rng(0)
    values_xyzt = rng.integers(-3000, 3000, (*GRID, N_TRIALS)).astype(np.int16)
    hdf5 = root / "betas_session01.hdf5"
    with h5py.File(hdf5, "w") as handle:
        # The released layout: h5py (T, Z, Y, X), one chunk per voxel time course.
        handle.create_dataset(
            "betas", data=values_xyzt.transpose(3, 2, 1, 0), chunks=(N_TRIALS, 1, 1, 1)
        )
    nifti = root / "betas_session01.nii.gz"
    image = nib.Nifti1Image(values_xyzt, np.eye(4))
    image.header.set_data_dtype(np.int16)
    nib.save(image, nifti)
    return values_xyzt, hdf5, nifti


def box_voxels(box) -> int:
    return int(np.prod([s.stop - s.start for s in box]))


def covered(boxes) -> np.ndarray:
    mask = np.zeros(GRID, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def test_slab_boxes_cover_the_mask_and_skip_the_gap():
    mask = blobs_mask()
    bounding = nsd._mask_bounding_box(mask)
    for max_voxels in (10**6, 200, 1):
        boxes = nsd._slab_boxes(mask, max_voxels)
        assert not np.any(mask & ~covered(boxes))  # every mask voxel is in a box
        assert not np.any(covered(boxes) & ~covered([bounding]))  # all inside the bounding box
        assert sum(box_voxels(box) for box in boxes) <= box_voxels(bounding)
        # Slabs are at most max_voxels large, or one x plane when a plane is larger.
        plane = box_voxels(bounding) // (bounding[0].stop - bounding[0].start)
        assert all(box_voxels(box) <= max(max_voxels, plane) for box in boxes)
    # With slabs narrower than the gap between the blobs, the gap is not read at all.
    thin = nsd._slab_boxes(mask, 200)
    assert sum(box_voxels(box) for box in thin) == 5 * 4 * 3 * 2
    assert nsd._slab_boxes(np.zeros(GRID, dtype=bool), 100) == []


def record_calls(monkeypatch, cls, name):
    """Record the index of every ``cls.name[...]`` call while still performing it."""
    calls = []
    original = getattr(cls, name)

    def recording(self, key):
        calls.append(key)
        return original(self, key)

    monkeypatch.setattr(cls, name, recording)
    return calls


@pytest.mark.parametrize("block_values", [10**7, 2000])
def test_hdf5_reads_only_slab_boxes_of_the_mask(betas_files, monkeypatch, block_values):
    values_xyzt, hdf5, _ = betas_files
    mask = blobs_mask()
    monkeypatch.setattr(nsd, "READ_BLOCK_VALUES", block_values)
    calls = record_calls(monkeypatch, h5py.Dataset, "__getitem__")
    betas = nsd._read_hdf5_betas(hdf5, mask, N_TRIALS)
    np.testing.assert_array_equal(betas, values_xyzt[mask].T)
    boxes = []
    for trials, zs, ys, xs in calls:  # h5py order (T, Z, Y, X)
        assert trials == slice(None)
        boxes.append((xs, ys, zs))
        assert box_voxels((xs, ys, zs)) * N_TRIALS <= max(block_values, 5 * 4 * 3 * N_TRIALS)
    assert boxes == nsd._slab_boxes(mask, block_values // N_TRIALS)
    read = sum(box_voxels(box) for box in boxes)
    assert read <= box_voxels(nsd._mask_bounding_box(mask)) < np.prod(GRID) / 4


@pytest.mark.parametrize("block_values", [10**7, 50_000])
def test_nifti_reads_the_bounding_box_in_trial_blocks(betas_files, monkeypatch, block_values):
    values_xyzt, _, nifti = betas_files
    mask = blobs_mask()
    monkeypatch.setattr(nsd, "READ_BLOCK_VALUES", block_values)
    calls = record_calls(monkeypatch, nib.arrayproxy.ArrayProxy, "__getitem__")
    betas = nsd._read_nifti_betas(nifti, mask, N_TRIALS)
    np.testing.assert_array_equal(betas, values_xyzt[mask].T)
    bounding = nsd._mask_bounding_box(mask)
    assert all(call[:3] == bounding for call in calls)  # the bounding box, nothing more
    # Blocks of trials of at most block_values (at least one trial), in file order, so one
    # pass through the gzip stream reads them all.
    block = max(1, block_values // box_voxels(bounding))
    assert block * box_voxels(bounding) <= max(block_values, box_voxels(bounding))
    assert [call[3] for call in calls] == [
        slice(start, start + block) for start in range(0, N_TRIALS, block)
    ]
    assert len(calls) > 1 if block < N_TRIALS else len(calls) == 1


@pytest.mark.parametrize("reader", ["hdf5", "nifti"])
def test_read_memory_follows_the_blocks_not_the_volume(betas_files, monkeypatch, reader):
    values_xyzt, hdf5, nifti = betas_files
    mask = blobs_mask()
    block_values = 20_000
    monkeypatch.setattr(nsd, "READ_BLOCK_VALUES", block_values)
    read = nsd._read_hdf5_betas if reader == "hdf5" else nsd._read_nifti_betas
    path = hdf5 if reader == "hdf5" else nifti
    tracemalloc.start()
    try:
        betas = read(path, mask, N_TRIALS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    volume_bytes = values_xyzt.nbytes  # what reading the whole session would take
    # The result, the column index and a block or two (numpy's allocations, which tracemalloc
    # sees): measured 0.3 MB (HDF5) and 0.1 MB (NIfTI) against 5.2 MB for the whole session.
    assert peak < betas.nbytes + mask.size * 8 + 4 * block_values * 2
    assert peak < volume_bytes / 10
