"""Bring-your-own brain data: a lab's fMRI or electrophysiology in a small documented layout.

```
root/
  stimuli.csv          one row per image; columns image_id, split, file
                         image_id: integer >= 0, unique (the id the stores carry, like NSD ids)
                         split:    train | test | reliability
                         file:     image path relative to root (PNG or JPEG; all the same size)
  sub-01/              one folder per configured subject, sub-{subject:02d}
    image_ids.npy      integer (n_images,), unique: the image of each response row
    {roi}.npy          numeric (n_images, n_units), or (n_reps, n_images, n_units) with
                       repetitions; {roi} is the ROI's config ``name`` (its file/labels are unused)
```
Image sets: train = every ``train`` image (every subject must have all of them, the same rows
in the same order for all subjects: sorted by id); a subject's test images = the ``test``
images it has (at least one); its reliability images = the ``reliability`` images it has.

Unit selection: responses are used as given (normalize them beforehand if you need to). Without
repetitions every unit is kept and the voxel table's reliability is NaN. With repetitions the
responses are averaged over them and a unit is kept when its split-half reliability (mean
pairwise Pearson r between repetitions, over the subject's reliability images, or its train
images if it has none) reaches ``voxels.reliability_threshold``, as for NSD. A unit with a
non-finite value anywhere is never kept. ncsnr is NaN (it is an NSD release product).

The voxel table keeps its NSD columns: ``x`` is the unit's column in ``{roi}.npy``, ``y`` and
``z`` are 0.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from nsdbench.algonauts import load_npy, read_images
from nsdbench.brain import (
    MIN_KEPT_VOXELS,
    VOXEL_TABLE_COLUMNS,
    SubjectResponses,
    split_half_reliability,
)
from nsdbench.nsd import NsdError, RoiSpec

SPLITS = ("train", "test", "reliability")
STIMULI_COLUMNS = ("image_id", "split", "file")


class ByoError(NsdError):
    """A file of a bring-your-own tree is missing or not what the format says."""


class ByoTree:
    """Paths and checked reads of a bring-your-own tree (layout in the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._stimuli: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"ByoTree({str(self.root)!r})"

    @property
    def stimuli_path(self) -> Path:
        return self.root / "stimuli.csv"

    def subject_dir(self, subject: int) -> Path:
        return self.root / f"sub-{subject:02d}"

    def image_ids_path(self, subject: int) -> Path:
        return self.subject_dir(subject) / "image_ids.npy"

    def roi_path(self, subject: int, roi: str) -> Path:
        return self.subject_dir(subject) / f"{roi}.npy"

    # ---------------------------------------------------------------------- images
    @property
    def stimuli(self) -> pd.DataFrame:
        """stimuli.csv, checked, indexed by image_id."""
        if self._stimuli is None:
            self._stimuli = _read_stimuli_table(self.stimuli_path)
        return self._stimuli

    def ids_of_split(self, split: str) -> np.ndarray:
        table = self.stimuli
        return np.sort(table.index[table["split"] == split].to_numpy(np.int64))

    def study_train_ids(self, subjects: list[int] | None = None) -> np.ndarray:
        """The train images (sorted ids); every subject's responses must cover them."""
        train = self.ids_of_split("train")
        if train.size == 0:
            raise ByoError(f"{self.stimuli_path}: no image has split 'train'")
        return train

    def read_stimuli(self, image_ids: np.ndarray) -> np.ndarray:
        """Images (n, H, W, 3) uint8 for image ids, in the order given."""
        table = self.stimuli
        unknown = np.setdiff1d(image_ids, table.index.to_numpy())
        if unknown.size:
            raise ByoError(f"{self.stimuli_path}: no rows for image ids {unknown[:5].tolist()}")
        files = [self.root / table.at[int(image_id), "file"] for image_id in image_ids]
        return read_images(files, image_ids, self.stimuli_path, error=ByoError)

    # ------------------------------------------------------------------- responses
    def subject_image_ids(self, subject: int) -> np.ndarray:
        path = self.image_ids_path(subject)
        ids = _load_npy(path, "an integer (n_images,) array of image ids")
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ByoError(
                f"{path}: expected an integer (n_images,) array, got {ids.dtype} {ids.shape}"
            )
        if np.unique(ids).size != ids.size:
            raise ByoError(f"{path}: image ids must be unique")
        unknown = np.setdiff1d(ids, self.stimuli.index.to_numpy())
        if unknown.size:
            raise ByoError(
                f"{path}: image ids {unknown[:5].tolist()} have no row in {self.stimuli_path}"
            )
        return ids.astype(np.int64)

    def read_roi(self, subject: int, roi: str, n_images: int) -> np.ndarray:
        """(n_reps, n_images, n_units) float32; n_reps is 1 without repetitions."""
        path = self.roi_path(subject, roi)
        values = _load_npy(
            path, f"a numeric ({n_images}, n_units) or (n_reps, {n_images}, n_units) array"
        )
        if not np.issubdtype(values.dtype, np.number) or values.ndim not in (2, 3):
            raise ByoError(
                f"{path}: expected a numeric (n_images, n_units) or (n_reps, n_images, n_units) "
                f"array, got {values.dtype} {values.shape}"
            )
        if values.ndim == 2:
            values = values[np.newaxis]
        if values.shape[1] != n_images or values.shape[2] == 0:
            raise ByoError(
                f"{path}: expected {n_images} image rows (one per id in "
                f"{self.image_ids_path(subject)}) and at least one unit, got shape {values.shape}"
            )
        return np.asarray(values, dtype=np.float32)


def _read_stimuli_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ByoError(f"{path}: missing file; expected a CSV with columns image_id, split, file")
    table = pd.read_csv(path)
    missing = [column for column in STIMULI_COLUMNS if column not in table.columns]
    if missing:
        raise ByoError(f"{path}: missing columns {missing}; expected image_id, split, file")
    if not pd.api.types.is_integer_dtype(table["image_id"]) or (table["image_id"] < 0).any():
        raise ByoError(f"{path}: column image_id must hold integers >= 0")
    if table["image_id"].duplicated().any():
        duplicated = table.loc[table["image_id"].duplicated(), "image_id"].tolist()
        raise ByoError(f"{path}: duplicate image ids {duplicated[:5]}")
    bad = sorted(set(table["split"]) - set(SPLITS))
    if bad:
        raise ByoError(f"{path}: column split has {bad}; expected one of {list(SPLITS)}")
    return table.set_index("image_id")


def _load_npy(path: Path, expected: str) -> np.ndarray:
    return load_npy(path, expected, ByoError)


# ----------------------------------------------------------------------- the builder
def build_subject_responses(
    tree: ByoTree,
    subject: int,
    rois: list[RoiSpec],
    *,
    reliability_threshold: float = 0.1,
    selection: str = "reliability",
    **_nsd_only,
) -> SubjectResponses:
    """Train/test responses per ROI, units selected by split-half reliability when the files
    hold repetitions. NSD-only keyword arguments (n_test, seed, ...) are accepted and ignored:
    the image sets come from stimuli.csv."""
    if not rois or len({roi.name for roi in rois}) != len(rois):
        raise ValueError("rois must be a non-empty list with unique names")
    image_ids = tree.subject_image_ids(subject)
    train = tree.study_train_ids()
    absent = np.setdiff1d(train, image_ids)
    if absent.size:
        raise ByoError(
            f"{tree.image_ids_path(subject)}: lacks train images {absent[:5].tolist()} "
            f"({absent.size} in all); every subject needs every train image of {tree.stimuli_path}"
        )
    test = np.intersect1d(tree.ids_of_split("test"), image_ids)
    if test.size == 0:
        raise ByoError(
            f"{tree.image_ids_path(subject)}: no image with split 'test' in {tree.stimuli_path}"
        )
    reliability = np.intersect1d(tree.ids_of_split("reliability"), image_ids)
    rows = {
        "train": np.searchsorted(np.sort(image_ids), train),
        "test": np.searchsorted(np.sort(image_ids), test),
        # Without reliability images, selection uses the train images.
        "reliability": np.searchsorted(
            np.sort(image_ids), reliability if reliability.size else train
        ),
    }
    order = np.argsort(image_ids)  # response rows in sorted-id order

    tables, train_values, test_values = [], {}, {}
    for roi in rois:
        values = tree.read_roi(subject, roi.name, image_ids.size)[:, order]
        if values.shape[0] > 1 and selection != "reliability":
            raise ValueError(
                f"config key 'voxels.selection': {selection!r} needs the NSD release; "
                "bring-your-own data select units by split-half 'reliability'"
            )
        unit_reliability, kept = select_units(values, rows["reliability"], reliability_threshold)
        averages = values.mean(axis=0)
        train_values[roi.name] = averages[rows["train"]][:, kept]
        test_values[roi.name] = averages[rows["test"]][:, kept]
        tables.append(_unit_table(subject, roi.name, unit_reliability, kept))
        if kept.sum() < MIN_KEPT_VOXELS:
            warnings.warn(
                f"subject {subject} ROI {roi.name}: only {kept.sum()} units kept (fewer than "
                f"{MIN_KEPT_VOXELS}); the ROI is skipped in scoring",
                stacklevel=3,  # the caller of brain.build_responses
            )
    return SubjectResponses(
        subject=subject,
        train_nsd_ids=train,
        test_nsd_ids=test,
        train=train_values,
        test=test_values,
        reliability_nsd_ids=reliability,
        voxels=pd.concat(tables, ignore_index=True)[VOXEL_TABLE_COLUMNS],
    )


def select_units(
    values: np.ndarray, reliability_rows: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split-half reliability per unit (NaN without repetitions) and which units are kept.

    ``values`` is (n_reps, n_images, n_units). Units with a non-finite value are dropped.
    """
    finite = np.all(np.isfinite(values), axis=(0, 1))
    if values.shape[0] == 1:
        return np.full(values.shape[2], np.nan, dtype=np.float32), finite
    # split_half_reliability takes (images, reps, units).
    reliability = split_half_reliability(values[:, reliability_rows].transpose(1, 0, 2))
    with np.errstate(invalid="ignore"):
        kept = finite & (reliability >= threshold)
    return reliability.astype(np.float32), kept


def _unit_table(subject: int, roi: str, reliability: np.ndarray, kept: np.ndarray):
    n_units = kept.size
    return pd.DataFrame(
        {
            "subject": subject,
            "roi": roi,
            "x": np.arange(n_units, dtype=np.int64),
            "y": np.zeros(n_units, dtype=np.int64),
            "z": np.zeros(n_units, dtype=np.int64),
            "reliability": reliability,
            "ncsnr": np.full(n_units, np.nan, dtype=np.float32),
            "kept": kept,
        }
    )
