"""Write a small fake NSD tree with the real layout (``docs/nsd-layout.md`` section 9).

The tree has the released file names, dtypes and axis orders, so :mod:`nsdbench.nsd` reads it
with no special case. Its responses are synthetic: every region voxel responds to each image
with a known noise-free ``signal``, so tests can check what the pipeline recovers.

What is simulated, per subject with data:
- a design like NSD's: the shared images plus the subject's own images, each shown exactly 3
  times in a random order common to all subjects (``masterordering``);
- a brain (an ellipsoid in the grid, outside it betas are all zero and ROI volumes are -1),
  region voxels in compact blobs, extra unlabelled cortex voxels (pure noise) and non-cortex
  brain voxels (noise, -1 in the ROI volumes);
- trial betas = z-scored signal + Gaussian noise, then a per-session offset and scale per voxel
  (so per-session z-scoring matters), stored as int16 percent change x 300;
- a few region voxels all zero in one session (out of the field of view).

At the real func1pt8mm grid (:func:`write_real_grid_nsd`, also ``python -m
nsdbench.demo.nsd_tree real-grid``) only cortex voxels carry betas, so the generator's memory
stays small while the files have the released size; ``python -m nsdbench.demo.nsd_tree
convert`` then runs the workflow's brain conversion on such a tree, to measure it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from nsdbench.nsd import BETA_SCALE, BETAS_SUBDIR, MAX_REPETITIONS, N_DESIGN_SUBJECTS

# Label names of the ROI volumes the fake tree can write, ids 1..N in this order (section 3).
NSD_LABEL_NAMES: dict[str, list[str]] = {
    "prf-visualrois": ["V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"],
    "floc-faces": ["OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"],
    "floc-places": ["OPA", "PPA", "RSC"],
    "floc-bodies": ["EBA", "FBA-1", "FBA-2", "mTL-bodies"],
    "floc-words": ["OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"],
}
RUNS_PER_SESSION = 12
VOXEL_SIZE_MM = 1.8
N_COCO_IMAGES = 581929  # upper bound of COCO 2017 image ids, for plausible cocoId values


@dataclass
class Region:
    """A simulated region: its voxels get ``labels`` (split evenly) in ROI volume ``file``.

    ``signal`` is (N images, n_voxels): the noise-free response of each voxel to every image.
    """

    name: str
    file: str
    labels: list[str]
    signal: np.ndarray


@dataclass
class FakeNsd:
    """What was written, for tests: voxel coordinates are NIfTI (x, y, z)."""

    root: Path
    n_sessions: int
    trials_per_session: int
    # subject -> region name -> (n_voxels, 3) coordinates, row j is signal column j
    region_voxels: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    # subject -> region name -> label name of each region voxel
    region_labels: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    # subject -> (n, 3) unlabelled cortex voxels that carry only noise
    noise_voxels: dict[int, np.ndarray] = field(default_factory=dict)
    # subject -> [(session, (x, y, z))] voxels that are all zero in that session
    out_of_fov: dict[int, list[tuple[int, tuple[int, int, int]]]] = field(default_factory=dict)


@dataclass
class _Design:
    masterordering: np.ndarray  # (T,) 1-based 10k index per trial
    subjectim: np.ndarray  # (8, K) 1-based nsd ids
    n_shared: int
    trials_per_session: int

    @property
    def n_sessions(self) -> int:
        return self.masterordering.size // self.trials_per_session

    def subject_nsd_ids(self, subject: int) -> np.ndarray:
        """0-based nsd id of every trial of ``subject``."""
        return self.subjectim[subject - 1, self.masterordering - 1] - 1


@dataclass
class _Layout:
    brain: np.ndarray  # (X, Y, Z) bool: the brain, where regions may lie
    cortex: np.ndarray  # (X, Y, Z) bool: region and unlabelled cortex voxels
    data: np.ndarray  # (X, Y, Z) bool: voxels with betas (the brain, or only the cortex)
    region_voxels: dict[str, np.ndarray]
    region_labels: dict[str, np.ndarray]
    noise_voxels: np.ndarray


def write_fake_nsd(
    root: str | Path,
    images: np.ndarray,
    *,
    n_shared: int,
    subjects: dict[int, list[Region]],
    own_images_per_subject: int,
    trials_per_session: int,
    grid: tuple[int, int, int] = (8, 8, 6),
    noise_sd: float = 1.0,
    seed: int = 0,
    write_nifti: bool = False,
    n_unlabelled_cortex: int = 20,
    n_out_of_fov: int = 3,
    betas_outside_cortex: bool = True,
    region_box: tuple[slice, slice, slice] | None = None,
) -> FakeNsd:
    """Write a fake NSD tree under ``root``; ``images`` are nsd ids 0..N-1, the first
    ``n_shared`` of them shared by all subjects.

    ``betas_outside_cortex=False`` leaves every voxel but the cortex all zero (as if outside
    the brain mask), which keeps the simulation small at the real grid. ``region_box`` (x, y,
    z slices) confines the regions and unlabelled cortex to part of the grid, as visual
    cortex is: it sets how large the ROIs' bounding box is.
    """
    root = Path(root)
    images = np.asarray(images)
    _validate_inputs(images, n_shared, subjects, own_images_per_subject, trials_per_session)
    rng = np.random.default_rng(seed)
    design = _make_design(
        rng,
        images.shape[0],
        n_shared,
        sorted(subjects),
        own_images_per_subject,
        trials_per_session,
    )
    experiments = root / "nsddata/experiments/nsd"
    _write_expdesign(experiments / "nsd_expdesign.mat", design)
    _write_stim_info(experiments / "nsd_stim_info_merged.csv", design, images.shape[0], rng)
    _write_image_brick(root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", images)

    written = FakeNsd(root, design.n_sessions, trials_per_session)
    for subject, regions in sorted(subjects.items()):
        layout = _layout_subject(
            rng, grid, regions, n_unlabelled_cortex, betas_outside_cortex, region_box
        )
        _write_roi_files(root, subject, layout, regions)
        out_of_fov = _choose_out_of_fov(rng, layout, design.n_sessions, n_out_of_fov)
        betas = _simulate_betas(
            rng, design, subject, layout, regions, images.shape[0], noise_sd, out_of_fov
        )
        _write_betas(root, subject, betas, layout.data, write_nifti)
        _write_ncsnr(root, subject, betas, design, layout=layout)
        written.region_voxels[subject] = layout.region_voxels
        written.region_labels[subject] = layout.region_labels
        written.noise_voxels[subject] = layout.noise_voxels
        written.out_of_fov[subject] = out_of_fov
    return written


# ---------------------------------------------------------------------------- checks
def _validate_inputs(
    images: np.ndarray,
    n_shared: int,
    subjects: dict[int, list[Region]],
    own_images_per_subject: int,
    trials_per_session: int,
) -> None:
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    n_images = images.shape[0]
    if not 0 < n_shared <= n_images:
        raise ValueError(f"n_shared={n_shared} must lie in 1..{n_images}")
    if not set(subjects) <= set(range(1, N_DESIGN_SUBJECTS + 1)):
        raise ValueError(
            f"subjects must be numbered 1..{N_DESIGN_SUBJECTS}, got {sorted(subjects)}"
        )
    if own_images_per_subject * len(subjects) > n_images - n_shared:
        raise ValueError(
            f"{len(subjects)} subjects x {own_images_per_subject} own images need more than the "
            f"{n_images - n_shared} non-shared images"
        )
    n_trials = MAX_REPETITIONS * (n_shared + own_images_per_subject)
    if trials_per_session <= 0 or n_trials % trials_per_session:
        raise ValueError(
            f"trials_per_session={trials_per_session} must divide the {n_trials} trials"
        )
    for regions in subjects.values():
        for region in regions:
            _validate_region(region, n_images)


def _validate_region(region: Region, n_images: int) -> None:
    known = NSD_LABEL_NAMES.get(region.file)
    if known is None:
        raise ValueError(f"region {region.name}: file must be one of {sorted(NSD_LABEL_NAMES)}")
    unknown = set(region.labels) - set(known)
    if unknown or not region.labels:
        raise ValueError(f"region {region.name}: labels {sorted(unknown)} not in {known}")
    signal = np.asarray(region.signal)
    if signal.ndim != 2 or signal.shape[0] != n_images or signal.shape[1] < len(region.labels):
        raise ValueError(
            f"region {region.name}: signal must be ({n_images}, n_voxels >= n_labels), "
            f"got {signal.shape}"
        )


# ---------------------------------------------------------------------------- design
def _make_design(
    rng: np.random.Generator,
    n_images: int,
    n_shared: int,
    data_subjects: list[int],
    own_per_subject: int,
    trials_per_session: int,
) -> _Design:
    """NSD-like design: shared ids first (sorted) in every ``subjectim`` row, then own ids."""
    non_shared = rng.permutation(np.arange(n_shared, n_images))
    blocks = iter(np.split(non_shared[: own_per_subject * len(data_subjects)], len(data_subjects)))
    subjectim = np.empty((N_DESIGN_SUBJECTS, n_shared + own_per_subject), dtype=np.int64)
    for subject in range(1, N_DESIGN_SUBJECTS + 1):
        # Rows of subjects without data only need plausible ids, not disjoint ones.
        own = (
            next(blocks)
            if subject in data_subjects
            else rng.choice(non_shared, own_per_subject, replace=False)
        )
        subjectim[subject - 1] = np.concatenate([np.arange(n_shared), own]) + 1
    n_10k = subjectim.shape[1]
    masterordering = rng.permutation(np.repeat(np.arange(1, n_10k + 1), MAX_REPETITIONS))
    return _Design(masterordering, subjectim, n_shared, trials_per_session)


def _basiccnt(design: _Design) -> np.ndarray:
    """(3, n_sessions): per session, how many images are shown once, twice, three times."""
    counts = np.zeros((MAX_REPETITIONS, design.n_sessions), dtype=np.int64)
    for session, order in enumerate(design.masterordering.reshape(design.n_sessions, -1)):
        times_shown = np.unique(order, return_counts=True)[1]
        for times in range(1, MAX_REPETITIONS + 1):
            counts[times - 1, session] = np.sum(times_shown == times)
    return counts


def _stimpattern(design: _Design) -> np.ndarray:
    """(n_sessions, 12, slots) 0/1: stimulus trials spread over 12 runs as in NSD.

    NSD puts 63 stimulus trials in odd runs and 62 in even runs among 75 slots; here the
    session's trials are spread the same way with a similar share of blank slots.
    """
    per_run = np.full(RUNS_PER_SESSION, design.trials_per_session // RUNS_PER_SESSION)
    odd_runs_first = np.r_[0:RUNS_PER_SESSION:2, 1:RUNS_PER_SESSION:2]
    per_run[odd_runs_first[: design.trials_per_session % RUNS_PER_SESSION]] += 1
    n_slots = max(per_run.max() + 2, int(np.ceil(per_run.max() * 75 / 63)))
    pattern = np.zeros((design.n_sessions, RUNS_PER_SESSION, n_slots), dtype=np.uint8)
    for run, n_trials in enumerate(per_run):
        # Blank slots at both ends and spread in between, the same in every session. The
        # positions are at least one slot apart, so rounding half up keeps them distinct.
        positions = np.linspace(0, n_slots - 1, n_trials + 2)[1:-1]
        pattern[:, run, np.floor(positions + 0.5).astype(int)] = 1
    return pattern


def _write_expdesign(path: Path, design: _Design) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        path,
        {
            "masterordering": design.masterordering.reshape(1, -1),
            "subjectim": design.subjectim,
            "sharedix": np.arange(1, design.n_shared + 1).reshape(1, -1),
            "basiccnt": _basiccnt(design),
            "stimpattern": _stimpattern(design),
        },
    )


def _repetition_trial_ids(design: _Design, subject: int, n_images: int) -> np.ndarray:
    """(N, 3) 1-based trial id of each repetition of each nsd id for ``subject``, 0 if unseen."""
    trial_ids = np.zeros((n_images, MAX_REPETITIONS), dtype=np.int64)
    seen = np.zeros(n_images, dtype=np.int64)
    for trial, nsd_id in enumerate(design.subject_nsd_ids(subject)):
        trial_ids[nsd_id, seen[nsd_id]] = trial + 1
        seen[nsd_id] += 1
    return trial_ids


def _write_stim_info(path: Path, design: _Design, n_images: int, rng: np.random.Generator) -> None:
    """The 41-column ``nsd_stim_info_merged.csv`` (unnamed index + 40 named columns)."""
    crop_fraction = rng.uniform(0.05, 0.2, n_images).round(4)
    crop_sideways = rng.random(n_images) < 0.5
    info = pd.DataFrame(
        {
            "cocoId": rng.choice(N_COCO_IMAGES, n_images, replace=False) + 1,
            "cocoSplit": np.where(rng.random(n_images) < 0.9, "train2017", "val2017"),
            "cropBox": [
                f"(0, 0, {f}, {f})" if sideways else f"({f}, {f}, 0, 0)"
                for f, sideways in zip(crop_fraction, crop_sideways, strict=True)
            ],
            "loss": np.where(rng.random(n_images) < 0.8, 0.0, rng.uniform(0, 0.1, n_images)),
            "nsdId": np.arange(n_images),
            "flagged": False,
            "BOLD5000": rng.random(n_images) < 0.05,
            "shared1000": np.arange(n_images) < design.n_shared,
        }
    )
    for subject in range(1, N_DESIGN_SUBJECTS + 1):
        info[f"subject{subject}"] = np.isin(
            np.arange(n_images), design.subjectim[subject - 1] - 1
        ).astype(int)
    for subject in range(1, N_DESIGN_SUBJECTS + 1):
        trial_ids = _repetition_trial_ids(design, subject, n_images)
        for rep in range(MAX_REPETITIONS):
            info[f"subject{subject}_rep{rep}"] = trial_ids[:, rep]
    path.parent.mkdir(parents=True, exist_ok=True)
    info.to_csv(path)


def _write_image_brick(path: Path, images: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("imgBrick", data=images, chunks=(1, *images.shape[1:]))


# ---------------------------------------------------------------------------- layout
def _brain_mask(grid: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid filling most of the grid; its corners play 'outside the brain'."""
    axes = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
    radius = sum(((axis - (n - 1) / 2) / (n / 2)) ** 2 for axis, n in zip(axes, grid, strict=True))
    return radius <= 1.3


def _grow_blob(rng: np.random.Generator, free: np.ndarray, n_voxels: int) -> np.ndarray:
    """The ``n_voxels`` free voxels nearest to a random free seed: a compact blob."""
    candidates = np.argwhere(free)
    if candidates.shape[0] < n_voxels:
        raise ValueError(
            f"the grid has {candidates.shape[0]} free brain voxels, a region needs {n_voxels}"
        )
    seed_voxel = candidates[rng.integers(candidates.shape[0])]
    distance = np.linalg.norm(candidates - seed_voxel, axis=1)
    return candidates[np.argsort(distance, kind="stable")[:n_voxels]]


def _layout_subject(
    rng: np.random.Generator,
    grid: tuple[int, int, int],
    regions: list[Region],
    n_unlabelled_cortex: int,
    betas_outside_cortex: bool = True,
    region_box: tuple[slice, slice, slice] | None = None,
) -> _Layout:
    brain = _brain_mask(grid)
    free = brain.copy()
    if region_box is not None:
        allowed = np.zeros(grid, dtype=bool)
        allowed[region_box] = True
        free &= allowed
    region_voxels, region_labels = {}, {}
    for region in regions:
        xyz = _grow_blob(rng, free, region.signal.shape[1])
        free[tuple(xyz.T)] = False
        region_voxels[region.name] = xyz
        # Split the blob along y, so e.g. V1v and V1d are neighbouring halves.
        label_index = np.empty(len(xyz), dtype=int)
        parts = np.array_split(np.argsort(xyz[:, 1], kind="stable"), len(region.labels))
        for index, part in enumerate(parts):
            label_index[part] = index
        region_labels[region.name] = np.asarray(region.labels)[label_index]
    remaining = np.argwhere(free)
    if remaining.shape[0] < n_unlabelled_cortex:
        raise ValueError(f"no room for {n_unlabelled_cortex} unlabelled cortex voxels")
    noise_voxels = remaining[np.sort(rng.choice(len(remaining), n_unlabelled_cortex, False))]
    cortex = np.zeros(grid, dtype=bool)
    for xyz in (*region_voxels.values(), noise_voxels):
        cortex[tuple(xyz.T)] = True
    data = brain if betas_outside_cortex else cortex
    return _Layout(brain, cortex, data, region_voxels, region_labels, noise_voxels)


def _write_nifti(path: Path, volume: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([VOXEL_SIZE_MM, VOXEL_SIZE_MM, VOXEL_SIZE_MM, 1.0])
    image = nib.Nifti1Image(volume, affine)
    image.header.set_data_dtype(volume.dtype)
    nib.save(image, path)


def _write_roi_files(root: Path, subject: int, layout: _Layout, regions: list[Region]) -> None:
    """``roi/{,lh.,rh.}{file}.nii.gz`` and ``{file}.mgz.ctab`` for every file the regions use."""
    roi_dir = root / f"nsddata/ppdata/subj{subject:02d}/func1pt8mm/roi"
    label_dir = root / f"nsddata/freesurfer/subj{subject:02d}/label"
    # Voxels with x below the midline play the right hemisphere (radiological convention).
    x_coordinate = np.indices(layout.brain.shape)[0]
    hemispheres = {"lh.": x_coordinate >= layout.brain.shape[0] // 2}
    hemispheres["rh."] = ~hemispheres["lh."]
    for file in sorted({region.file for region in regions}):
        label_names = NSD_LABEL_NAMES[file]
        volume = np.where(layout.cortex, 0, -1).astype(np.int16)
        for region in regions:
            if region.file == file:
                labels = layout.region_labels[region.name]
                label_ids = [label_names.index(name) + 1 for name in labels]
                volume[tuple(layout.region_voxels[region.name].T)] = label_ids
        _write_nifti(roi_dir / f"{file}.nii.gz", volume)
        for prefix, in_hemisphere in hemispheres.items():
            _write_nifti(roi_dir / f"{prefix}{file}.nii.gz", np.where(in_hemisphere, volume, -1))
        label_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{index} {name}" for index, name in enumerate(["Unknown", *label_names])]
        (label_dir / f"{file}.mgz.ctab").write_text("\n".join(lines) + "\n")


def _choose_out_of_fov(
    rng: np.random.Generator, layout: _Layout, n_sessions: int, n_voxels: int
) -> list[tuple[int, tuple[int, int, int]]]:
    """Region voxels (cortex if there are no regions) to blank out in one random session."""
    pool = (
        np.concatenate(list(layout.region_voxels.values()))
        if layout.region_voxels
        else np.argwhere(layout.cortex)
    )
    picks = rng.choice(len(pool), min(n_voxels, len(pool)), replace=False)
    sessions = rng.integers(1, n_sessions + 1, size=len(picks))
    return [
        (int(session), tuple(int(c) for c in pool[pick]))
        for session, pick in zip(sessions, picks, strict=True)
    ]


# ----------------------------------------------------------------------------- betas
def _zscore_columns(values: np.ndarray) -> np.ndarray:
    """Z-score columns (ddof=0); flat columns become zeros."""
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _simulate_betas(
    rng: np.random.Generator,
    design: _Design,
    subject: int,
    layout: _Layout,
    regions: list[Region],
    n_images: int,
    noise_sd: float,
    out_of_fov: list[tuple[int, tuple[int, int, int]]],
) -> np.ndarray:
    """int16 betas (sessions, trials, data voxels in argwhere order), % change x 300."""
    brain_index = np.full(layout.data.shape, -1)
    brain_index[layout.data] = np.arange(layout.data.sum())
    clean = np.zeros((n_images, int(layout.data.sum())))
    for region in regions:
        columns = brain_index[tuple(layout.region_voxels[region.name].T)]
        clean[:, columns] = _zscore_columns(np.asarray(region.signal, dtype=np.float64))

    trial_nsd_ids = design.subject_nsd_ids(subject).reshape(design.n_sessions, -1)
    betas = np.empty((*trial_nsd_ids.shape, clean.shape[1]), dtype=np.int16)
    for session_index, nsd_ids in enumerate(trial_nsd_ids):
        response = clean[nsd_ids] + noise_sd * rng.standard_normal((len(nsd_ids), clean.shape[1]))
        # Session-specific gain and baseline: what per-session z-scoring has to undo.
        scale = rng.uniform(0.5, 2.0, clean.shape[1])
        offset = rng.normal(0.0, 1.0, clean.shape[1])
        stored = np.round((response * scale + offset) * BETA_SCALE)
        betas[session_index] = np.clip(stored, np.iinfo(np.int16).min, np.iinfo(np.int16).max)
    for session, xyz in out_of_fov:
        betas[session - 1, :, brain_index[xyz]] = 0
    return betas


def _betas_volume(session_betas: np.ndarray, data: np.ndarray) -> np.ndarray:
    """(T, Z, Y, X) int16 volume (h5py order), zero outside the data voxels.

    Its transpose is the (X, Y, Z, T) NIfTI volume in Fortran order, so both files are
    written from this one array without a copy (1 GB per session at the real grid).
    """
    volume = np.zeros((session_betas.shape[0], *data.shape[::-1]), dtype=np.int16)
    x, y, z = np.nonzero(data)
    volume[:, z, y, x] = session_betas
    return volume


def _write_betas(
    root: Path, subject: int, betas: np.ndarray, data: np.ndarray, write_nifti: bool
) -> None:
    """``betas_sessionNN.hdf5`` (T, Z, Y, X) and optionally ``.nii.gz`` (X, Y, Z, T)."""
    directory = root / f"nsddata_betas/ppdata/subj{subject:02d}" / BETAS_SUBDIR
    directory.mkdir(parents=True, exist_ok=True)
    for session_index, session_betas in enumerate(betas):
        volume_tzyx = _betas_volume(session_betas, data)
        name = f"betas_session{session_index + 1:02d}"
        with h5py.File(directory / f"{name}.hdf5", "w") as handle:
            # One chunk per voxel time course, like the released files.
            handle.create_dataset(
                "betas", data=volume_tzyx, chunks=(volume_tzyx.shape[0], 1, 1, 1)
            )
        if write_nifti:
            _write_nifti(directory / f"{name}.nii.gz", volume_tzyx.transpose(3, 2, 1, 0))
        del volume_tzyx


def _write_ncsnr(
    root: Path,
    subject: int,
    betas: np.ndarray,
    design: _Design,
    *,
    layout: _Layout,
) -> None:
    """``ncsnr.nii.gz`` from the stored betas, as NSD computes it (layout notes section 5).

    Per-session z-scores; per image the variance (ddof=1) of its 3 repetitions; noise sd =
    sqrt(mean variance); signal sd = sqrt(max(0, 1 - noise variance)); ncsnr = signal/noise.
    """
    values = betas.astype(np.float64) / BETA_SCALE
    std = values.std(axis=1, keepdims=True)
    has_data = np.any(values != 0, axis=1, keepdims=True) & (std > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        zscored = np.where(has_data, (values - values.mean(axis=1, keepdims=True)) / std, np.nan)
    zscored = zscored.reshape(-1, zscored.shape[2])  # (all trials, voxels), chronological
    nsd_ids = design.subject_nsd_ids(subject)
    order = np.argsort(nsd_ids, kind="stable")  # every image has exactly 3 trials
    repetitions = zscored[order].reshape(-1, MAX_REPETITIONS, zscored.shape[1])
    noise_variance = np.nanmean(repetitions.var(axis=1, ddof=1), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ncsnr = np.sqrt(np.maximum(0.0, 1.0 - noise_variance)) / np.sqrt(noise_variance)
    volume = np.zeros(layout.data.shape, dtype=np.float32)
    volume[layout.data] = np.nan_to_num(ncsnr, nan=0.0)
    directory = root / f"nsddata_betas/ppdata/subj{subject:02d}" / BETAS_SUBDIR
    _write_nifti(directory / "ncsnr.nii.gz", volume)


# ------------------------------------------------------------------ the real grid
# subj01's func1pt8mm grid (X, Y, Z) and trials per session, as released.
REAL_GRID = (81, 104, 83)
REAL_TRIALS_PER_SESSION = 750
# The paper's 16 ROIs (config/config.yaml) with plausible bilateral sizes in 1.8 mm voxels.
# The sizes are assumptions of this generator, not NSD numbers; they total about 7,200.
REAL_GRID_REGIONS: list[tuple[str, str, list[str], int]] = [
    ("V1", "prf-visualrois", ["V1v", "V1d"], 1400),
    ("V2", "prf-visualrois", ["V2v", "V2d"], 1300),
    ("V3", "prf-visualrois", ["V3v", "V3d"], 1100),
    ("hV4", "prf-visualrois", ["hV4"], 500),
    ("OFA", "floc-faces", ["OFA"], 150),
    ("FFA-1", "floc-faces", ["FFA-1"], 250),
    ("FFA-2", "floc-faces", ["FFA-2"], 150),
    ("EBA", "floc-bodies", ["EBA"], 800),
    ("FBA-1", "floc-bodies", ["FBA-1"], 100),
    ("FBA-2", "floc-bodies", ["FBA-2"], 80),
    ("OPA", "floc-places", ["OPA"], 350),
    ("PPA", "floc-places", ["PPA"], 400),
    ("RSC", "floc-places", ["RSC"], 250),
    ("OWFA", "floc-words", ["OWFA"], 100),
    ("VWFA-1", "floc-words", ["VWFA-1"], 200),
    ("VWFA-2", "floc-words", ["VWFA-2"], 100),
]


def real_grid_box(grid: tuple[int, int, int] = REAL_GRID) -> tuple[slice, slice, slice]:
    """Where the fake visual cortex lies: every x (both hemispheres), the posterior 45% of y
    and the middle of z. About 30% of the grid, roughly what the 16 ROIs span in NSD."""
    _, n_y, n_z = grid
    return slice(None), slice(0, round(0.45 * n_y)), slice(round(0.1 * n_z), round(0.75 * n_z))


def write_real_grid_nsd(
    root: str | Path,
    *,
    n_sessions: int = 3,
    subjects: tuple[int, ...] = (1,),
    write_nifti: bool = False,
    seed: int = 0,
    grid: tuple[int, int, int] = REAL_GRID,
    trials_per_session: int = REAL_TRIALS_PER_SESSION,
    voxel_scale: float = 1.0,
) -> FakeNsd:
    """A fake tree with released file sizes: the real grid, 750 trials per session.

    Each subject sees ``trials_per_session * n_sessions / 3`` images 3 times (a third of
    them shared), so every image is eligible; images are 16 x 16 px (the betas are what is
    measured). Only cortex voxels carry betas, the rest are zero, as outside the brain mask.
    ``grid``, ``trials_per_session`` and ``voxel_scale`` (on ROI and cortex sizes) shrink the
    tree for tests.
    """
    rng = np.random.default_rng(seed)
    per_subject = trials_per_session * n_sessions // MAX_REPETITIONS
    n_shared = per_subject // 3
    own = per_subject - n_shared
    n_images = n_shared + own * len(subjects)
    images = rng.integers(0, 256, (n_images, 16, 16, 3), dtype=np.uint8)
    regions = [
        Region(name, file, labels, rng.standard_normal((n_images, size), dtype=np.float32))
        for name, file, labels, n_voxels in REAL_GRID_REGIONS
        for size in [max(len(labels), round(n_voxels * voxel_scale))]
    ]
    return write_fake_nsd(
        root,
        images,
        n_shared=n_shared,
        subjects=dict.fromkeys(subjects, regions),
        own_images_per_subject=own,
        trials_per_session=trials_per_session,
        grid=grid,
        seed=seed,
        write_nifti=write_nifti,
        n_unlabelled_cortex=round(5000 * voxel_scale),
        betas_outside_cortex=False,
        region_box=real_grid_box(grid),
    )


def _convert(args: argparse.Namespace) -> None:
    """What the workflow's brain_responses job does, on one subject of a tree."""
    # Imported here: the generator itself does not depend on the converter.
    from nsdbench.brain import brain_summary, build_subject_responses, write_response_store
    from nsdbench.nsd import NsdTree, RoiSpec

    tree = NsdTree(args.root, betas_format=args.betas_format)
    rois = [RoiSpec(name, file, labels) for name, file, labels, _ in REAL_GRID_REGIONS]
    responses = build_subject_responses(
        tree, args.subject, rois, n_test=args.n_test, n_reliability=args.n_reliability
    )
    out = Path(args.out)
    write_response_store(out / f"sub-{args.subject:02d}.zarr", responses)
    responses.voxels.to_parquet(out / f"voxels-sub-{args.subject:02d}.parquet")
    counts = {split: len(getattr(responses, f"{split}_nsd_ids")) for split in
              ("train", "test", "reliability")}
    print(brain_summary(responses.voxels, {args.subject: counts}).to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nsdbench.demo.nsd_tree", description=(
        "Write a fake NSD tree at the real func1pt8mm grid, or convert a tree's brain data "
        "as the workflow does (to measure time and memory with /usr/bin/time -v)."
    ))
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("real-grid", help="write a fake tree at the real grid")
    write.add_argument("root")
    write.add_argument("--sessions", type=int, default=3)
    write.add_argument("--nifti", action="store_true", help="also write .nii.gz betas")
    write.add_argument("--seed", type=int, default=0)
    convert = commands.add_parser("convert", help="build one subject's responses (16 ROIs)")
    convert.add_argument("root")
    convert.add_argument("out")
    convert.add_argument("--subject", type=int, default=1)
    convert.add_argument("--betas-format", choices=("hdf5", "nifti"), default="hdf5")
    convert.add_argument("--n-test", type=int, default=200)
    convert.add_argument("--n-reliability", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command == "real-grid":
        written = write_real_grid_nsd(
            args.root, n_sessions=args.sessions, write_nifti=args.nifti, seed=args.seed
        )
        print(f"wrote {written.root}: {written.n_sessions} sessions x "
              f"{written.trials_per_session} trials on grid {REAL_GRID}")
    else:
        _convert(args)


if __name__ == "__main__":
    sys.exit(main())
