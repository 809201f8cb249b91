"""Brain responses per subject and ROI, prepared as in the paper (appendix A.1).

Standard NSD practice (``docs/nsd-layout.md`` section 2): z-score every voxel within each
session across that session's trials, then average an image's repetitions. Voxels are kept
when their split-half reliability (mean of the three pairwise Pearson r between repetition
response profiles, over the subject's own reliability images) reaches a threshold, or,
alternatively, when the released ncsnr does.

Image sets per subject:
- train: the shared images (NSD shared1000), in sorted nsd id order; given the study's
  subjects, only those eligible for every one of them, so all subjects share one train set;
- test: ``n_test`` of the subject's own images (seeded);
- reliability: ``n_reliability`` further own images, disjoint from test, used only to select
  voxels.
Only images whose three repetitions all lie in the sessions on disk are eligible.

Memory: each session is read one block of ROI bounding boxes at a time (``nsd.py``); what
grows with the data is the (images, 3, voxels) float32 array of z-scored repetitions of the
needed images (about 36 kB per ROI voxel for 3000 images).
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from nsdbench.nsd import MAX_REPETITIONS, NsdError, NsdTree, RoiSpec
from nsdbench.rsa import pearson_columns

MIN_KEPT_VOXELS = 10
SELECTIONS = ("reliability", "ncsnr")
VOXEL_TABLE_COLUMNS = ["subject", "roi", "x", "y", "z", "reliability", "ncsnr", "kept"]
SPLITS = ("train", "test", "reliability")
SUMMARY_COLUMNS = [
    "subject", "roi", "voxels", "kept", "scored",
    "train_images", "test_images", "reliability_images",
]
# Images per batch when copying stimuli: bounds memory at about 35 MB for 425x425 images.
STIMULI_BATCH = 64


@dataclass
class ResponseSet:
    """Per-ROI responses (images x kept voxels, float32) of one subject, as stored on disk."""

    subject: int
    train_nsd_ids: np.ndarray
    test_nsd_ids: np.ndarray
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]

    @property
    def rois(self) -> list[str]:
        return list(self.train)

    def kept_counts(self) -> dict[str, int]:
        return {roi: int(values.shape[1]) for roi, values in self.train.items()}


@dataclass
class SubjectResponses(ResponseSet):
    """A :class:`ResponseSet` plus what built it: the voxel table and the reliability images.

    ``voxels`` has one row per ROI voxel (argwhere order within each ROI); the rows with
    ``kept`` True are, in order, the columns of ``train[roi]`` and ``test[roi]``.
    """

    reliability_nsd_ids: np.ndarray
    voxels: pd.DataFrame


@dataclass
class StimulusSet:
    """Stimuli read back from a store; ``images`` is the lazy zarr array (n, H, W, 3) uint8."""

    nsd_ids: np.ndarray
    images: zarr.Array


@dataclass
class _ImageSets:
    train: np.ndarray
    test: np.ndarray
    reliability: np.ndarray


# --------------------------------------------------------------------------- numerics
def zscore_session(betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Z-score each voxel (column) across the session's trials, ddof=0.

    Returns the float32 z-scores and a boolean per voxel telling whether it had data. A voxel
    that is all zero (outside the brain mask or the field of view in this session) or constant
    has no usable data: its column is NaN.
    """
    betas = np.asarray(betas, dtype=np.float64)
    has_data = np.any(betas != 0, axis=0)
    std = betas.std(axis=0)
    valid = has_data & (std > 0)
    safe_std = np.where(valid, std, 1.0)
    zscored = (betas - betas.mean(axis=0)) / safe_std
    zscored[:, ~valid] = np.nan
    return zscored.astype(np.float32), valid


def split_half_reliability(repetitions: np.ndarray) -> np.ndarray:
    """Mean of the pairwise Pearson r between repetition profiles.

    ``repetitions`` is (images, 3, voxels); the result is (voxels,), NaN for voxels with
    missing or flat data.
    """
    pairs = combinations(range(repetitions.shape[1]), 2)
    correlations = [pearson_columns(repetitions[:, i], repetitions[:, j]) for i, j in pairs]
    return np.mean(correlations, axis=0)


# ------------------------------------------------------------------------ image sets
def trial_table(
    tree: NsdTree, subject: int, sessions: list[int], betas_format: str | None = None
) -> pd.DataFrame:
    """One row per trial on disk: session, row in the session file, global trial, nsd id, rep.

    ``rep`` (0, 1, 2) is the chronological repetition index of the image among the trials on
    disk; ``n_reps`` is how many of its trials are on disk.
    """
    design = tree.design
    parts = []
    for session in sessions:
        n_trials = tree.expected_trials(subject, session, betas_format)
        first = design.first_trial(session)
        parts.append(
            pd.DataFrame(
                {
                    "session": session,
                    "row": np.arange(n_trials),
                    "trial": first + np.arange(n_trials),
                }
            )
        )
    trials = pd.concat(parts, ignore_index=True)
    nsd_of_trial = design.subject_trials(subject, int(trials["trial"].max()) + 1)
    trials["nsd_id"] = nsd_of_trial[trials["trial"].to_numpy()]
    trials = trials.sort_values("trial", ignore_index=True)
    trials["rep"] = trials.groupby("nsd_id").cumcount()
    trials["n_reps"] = trials.groupby("nsd_id")["nsd_id"].transform("size")
    return trials


def eligible_images(trials: pd.DataFrame) -> np.ndarray:
    """Sorted nsd ids whose 3 presentations all lie in the trials on disk."""
    return np.unique(trials.loc[trials["n_reps"] == MAX_REPETITIONS, "nsd_id"])


def shared_train_ids(
    tree: NsdTree, subjects: list[int], betas_format: str | None = None
) -> np.ndarray:
    """The train images of a study: shared images eligible for every one of ``subjects``.

    With all 40 sessions, subjects 1, 2, 5 and 7 saw every shared image 3 times, so this is
    all of shared1000; on a mirror with fewer sessions (or other subjects) it is the common
    part, so that every subject's train responses line up with the one train stimuli store.
    """
    train = tree.design.shared_nsd_ids()
    for subject in subjects:
        sessions = tree.sessions(subject, betas_format)
        eligible = eligible_images(trial_table(tree, subject, sessions, betas_format))
        train = np.intersect1d(train, eligible)
    return train


def choose_image_sets(
    trials: pd.DataFrame,
    shared_nsd_ids: np.ndarray,
    *,
    n_test: int,
    n_reliability: int,
    seed: int,
    train_nsd_ids: np.ndarray | None = None,
) -> _ImageSets:
    """Train = eligible shared images (within ``train_nsd_ids`` if given); test and
    reliability = disjoint random own images."""
    eligible = eligible_images(trials)
    is_shared = np.isin(eligible, shared_nsd_ids)
    train = eligible[is_shared]
    if train_nsd_ids is not None:
        train = np.intersect1d(train, train_nsd_ids)
    own = eligible[~is_shared]
    if n_test + n_reliability > own.size:
        raise NsdError(
            f"config keys 'images.n_test' ({n_test}) + 'images.n_reliability' "
            f"({n_reliability}) exceeds the {own.size} own images with all 3 repetitions on disk"
        )
    shuffled = np.random.default_rng(seed).permutation(own)
    return _ImageSets(
        train=train,
        test=np.sort(shuffled[:n_test]),
        reliability=np.sort(shuffled[n_test : n_test + n_reliability]),
    )


# ----------------------------------------------------------------------- the builder
def build_subject_responses(
    tree: NsdTree,
    subject: int,
    rois: list[RoiSpec],
    *,
    n_test: int,
    n_reliability: int,
    reliability_threshold: float = 0.1,
    selection: str = "reliability",
    ncsnr_threshold: float = 0.2,
    seed: int = 0,
    betas_format: str | None = None,
    subjects: list[int] | None = None,
) -> SubjectResponses:
    """Per-session z-scored, repetition-averaged responses of reliable voxels per ROI.

    ``betas_format`` (``"hdf5"`` or ``"nifti"``) defaults to the tree's own setting.
    ``subjects`` are the study's subjects: the train images are then the shared images
    eligible for all of them (:func:`shared_train_ids`), the same in every subject's store.
    ROIs with fewer than ``MIN_KEPT_VOXELS`` kept voxels trigger a warning and are still
    returned; scoring skips them (``fit.BrainTargets``).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection {selection!r}: expected one of {SELECTIONS}")
    if not rois or len({roi.name for roi in rois}) != len(rois):
        raise ValueError("rois must be a non-empty list with unique names")
    # Every input is checked before the long read of the betas, so a bad file fails fast.
    sessions = tree.sessions(subject, betas_format)
    trials = trial_table(tree, subject, sessions, betas_format)
    train_ids = None
    if subjects:
        train_ids = shared_train_ids(tree, sorted({*subjects, subject}), betas_format)
    images = choose_image_sets(
        trials,
        tree.design.shared_nsd_ids(),
        n_test=n_test,
        n_reliability=n_reliability,
        seed=seed,
        train_nsd_ids=train_ids,
    )
    check_stim_info(tree, subject, trials, _needed_nsd_ids(images))
    masks = tree.roi_masks(subject, rois)
    union = np.logical_or.reduce(list(masks.values()))
    ncsnr = _ncsnr_at(tree, subject, union, required=selection == "ncsnr")
    for session in sessions:
        tree.check_session_betas(subject, session, union.shape, betas_format)
    repetitions, has_data = _read_repetitions(
        tree, subject, sessions, trials, images, union, betas_format
    )
    union_xyz = np.argwhere(union)
    reliability = split_half_reliability(repetitions[_rows(images, images.reliability)])
    metric, threshold = (
        (reliability, reliability_threshold)
        if selection == "reliability"
        else (ncsnr, ncsnr_threshold)
    )
    with np.errstate(invalid="ignore"):
        kept = has_data & (metric >= threshold)
    averages = repetitions.mean(axis=1)

    voxel_tables, train, test = [], {}, {}
    for name, mask in masks.items():
        columns = _union_columns(union, mask)
        roi_kept = columns[kept[columns]]
        train[name] = averages[np.ix_(_rows(images, images.train), roi_kept)]
        test[name] = averages[np.ix_(_rows(images, images.test), roi_kept)]
        voxel_tables.append(
            pd.DataFrame(
                {
                    "subject": subject,
                    "roi": name,
                    "x": union_xyz[columns, 0],
                    "y": union_xyz[columns, 1],
                    "z": union_xyz[columns, 2],
                    "reliability": reliability[columns].astype(np.float32),
                    "ncsnr": ncsnr[columns].astype(np.float32),
                    "kept": kept[columns],
                }
            )
        )
        if roi_kept.size < MIN_KEPT_VOXELS:
            warnings.warn(
                f"subject {subject} ROI {name}: only {roi_kept.size} voxels pass {selection} "
                f">= {threshold} (fewer than {MIN_KEPT_VOXELS}); the ROI is skipped in scoring",
                stacklevel=2,
            )
    voxels = pd.concat(voxel_tables, ignore_index=True)[VOXEL_TABLE_COLUMNS]
    return SubjectResponses(
        subject=subject,
        train_nsd_ids=images.train,
        test_nsd_ids=images.test,
        train=train,
        test=test,
        reliability_nsd_ids=images.reliability,
        voxels=voxels,
    )


def check_stim_info(
    tree: NsdTree, subject: int, trials: pd.DataFrame, nsd_ids: np.ndarray
) -> None:
    """The stim info CSV must list, for each image used, the trials the design maps to it.

    Two independent routes to the same trial -> image mapping (``masterordering`` and
    ``subjectim`` against ``subject{s}_rep0..2``); a disagreement means the files come from
    different releases or a 0/1-based slip, and every response would be misassigned.
    """
    listed = tree.read_repetition_trials(subject)
    absent = np.setdiff1d(nsd_ids, listed.index.to_numpy())
    if absent.size:
        raise NsdError(f"{tree.stim_info_path}: expected rows for nsd ids {absent[:5].tolist()}")
    from_csv = np.sort(listed.loc[nsd_ids].to_numpy(), axis=1)
    used = trials[trials["nsd_id"].isin(nsd_ids)].sort_values(["nsd_id", "trial"])
    # Every image used has its 3 trials on disk; trial ids in the CSV are 1-based.
    from_design = used["trial"].to_numpy().reshape(-1, MAX_REPETITIONS) + 1
    wrong = np.flatnonzero(np.any(from_csv != from_design, axis=1))
    if wrong.size:
        row = wrong[0]
        raise NsdError(
            f"{tree.stim_info_path}: subject{subject}_rep0..2 list trials "
            f"{from_csv[row].tolist()} for nsd id {nsd_ids[row]}, but {tree.expdesign_path} "
            f"maps trials {from_design[row].tolist()} to it ({wrong.size} images disagree)"
        )


def _needed_nsd_ids(images: _ImageSets) -> np.ndarray:
    """Sorted union of the three image sets: the rows of the repetitions array."""
    return np.unique(np.concatenate([images.train, images.test, images.reliability]))


def _rows(images: _ImageSets, nsd_ids: np.ndarray) -> np.ndarray:
    return np.searchsorted(_needed_nsd_ids(images), nsd_ids)


def _union_columns(union: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Columns of the union's voxel list that belong to ``mask`` (argwhere order)."""
    return np.flatnonzero(mask[union])


def _read_repetitions(
    tree: NsdTree,
    subject: int,
    sessions: list[int],
    trials: pd.DataFrame,
    images: _ImageSets,
    union: np.ndarray,
    betas_format: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Z-scored responses (needed images, 3, union voxels) and which voxels have data.

    Memory stays proportional to the needed images, not to all trials: each session is read
    (bounding box of the union only), z-scored, and its needed trials copied out.
    """
    needed = _needed_nsd_ids(images)
    repetitions = np.full((needed.size, MAX_REPETITIONS, int(union.sum())), np.nan, np.float32)
    has_data = np.ones(repetitions.shape[2], dtype=bool)
    wanted = trials[np.isin(trials["nsd_id"], needed)]
    for session in sessions:
        betas = tree.read_session_betas(subject, session, union, betas_format)
        zscored, session_has_data = zscore_session(betas)
        # A voxel missing in any session is dropped: its averages would mix fewer trials.
        has_data &= session_has_data
        in_session = wanted[wanted["session"] == session]
        image_rows = np.searchsorted(needed, in_session["nsd_id"].to_numpy())
        repetitions[image_rows, in_session["rep"].to_numpy()] = zscored[in_session["row"]]
    return repetitions, has_data


def _ncsnr_at(tree: NsdTree, subject: int, mask: np.ndarray, *, required: bool) -> np.ndarray:
    """ncsnr of the mask's voxels; NaN everywhere when the volume is absent and optional."""
    volume = tree.read_ncsnr(subject)
    path = tree.ncsnr_path(subject)
    if volume is None:
        if required:
            raise NsdError(f"{path}: missing file; selection='ncsnr' needs it")
        return np.full(int(mask.sum()), np.nan, dtype=np.float32)
    if volume.shape != mask.shape:
        raise NsdError(f"{path}: expected shape {mask.shape} like the ROIs, got {volume.shape}")
    return volume[mask]


# ----------------------------------------------------------------------------- stores
def _write_atomically(path: str | Path, write_group) -> Path:
    """Build the store under a temporary sibling name, then move it into place.

    A job killed at any moment leaves either the old store or none, never a partial one that
    looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write_group(zarr.open_group(store=str(temporary), mode="w", zarr_format=3))
        if path.exists():
            stale = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
            os.replace(path, stale)
            os.replace(temporary, path)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def _remove_stale_temporaries(path: Path) -> None:
    # What a job killed mid-write (SIGKILL skips the cleanup above) left beside this output.
    # Snakemake runs one job per output at a time, so these belong to no live writer.
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def write_response_store(path: str | Path, responses: ResponseSet) -> Path:
    """Write train/test responses per ROI as a zarr v3 group (atomically)."""

    reliability_ids = getattr(responses, "reliability_nsd_ids", None)

    def write(group: zarr.Group) -> None:
        group.create_array("train_nsd_ids", data=np.asarray(responses.train_nsd_ids, np.int64))
        group.create_array("test_nsd_ids", data=np.asarray(responses.test_nsd_ids, np.int64))
        if reliability_ids is not None:
            group.create_array("reliability_nsd_ids", data=np.asarray(reliability_ids, np.int64))
        for split, by_roi in (("train", responses.train), ("test", responses.test)):
            split_group = group.create_group(split)
            for roi, values in by_roi.items():
                split_group.create_array(roi, data=np.asarray(values, dtype=np.float32))
        group.attrs.update(
            {
                "subject": int(responses.subject),
                "rois": responses.rois,
                "kept_counts": responses.kept_counts(),
            }
        )

    return _write_atomically(path, write)


def read_response_store(path: str | Path) -> ResponseSet:
    """Read a store written by :func:`write_response_store`."""
    group = zarr.open_group(store=str(path), mode="r")
    rois = list(group.attrs["rois"])
    return ResponseSet(
        subject=int(group.attrs["subject"]),
        train_nsd_ids=group["train_nsd_ids"][:],
        test_nsd_ids=group["test_nsd_ids"][:],
        train={roi: group[f"train/{roi}"][:] for roi in rois},
        test={roi: group[f"test/{roi}"][:] for roi in rois},
    )


def store_image_counts(path: str | Path) -> dict[str, int]:
    """Images per split of a response store, from the id arrays' shapes (no data is read)."""
    group = zarr.open_group(store=str(path), mode="r")
    return {
        split: int(group[f"{split}_nsd_ids"].shape[0])
        for split in SPLITS
        if f"{split}_nsd_ids" in group
    }


def image_counts_by_subject(store_paths) -> dict[int, dict[str, int]]:
    """subject -> images per split, for several response stores."""
    return {
        int(zarr.open_group(store=str(path), mode="r").attrs["subject"]): store_image_counts(path)
        for path in store_paths
    }


# ---------------------------------------------------------------------------- summary
def brain_summary(voxels: pd.DataFrame, image_counts: dict[int, dict[str, int]]) -> pd.DataFrame:
    """Voxels and kept voxels per subject x ROI, whether the ROI is scored (at least
    ``MIN_KEPT_VOXELS`` kept), and the subject's images per split (``image_counts``:
    subject -> split -> count, e.g. from :func:`store_image_counts`)."""
    grouped = voxels.groupby(["subject", "roi"], sort=False)["kept"]
    summary = grouped.agg(voxels="size", kept="sum").reset_index()
    summary["kept"] = summary["kept"].astype(int)
    summary["scored"] = summary["kept"] >= MIN_KEPT_VOXELS
    for split in SPLITS:
        summary[f"{split}_images"] = [
            image_counts.get(int(subject), {}).get(split, 0) for subject in summary["subject"]
        ]
    return summary[SUMMARY_COLUMNS]


def write_summary(summary: pd.DataFrame, path: str | Path) -> Path:
    """The summary as TSV, written under a temporary name and renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    partial = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    summary.to_csv(partial, sep="\t", index=False)
    os.replace(partial, path)
    return path


def write_stimuli_store(path: str | Path, tree: NsdTree, nsd_ids: np.ndarray) -> Path:
    """Copy the stimuli of ``nsd_ids`` (in that order) into a zarr group, one chunk per image."""
    nsd_ids = np.asarray(nsd_ids, dtype=np.int64).ravel()

    def write(group: zarr.Group) -> None:
        first = tree.read_stimuli(nsd_ids[:1])
        height, width = first.shape[1:3]
        images = group.create_array(
            "images",
            shape=(nsd_ids.size, height, width, 3),
            chunks=(1, height, width, 3),
            dtype=np.uint8,
        )
        for start in range(0, nsd_ids.size, STIMULI_BATCH):
            batch = nsd_ids[start : start + STIMULI_BATCH]
            images[start : start + batch.size] = tree.read_stimuli(batch)
        group.create_array("nsd_ids", data=nsd_ids)

    if nsd_ids.size == 0:
        raise ValueError("nsd_ids is empty: a stimuli store needs at least one image")
    return _write_atomically(path, write)


def read_stimuli_store(path: str | Path) -> StimulusSet:
    """Open a store written by :func:`write_stimuli_store`; images are read on slicing."""
    group = zarr.open_group(store=str(path), mode="r")
    return StimulusSet(nsd_ids=group["nsd_ids"][:], images=group["images"])


# ---------------------------------------------------------------------- input formats
FORMATS = ("nsd", "algonauts", "byo")


def open_brain_source(nsd: dict):
    """The reader the config's ``nsd`` section names (``format``: nsd, algonauts or byo).

    Every reader has ``read_stimuli(ids)``, and :func:`study_train_ids` and
    :func:`build_responses` accept it, so the stores, the voxel table and the summary are
    written by one code path whatever the format.
    """
    # Imported here: those modules import this one.
    from nsdbench.algonauts import AlgonautsTree
    from nsdbench.byo import ByoTree

    kind = nsd.get("format", "nsd")
    if kind == "algonauts":
        return AlgonautsTree(nsd["root"])
    if kind == "byo":
        return ByoTree(nsd["root"])
    if kind != "nsd":
        raise NsdError(f"config key 'nsd.format': {kind!r}; expected one of {FORMATS}")
    return NsdTree(nsd["root"], betas_format=nsd.get("betas_format", "hdf5"))


def study_train_ids(source, subjects: list[int]) -> np.ndarray:
    """The train images shared by the study's subjects, as every reader defines them."""
    if isinstance(source, NsdTree):
        return shared_train_ids(source, subjects)
    return source.study_train_ids(subjects)


def build_responses(source, subject: int, rois: list[RoiSpec], **options) -> SubjectResponses:
    """A subject's responses from any reader; ``options`` are those of
    :func:`build_subject_responses` (readers ignore the ones their data cannot use)."""
    from nsdbench import algonauts, byo

    if isinstance(source, algonauts.AlgonautsTree):
        return algonauts.build_subject_responses(source, subject, rois, **options)
    if isinstance(source, byo.ByoTree):
        return byo.build_subject_responses(source, subject, rois, **options)
    return build_subject_responses(source, subject, rois, **options)
