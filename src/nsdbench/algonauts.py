"""The Algonauts 2023 release of NSD (``docs/nsd-layout.md`` section 6) as a brain input.

The release is already prepared: responses are fsaverage-vertex betas, z-scored per session and
averaged over repetitions, one row per training image in ascending nsd id. What it lacks shapes
what we can do with it:
- no test fMRI: each subject's test images are ``n_test`` of its own training images, drawn
  with the config seed (the release's test split has images only);
- no repetitions: no split-half reliability, so every vertex of an ROI is kept, and the voxel
  table records reliability and ncsnr as NaN;
- no design file: the shared (shared1000) images are found as the images every configured
  subject has, which is exactly shared1000 because NSD's other images are each seen by one
  subject only. That needs at least two subjects.

The voxel table keeps its NSD columns: ``x`` is the vertex index within its hemisphere, ``y``
the hemisphere (0 left, 1 right) and ``z`` is 0.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from nsdbench.brain import VOXEL_TABLE_COLUMNS, SubjectResponses
from nsdbench.nsd import NsdError, RoiSpec

HEMISPHERES = ("lh", "rh")
IMAGE_NAME = re.compile(r"^(?:train|test)-(\d{4})_nsd-(\d{5})\.png$")

# The pickle globals an object .npy holding a dict needs: the array and the numpy scalar
# keys. Anything else in a mapping file is refused rather than executed.
_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class AlgonautsError(NsdError):
    """A file of the Algonauts tree is missing or not what the release layout says."""


class _MappingUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return super().find_class(module, name)


def read_label_mapping(path: str | Path) -> dict[int, str]:
    """A ``mapping_{roi}.npy`` file: the pickled dict {label int: name}.

    ``np.load(allow_pickle=True)`` would run any code the pickle names; instead the header is
    parsed by numpy and the payload by an unpickler that only builds arrays and numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise AlgonautsError(f"{path}: missing file; expected a pickled dict {{int: ROI name}}")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            _, _, dtype = read_header(handle)
            if dtype.hasobject:
                loaded = _MappingUnpickler(handle).load()
            else:
                raise ValueError(f"dtype {dtype} holds no dict")
    except Exception as error:  # noqa: BLE001 - any parse failure is a bad file
        raise AlgonautsError(
            f"{path}: cannot read a pickled dict {{int: ROI name}} ({error})"
        ) from error
    mapping = loaded.item() if isinstance(loaded, np.ndarray) and loaded.shape == () else loaded
    if not isinstance(mapping, dict) or not all(
        isinstance(key, (int, np.integer)) and isinstance(value, str)
        for key, value in mapping.items()
    ):
        raise AlgonautsError(f"{path}: expected a dict {{int: ROI name}}, got {type(mapping)}")
    return {int(key): value for key, value in mapping.items()}


class AlgonautsTree:
    """Paths and checked reads of an Algonauts 2023 tree (``root/subjXX/...``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"AlgonautsTree({str(self.root)!r})"

    def subject_dir(self, subject: int) -> Path:
        return self.root / f"subj{subject:02d}"

    def fmri_path(self, subject: int, hemisphere: str) -> Path:
        return (
            self.subject_dir(subject)
            / "training_split/training_fmri"
            / f"{hemisphere}_training_fmri.npy"
        )

    def images_dir(self, subject: int, split: str = "training") -> Path:
        return self.subject_dir(subject) / f"{split}_split/{split}_images"

    def mask_path(self, subject: int, hemisphere: str, roi_file: str) -> Path:
        return self.subject_dir(subject) / f"roi_masks/{hemisphere}.{roi_file}_challenge_space.npy"

    def mapping_path(self, subject: int, roi_file: str) -> Path:
        return self.subject_dir(subject) / f"roi_masks/mapping_{roi_file}.npy"

    # ---------------------------------------------------------------------- images
    def image_files(self, subject: int, split: str = "training") -> dict[int, Path]:
        """nsd id -> PNG file of the subject's split, from the file names."""
        folder = self.images_dir(subject, split)
        if not folder.is_dir():
            if split == "test":
                return {}
            raise AlgonautsError(f"{folder}: missing folder of train-XXXX_nsd-YYYYY.png images")
        files = {}
        for path in sorted(folder.iterdir()):
            match = IMAGE_NAME.match(path.name)
            if match:
                files[int(match.group(2))] = path
        if split == "training" and not files:
            raise AlgonautsError(f"{folder}: no train-XXXX_nsd-YYYYY.png images")
        return files

    def train_nsd_ids(self, subject: int) -> np.ndarray:
        """Sorted nsd ids of the subject's training images: the rows of its fMRI files."""
        return np.array(sorted(self.image_files(subject)), dtype=np.int64)

    def study_train_ids(self, subjects: list[int]) -> np.ndarray:
        """The images every subject has in its training split (shared1000 ∩ on disk)."""
        if len(set(subjects)) < 2:
            raise ValueError(
                "nsd.format 'algonauts' needs at least 2 subjects: the shared images are found "
                "as the training images common to all configured subjects"
            )
        shared = self.train_nsd_ids(subjects[0])
        for subject in subjects[1:]:
            shared = np.intersect1d(shared, self.train_nsd_ids(subject))
        if shared.size == 0:
            raise AlgonautsError(
                f"{self.root}: subjects {subjects} share no training image; expected shared1000"
            )
        return shared

    def read_stimuli(self, nsd_ids: np.ndarray) -> np.ndarray:
        """Images (n, H, W, 3) uint8 for nsd ids, in the order given, from any subject."""
        files: dict[int, Path] = {}
        for folder in sorted(self.root.glob("subj[0-9][0-9]")):
            subject = int(folder.name[4:])
            for split in ("test", "training"):
                files.update(self.image_files(subject, split))
        return read_images([files.get(int(nsd_id)) for nsd_id in nsd_ids], nsd_ids, self.root)

    # ------------------------------------------------------------------------ fMRI
    def read_fmri(self, subject: int, hemisphere: str, n_rows: int) -> np.ndarray:
        """Memory-mapped (n_train_images, n_vertices) float32 responses of one hemisphere."""
        path = self.fmri_path(subject, hemisphere)
        values = load_npy(path, "a float32 (n_train_images, n_vertices) array")
        if values.ndim != 2 or values.shape[0] != n_rows:
            raise AlgonautsError(
                f"{path}: expected shape ({n_rows}, n_vertices) with one row per image in "
                f"{self.images_dir(subject)}, got {values.shape}"
            )
        return values

    def roi_vertices(
        self, subject: int, roi: RoiSpec, n_vertices: dict[str, int]
    ) -> dict[str, np.ndarray]:
        """hemisphere -> sorted vertex indices with one of the ROI's labels.

        ``roi.file`` may carry a hemisphere prefix (``lh.floc-faces``) to use one side only.
        """
        hemispheres, roi_file = HEMISPHERES, roi.file
        prefix = roi.file.split(".", 1)[0]
        if prefix in HEMISPHERES:
            hemispheres, roi_file = (prefix,), roi.file.split(".", 1)[1]
        mapping_path = self.mapping_path(subject, roi_file)
        mapping = read_label_mapping(mapping_path)
        by_name = {name: label for label, name in mapping.items()}
        missing = [label for label in roi.labels if label not in by_name]
        if missing:
            raise AlgonautsError(
                f"{mapping_path}: ROI {roi.name} asks for labels {missing}; "
                f"the file names {sorted(by_name)}"
            )
        labels = [by_name[label] for label in roi.labels]
        vertices = {}
        for hemisphere in HEMISPHERES:
            if hemisphere not in hemispheres:
                vertices[hemisphere] = np.zeros(0, dtype=np.int64)
                continue
            path = self.mask_path(subject, hemisphere, roi_file)
            mask = np.asarray(load_npy(path, "an int (n_vertices,) label array"))
            if mask.shape != (n_vertices[hemisphere],):
                raise AlgonautsError(
                    f"{path}: expected shape ({n_vertices[hemisphere]},) like the columns of "
                    f"{self.fmri_path(subject, hemisphere)}, got {mask.shape}"
                )
            vertices[hemisphere] = np.flatnonzero(np.isin(mask, labels))
        return vertices


def read_images(
    files: list[Path | None], ids, where, error: type[Exception] = AlgonautsError
) -> np.ndarray:
    """Decode image files into one (n, H, W, 3) uint8 array; all must share one size."""
    images = []
    for image_id, path in zip(ids, files, strict=True):
        if path is None or not Path(path).is_file():
            raise error(f"{path or where}: missing image file for image id {image_id}")
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if images and pixels.shape != images[0].shape:
            raise error(
                f"{path}: expected {images[0].shape[1]}x{images[0].shape[0]} pixels like "
                f"{files[0]}, got {pixels.shape[1]}x{pixels.shape[0]}"
            )
        images.append(pixels)
    if not images:
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    return np.stack(images)


def load_npy(path: Path, expected: str, error: type[Exception] = AlgonautsError) -> np.ndarray:
    """A .npy array, memory-mapped, never unpickled; ``error`` names the file otherwise."""
    if not path.is_file():
        raise error(f"{path}: missing file; expected {expected}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as problem:
        raise error(f"{path}: not {expected} ({problem})") from problem


# ----------------------------------------------------------------------- the builder
def build_subject_responses(
    tree: AlgonautsTree,
    subject: int,
    rois: list[RoiSpec],
    *,
    n_test: int,
    seed: int = 0,
    subjects: list[int] | None = None,
    **_nsd_only,
) -> SubjectResponses:
    """Train (shared) and test (own, seeded) responses of every vertex of each ROI.

    ``subjects`` are the study's subjects (the shared images are those all of them have).
    Keyword arguments that only the NSD reader uses (voxel selection, reliability images) are
    accepted and ignored: this release has no repetitions to select with.
    """
    if not rois or len({roi.name for roi in rois}) != len(rois):
        raise ValueError("rois must be a non-empty list with unique names")
    image_ids = tree.train_nsd_ids(subject)
    train = tree.study_train_ids(sorted({*(subjects or []), subject}))
    test = choose_test_ids(np.setdiff1d(image_ids, train), n_test, seed)
    fmri = {hemi: tree.read_fmri(subject, hemi, image_ids.size) for hemi in HEMISPHERES}
    n_vertices = {hemi: values.shape[1] for hemi, values in fmri.items()}
    # One read of the needed rows per hemisphere; the ROIs then take their columns.
    train_rows = {
        hemi: np.asarray(values[np.searchsorted(image_ids, train)]) for hemi, values in fmri.items()
    }
    test_rows = {
        hemi: np.asarray(values[np.searchsorted(image_ids, test)]) for hemi, values in fmri.items()
    }

    tables, train_values, test_values = [], {}, {}
    for roi in rois:
        vertices = tree.roi_vertices(subject, roi, n_vertices)
        # Columns: the left hemisphere's vertices, then the right's (the voxel table's order).
        train_values[roi.name] = _roi_columns(train_rows, vertices)
        test_values[roi.name] = _roi_columns(test_rows, vertices)
        tables.append(_vertex_table(subject, roi.name, vertices))
    return SubjectResponses(
        subject=subject,
        train_nsd_ids=train,
        test_nsd_ids=test,
        train=train_values,
        test=test_values,
        reliability_nsd_ids=np.zeros(0, dtype=np.int64),
        voxels=pd.concat(tables, ignore_index=True)[VOXEL_TABLE_COLUMNS],
    )


def choose_test_ids(own: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """``n_test`` of the subject's own images, drawn as the NSD reader draws them."""
    if n_test > own.size:
        raise ValueError(f"n_test={n_test} exceeds the subject's {own.size} own training images")
    return np.sort(np.random.default_rng(seed).permutation(own)[:n_test])


def _roi_columns(rows: dict, vertices: dict) -> np.ndarray:
    parts = [rows[hemi][:, vertices[hemi]] for hemi in HEMISPHERES]
    return np.concatenate(parts, axis=1).astype(np.float32)


def _vertex_table(subject: int, roi: str, vertices: dict[str, np.ndarray]) -> pd.DataFrame:
    index = np.concatenate([vertices[hemi] for hemi in HEMISPHERES])
    side = np.concatenate([np.full(vertices[h].size, i) for i, h in enumerate(HEMISPHERES)])
    return pd.DataFrame(
        {
            "subject": subject,
            "roi": roi,
            "x": index.astype(np.int64),
            "y": side.astype(np.int64),
            "z": np.zeros(index.size, dtype=np.int64),
            # No repetitions in this release: no reliability, every vertex kept.
            "reliability": np.full(index.size, np.nan, dtype=np.float32),
            "ncsnr": np.full(index.size, np.nan, dtype=np.float32),
            "kept": np.ones(index.size, dtype=bool),
        }
    )
