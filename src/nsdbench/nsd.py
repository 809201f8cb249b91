"""Reader for a Natural Scenes Dataset tree as released (func1pt8mm volume space).

The layout, dtypes and axis orders follow ``docs/nsd-layout.md``. Everything here reads the
real files; the fake tree in :mod:`nsdbench.demo.nsd_tree` uses the same layout, so the demo
exercises exactly this code.

Conventions:
- NSD files are 1-based (``nsd_expdesign.mat``, trial ids in the CSV); everything this module
  returns as an "nsd id" is 0-based (the ``imgBrick`` row, the CSV ``nsdId``).
- Volumes are indexed in NIfTI space ``(X, Y, Z)``. Voxel lists follow ``np.argwhere(mask)``
  order (C order over x, y, z).
"""

from __future__ import annotations

import contextlib
import re
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import scipy.io

from nsdbench.joblog import UserError

# Betas are stored as percent signal change multiplied by this factor, as int16.
BETA_SCALE = 300.0
BETA_FORMATS = {"hdf5": "hdf5", "nifti": "nii.gz"}
SESSION_FILE_PATTERN = re.compile(r"^betas_session(\d{2})\.(hdf5|nii\.gz)$")
N_DESIGN_SUBJECTS = 8
MAX_REPETITIONS = 3
BETAS_SUBDIR = "func1pt8mm/betas_fithrf_GLMdenoise_RR"
# Betas are read in pieces of at most this many int16 values (16 MB). A session file is about
# 1 GB and the 16 ROIs' bounding box a good part of it. Smaller pieces are also faster for the
# HDF5 files: HDF5 keeps a selection record per chunk read at once, and a chunk is one voxel.
READ_BLOCK_VALUES = 8 * 2**20


class NsdError(UserError):
    """An NSD file is missing or does not hold what the layout promises."""


@dataclass
class RoiSpec:
    """A named region: the union of ``labels`` of one ROI volume ``file`` (e.g. prf-visualrois).

    ``file`` is the volume name without extension (``prf-visualrois``), optionally with a
    hemisphere prefix (``lh.floc-faces``); the label table is shared by both hemispheres.
    """

    name: str
    file: str
    labels: list[str] = field(default_factory=list)


@dataclass
class NsdDesign:
    """The experimental design, with the raw 1-based values of ``nsd_expdesign.mat``.

    ``masterordering`` (T,) holds the 10k index (1..K) of every trial; ``subjectim`` (8, K)
    the 73k id (1..73000) of each 10k index per subject; ``sharedix`` (S,) the sorted 73k ids
    of the shared images; ``basiccnt`` (3, n_sessions) per-session image counts by number of
    presentations; ``stimpattern`` (n_sessions, 12 runs, slots) 0/1 marks of stimulus trials.

    Trials per session are counted from ``stimpattern``: it marks every stimulus trial, so
    the count does not depend on how ``basiccnt`` tallies repeated images.
    """

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray
    basiccnt: np.ndarray
    stimpattern: np.ndarray

    @property
    def n_shared(self) -> int:
        return int(self.sharedix.size)

    @property
    def n_sessions(self) -> int:
        return int(self.stimpattern.shape[0])

    def has_session(self, session: int) -> bool:
        return 1 <= session <= self.n_sessions

    def shared_nsd_ids(self) -> np.ndarray:
        """Sorted 0-based nsd ids of the shared images."""
        return self.sharedix - 1

    def trials_in_session(self, session: int) -> int:
        """Number of stimulus trials the design puts in ``session`` (1-based)."""
        self._check_session(session)
        return int(self.stimpattern[session - 1].sum())

    def first_trial(self, session: int) -> int:
        """0-based global trial index of the first trial of ``session``."""
        self._check_session(session)
        return sum(self.trials_in_session(s) for s in range(1, session))

    def subject_trials(self, subject: int, n_trials: int) -> np.ndarray:
        """0-based nsd id shown on each global trial ``t < n_trials`` to ``subject`` (1..8)."""
        _check_subject(subject)
        if not 0 <= n_trials <= self.masterordering.size:
            raise ValueError(
                f"n_trials={n_trials}: the design has {self.masterordering.size} trials"
            )
        img10k = self.masterordering[:n_trials]
        return self.subjectim[subject - 1, img10k - 1] - 1

    def _check_session(self, session: int) -> None:
        if not self.has_session(session):
            raise ValueError(f"session {session}: the design has sessions 1..{self.n_sessions}")


def _check_subject(subject: int) -> None:
    if not 1 <= subject <= N_DESIGN_SUBJECTS:
        raise ValueError(f"subject {subject}: NSD subjects are 1..{N_DESIGN_SUBJECTS}")


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise NsdError(f"{path}: missing file; expected {what}")
    return path


def _mask_bounding_box(mask_xyz: np.ndarray) -> tuple[slice, slice, slice]:
    """Slices (x, y, z) of the smallest box holding every True voxel of a non-empty mask."""
    corners = np.argwhere(mask_xyz)
    low, high = corners.min(axis=0), corners.max(axis=0) + 1
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))


class NsdTree:
    """Paths into an NSD root (a mirror of ``s3://natural-scenes-dataset``) and readers.

    ``betas_format`` picks the betas files read by :meth:`sessions` and
    :meth:`read_session_betas`: ``"hdf5"`` (default) or ``"nifti"``.
    """

    def __init__(self, root: str | Path, betas_format: str = "hdf5"):
        self.root = Path(root)
        self.betas_format = _check_format(betas_format)

    def __repr__(self) -> str:
        return f"NsdTree({str(self.root)!r}, betas_format={self.betas_format!r})"

    # ----------------------------------------------------------------- paths
    @property
    def expdesign_path(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_expdesign.mat"

    @property
    def stim_info_path(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"

    @property
    def stimuli_path(self) -> Path:
        return self.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

    def betas_dir(self, subject: int) -> Path:
        _check_subject(subject)
        return self.root / f"nsddata_betas/ppdata/subj{subject:02d}" / BETAS_SUBDIR

    def betas_path(self, subject: int, session: int, betas_format: str | None = None) -> Path:
        extension = BETA_FORMATS[_check_format(betas_format or self.betas_format)]
        return self.betas_dir(subject) / f"betas_session{session:02d}.{extension}"

    def ncsnr_path(self, subject: int) -> Path:
        return self.betas_dir(subject) / "ncsnr.nii.gz"

    def roi_path(self, subject: int, file_name: str) -> Path:
        _check_subject(subject)
        return self.root / f"nsddata/ppdata/subj{subject:02d}/func1pt8mm/roi/{file_name}.nii.gz"

    def label_table_path(self, subject: int, file_name: str) -> Path:
        _check_subject(subject)
        # lh./rh. volumes share the label table of the bilateral file.
        atlas = re.sub(r"^(lh|rh)\.", "", file_name)
        return self.root / f"nsddata/freesurfer/subj{subject:02d}/label/{atlas}.mgz.ctab"

    # ---------------------------------------------------------------- design
    def read_design(self) -> NsdDesign:
        """Read ``nsd_expdesign.mat``, checking the fields this package relies on."""
        path = _require_file(self.expdesign_path, "the NSD design (MATLAB .mat)")
        try:
            mat = scipy.io.loadmat(path)
        except (ValueError, OSError) as error:
            raise NsdError(f"{path}: not a readable MATLAB file ({error})") from error
        fields = {
            name: _design_field(mat, name, path)
            for name in ("masterordering", "subjectim", "sharedix", "basiccnt", "stimpattern")
        }
        design = NsdDesign(
            masterordering=fields["masterordering"].ravel(),
            subjectim=fields["subjectim"],
            sharedix=fields["sharedix"].ravel(),
            basiccnt=fields["basiccnt"],
            stimpattern=fields["stimpattern"],
        )
        _validate_design(design, path)
        return design

    @cached_property
    def design(self) -> NsdDesign:
        """The design, read once per tree."""
        return self.read_design()

    # ----------------------------------------------------------------- betas
    def sessions(self, subject: int, betas_format: str | None = None) -> list[int]:
        """Sorted 1-based session numbers with a betas file in the chosen format."""
        directory = self.betas_dir(subject)
        if not directory.is_dir():
            raise NsdError(f"{directory}: missing directory; expected betas_sessionNN files")
        extension = BETA_FORMATS[_check_format(betas_format or self.betas_format)]
        found = []
        for path in directory.iterdir():
            match = SESSION_FILE_PATTERN.match(path.name)
            if match and match.group(2) == extension:
                found.append(int(match.group(1)))
        if not found:
            raise NsdError(f"{directory}: expected betas_sessionNN.{extension} files, found none")
        return sorted(found)

    def read_session_betas(
        self,
        subject: int,
        session: int,
        mask_xyz: np.ndarray,
        betas_format: str | None = None,
    ) -> np.ndarray:
        """Betas (% signal change, float32) of one session, shape (trials, voxels of mask).

        Only bounding boxes of the mask's voxels are read from disk, a block at a time (see
        ``_read_hdf5_betas`` and ``_read_nifti_betas``). The trial count comes from the file
        and must agree with the design.
        """
        betas_format = _check_format(betas_format or self.betas_format)
        path = _require_file(
            self.betas_path(subject, session, betas_format),
            f"betas of session {session}",
        )
        expected_trials = self.expected_trials(subject, session, betas_format)
        mask_xyz = np.asarray(mask_xyz, dtype=bool)
        if betas_format == "hdf5":
            raw = _read_hdf5_betas(path, mask_xyz, expected_trials)
        else:
            raw = _read_nifti_betas(path, mask_xyz, expected_trials)
        return raw.astype(np.float32) / np.float32(BETA_SCALE)

    def check_session_betas(
        self, subject: int, session: int, grid_xyz: tuple, betas_format: str | None = None
    ) -> None:
        """Check a session file's dtype, grid and trial count from its header, reading no
        betas: lets a job refuse a bad file before it spends time on the good ones."""
        betas_format = _check_format(betas_format or self.betas_format)
        path = _require_file(
            self.betas_path(subject, session, betas_format),
            f"betas of session {session}",
        )
        expected_trials = self.expected_trials(subject, session, betas_format)
        if betas_format == "hdf5":
            with _open_hdf5(path) as handle:
                if "betas" not in handle:
                    raise NsdError(f"{path}: missing dataset 'betas'")
                shape, dtype = handle["betas"].shape, handle["betas"].dtype
            _check_betas(path, dtype, shape, (None, *tuple(grid_xyz)[::-1]), "(T, Z, Y, X)")
            n_trials = shape[0]
        else:
            image = _load_nifti(path)
            shape, dtype = image.shape, image.get_data_dtype()
            _check_betas(path, dtype, shape, (*grid_xyz, None), "(X, Y, Z, T)")
            n_trials = shape[3]
        _check_trials(path, n_trials, expected_trials)

    def expected_trials(self, subject: int, session: int, betas_format: str | None = None) -> int:
        """Trials the design puts in ``session``; a session file the design lacks is an error."""
        if not self.design.has_session(session):
            path = self.betas_path(subject, session, betas_format)
            raise NsdError(
                f"{path}: session {session} is not in the design ({self.expdesign_path}: "
                f"sessions 1..{self.design.n_sessions}); expected only betas_session01.."
                f"{self.design.n_sessions:02d}"
            )
        return self.design.trials_in_session(session)

    def read_ncsnr(self, subject: int) -> np.ndarray | None:
        """The noise-ceiling SNR volume (X, Y, Z) float32, or None when the file is absent."""
        path = self.ncsnr_path(subject)
        if not path.is_file():
            return None
        with _reading_values(path):
            volume = np.asarray(_load_nifti(path).dataobj, dtype=np.float32)
        if volume.ndim != 3:
            raise NsdError(f"{path}: expected a 3-D (X, Y, Z) volume, got shape {volume.shape}")
        return volume

    # ------------------------------------------------------------------ ROIs
    def read_roi_volume(self, subject: int, file_name: str) -> np.ndarray:
        """ROI volume (X, Y, Z) int32: -1 outside cortex, 0 unlabelled cortex, 1..N labels."""
        path = _require_file(self.roi_path(subject, file_name), "an integer ROI volume (X, Y, Z)")
        with _reading_values(path):
            volume = np.asarray(_load_nifti(path).dataobj)
        if volume.ndim != 3:
            raise NsdError(f"{path}: expected a 3-D (X, Y, Z) volume, got shape {volume.shape}")
        if not np.all(np.isfinite(volume)) or not np.all(volume == np.round(volume)):
            raise NsdError(f"{path}: expected integer labels (-1, 0, 1..N)")
        volume = volume.astype(np.int32)
        if volume.min(initial=0) < -1:
            raise NsdError(f"{path}: expected labels >= -1, found {volume.min()}")
        return volume

    def read_label_table(self, subject: int, file_name: str) -> dict[str, int]:
        """Label names to ids (1..N) from ``{file}.mgz.ctab``; row 0 (``Unknown``) is dropped."""
        path = _require_file(
            self.label_table_path(subject, file_name),
            "a label table ('<id> <name>' lines)",
        )
        rows = [line.split()[:2] for line in path.read_text().splitlines() if line.strip()]
        try:
            ids = [int(row[0]) for row in rows]
            names = [row[1] for row in rows]
        except (ValueError, IndexError) as error:
            raise NsdError(f"{path}: expected '<int> <name>' on every line") from error
        if ids != list(range(len(ids))):
            raise NsdError(f"{path}: expected consecutive ids 0..N starting with 0 Unknown")
        return dict(zip(names[1:], ids[1:], strict=True))

    def roi_masks(self, subject: int, rois: list[RoiSpec]) -> dict[str, np.ndarray]:
        """Masks of several ROIs by name, checked to lie on one (X, Y, Z) grid."""
        masks, grid_file = {}, None
        for roi in rois:
            mask = self.roi_mask(subject, roi)
            if grid_file is None:
                grid_file, grid = roi.file, mask.shape
            elif mask.shape != grid:
                raise NsdError(
                    f"{self.roi_path(subject, roi.file)}: expected an (X, Y, Z) volume of shape "
                    f"{grid} like {self.roi_path(subject, grid_file).name}, got {mask.shape}"
                )
            masks[roi.name] = mask
        return masks

    def roi_mask(self, subject: int, roi: RoiSpec) -> np.ndarray:
        """Boolean (X, Y, Z) mask: the union of the ROI's labels in its volume."""
        table = self.read_label_table(subject, roi.file)
        missing = [label for label in roi.labels if label not in table]
        if missing or not roi.labels:
            raise NsdError(
                f"{self.label_table_path(subject, roi.file)}: ROI {roi.name!r} asks for "
                f"labels {missing or roi.labels}; the table has {sorted(table)}"
            )
        volume = self.read_roi_volume(subject, roi.file)
        return np.isin(volume, [table[label] for label in roi.labels])

    # --------------------------------------------------------------- stimuli
    def read_stim_info(self) -> pd.DataFrame:
        """``nsd_stim_info_merged.csv``, indexed by its unnamed 0-based first column."""
        path = _require_file(self.stim_info_path, "the merged stimulus info CSV")
        info = pd.read_csv(path, index_col=0)
        required = {"cocoId", "nsdId", "shared1000"}
        if not required <= set(info.columns):
            raise NsdError(f"{path}: expected columns {sorted(required)}, missing some")
        return info

    def read_repetition_trials(self, subject: int) -> pd.DataFrame:
        """Per nsd id, the 1-based trial ids of the subject's 3 presentations (0: not shown),
        from the stim info CSV columns ``subject{s}_rep0..2``."""
        _check_subject(subject)
        info = self.read_stim_info()
        columns = [f"subject{subject}_rep{rep}" for rep in range(MAX_REPETITIONS)]
        missing = [column for column in columns if column not in info.columns]
        if missing:
            raise NsdError(f"{self.stim_info_path}: missing columns {missing}")
        return info[columns]

    def read_stimuli(self, nsd_ids: np.ndarray) -> np.ndarray:
        """Images (n, H, W, 3) uint8 for 0-based nsd ids, in the order given."""
        nsd_ids = np.asarray(nsd_ids, dtype=np.int64).ravel()
        path = _require_file(self.stimuli_path, "an hdf5 file with dataset 'imgBrick'")
        with _open_hdf5(path) as handle:
            bricks = _image_brick(handle, path)
            if nsd_ids.size and (nsd_ids.min() < 0 or nsd_ids.max() >= bricks.shape[0]):
                raise NsdError(f"{path}: nsd ids must lie in 0..{bricks.shape[0] - 1}")
            # h5py fancy indexing needs increasing unique indices; reorder afterwards.
            unique_ids, order = np.unique(nsd_ids, return_inverse=True)
            if unique_ids.size == 0:
                return np.zeros((0, *bricks.shape[1:]), dtype=np.uint8)
            with _reading_values(path):
                return bricks[unique_ids.tolist()][order]


def _check_format(betas_format: str) -> str:
    if betas_format not in BETA_FORMATS:
        raise ValueError(f"betas_format {betas_format!r}: expected one of {sorted(BETA_FORMATS)}")
    return betas_format


def _design_field(mat: dict, name: str, path: Path) -> np.ndarray:
    if name not in mat:
        raise NsdError(f"{path}: missing field {name!r}")
    values = np.asarray(mat[name])
    if not np.issubdtype(values.dtype, np.number) or not np.all(values == np.round(values)):
        raise NsdError(f"{path}: field {name!r} must hold integers")
    return values.astype(np.int64)


def _validate_design(design: NsdDesign, path: Path) -> None:
    """Check the invariants the trial mapping depends on (section 1 of the layout notes)."""
    subjectim, n_shared = design.subjectim, design.n_shared
    if subjectim.ndim != 2 or subjectim.shape[0] != N_DESIGN_SUBJECTS:
        raise NsdError(f"{path}: subjectim must be (8, K), got {subjectim.shape}")
    pattern = design.stimpattern
    if pattern.ndim != 3 or not np.isin(pattern, (0, 1)).all():
        raise NsdError(
            f"{path}: stimpattern must be 0/1 marks (n_sessions, runs, slots), got {pattern.shape}"
        )
    if design.basiccnt.shape != (MAX_REPETITIONS, pattern.shape[0]):
        raise NsdError(
            f"{path}: basiccnt must be (3, {pattern.shape[0]}) like stimpattern's sessions, "
            f"got {design.basiccnt.shape}"
        )
    order = design.masterordering
    if order.size and (order.min() < 1 or order.max() > subjectim.shape[1]):
        raise NsdError(f"{path}: masterordering must hold 10k indices 1..{subjectim.shape[1]}")
    if not np.all(subjectim[:, :n_shared] == design.sharedix):
        raise NsdError(f"{path}: subjectim[:, :S] must equal sharedix for every subject")
    n_design_trials = int(pattern.sum())
    if n_design_trials > order.size:
        raise NsdError(
            f"{path}: stimpattern marks {n_design_trials} trials, masterordering has {order.size}"
        )


def _open_hdf5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:  # h5py's message does not always name the file
        raise NsdError(f"{path}: not a readable HDF5 file, truncated or corrupt ({error})") \
            from error


@contextlib.contextmanager
def _reading_values(path: Path):
    """Turn a failed read of a file's values (a file cut short after a good header: an
    interrupted download) into one error that names the file."""
    try:
        yield
    except (OSError, EOFError, zlib.error, ValueError) as error:  # nibabel: ValueError
        raise NsdError(
            f"{path}: cannot read its values, the file is truncated or corrupt ({error}); "
            "download it again"
        ) from error


def _load_nifti(path: Path, **options) -> nib.Nifti1Image:
    try:
        return nib.load(path, **options)
    except Exception as error:  # nibabel raises several unrelated types for a bad file
        raise NsdError(f"{path}: not a readable NIfTI file ({error})") from error


def _column_index(mask_xyz: np.ndarray) -> np.ndarray:
    """(X, Y, Z) int array: each mask voxel's column in ``np.argwhere(mask)`` order, else -1."""
    index = np.full(mask_xyz.shape, -1, dtype=np.int64)
    index[mask_xyz] = np.arange(int(mask_xyz.sum()))
    return index


def _slab_boxes(mask_xyz: np.ndarray, max_voxels: int) -> list[tuple[slice, slice, slice]]:
    """Boxes (x, y, z slices) that together hold every voxel of the mask, each at most
    ``max_voxels`` (or one x plane) large.

    The mask's bounding box is cut into slabs along x, and each slab shrinks to the bounding
    box of its own mask voxels; slabs without any are skipped, e.g. the gap between the two
    hemispheres' parts of a bilateral ROI set.
    """
    if not mask_xyz.any():
        return []
    xs, ys, zs = _mask_bounding_box(mask_xyz)
    plane = (ys.stop - ys.start) * (zs.stop - zs.start)
    width = max(1, max_voxels // plane)
    boxes = []
    for start in range(xs.start, xs.stop, width):
        slab = mask_xyz[start : start + width]
        if slab.any():
            sx, sy, sz = _mask_bounding_box(slab)
            boxes.append((slice(start + sx.start, start + sx.stop), sy, sz))
    return boxes


def _check_betas(path: Path, dtype, shape: tuple, expected: tuple, axes: str) -> None:
    """int16 of the ``expected`` shape (None: any length), else an error naming the file."""
    fits = len(shape) == len(expected) and all(
        want is None or have == want for have, want in zip(shape, expected, strict=True)
    )
    if not fits or dtype != np.int16:
        shown = ", ".join("T" if want is None else str(want) for want in expected)
        raise NsdError(
            f"{path}: expected int16 betas {axes} of shape ({shown}) on the ROI volumes' grid, "
            f"got {dtype} {tuple(shape)}"
        )


def _check_trials(path: Path, n_trials: int, expected_trials: int) -> None:
    if n_trials != expected_trials:
        raise NsdError(
            f"{path}: holds {n_trials} trials but the design (nsd_expdesign.mat) expects "
            f"{expected_trials} in this session"
        )


def _read_hdf5_betas(path: Path, mask_xyz: np.ndarray, expected_trials: int) -> np.ndarray:
    """int16 betas (T, mask voxels in argwhere order); the file holds (T, Z, Y, X).

    The released files are chunked one voxel time course per chunk, so a hyperslab costs what
    its voxels cost: reading slab boxes (``_slab_boxes``) fetches little beyond the mask and
    holds at most ``READ_BLOCK_VALUES`` values besides the result.
    """
    with _open_hdf5(path) as handle:
        if "betas" not in handle:
            raise NsdError(f"{path}: missing dataset 'betas'")
        betas = handle["betas"]
        _check_betas(path, betas.dtype, betas.shape, (None, *mask_xyz.shape[::-1]), "(T, Z, Y, X)")
        _check_trials(path, betas.shape[0], expected_trials)
        out = np.empty((betas.shape[0], int(mask_xyz.sum())), dtype=np.int16)
        column = _column_index(mask_xyz)
        for xs, ys, zs in _slab_boxes(mask_xyz, READ_BLOCK_VALUES // max(1, betas.shape[0])):
            inside = mask_xyz[xs, ys, zs]
            with _reading_values(path):
                box_txyz = betas[:, zs, ys, xs].transpose(0, 3, 2, 1)
            out[:, column[xs, ys, zs][inside]] = box_txyz[:, inside]
    return out


def _read_nifti_betas(path: Path, mask_xyz: np.ndarray, expected_trials: int) -> np.ndarray:
    """int16 betas (T, mask voxels in argwhere order); the file holds (X, Y, Z, T), unscaled.

    The mask's bounding box is read a block of trials at a time. T is the file's slowest
    axis, so increasing blocks walk forward through the (gzip) file on one open stream and
    decompress it once, while at most ``READ_BLOCK_VALUES`` values are held besides the result.
    """
    image = _load_nifti(path, keep_file_open=True)
    shape, dtype = image.shape, image.get_data_dtype()
    _check_betas(path, dtype, shape, (*mask_xyz.shape, None), "(X, Y, Z, T)")
    _check_trials(path, shape[3], expected_trials)
    # nibabel moves scl_slope/scl_inter from the header into the array proxy on load (and
    # reports unset scaling as 1 and 0), so the proxy is where the file's scaling shows.
    slope = float(getattr(image.dataobj, "slope", 1.0))
    intercept = float(getattr(image.dataobj, "inter", 0.0))
    if slope != 1.0 or intercept != 0.0:
        raise NsdError(f"{path}: expected no header scaling, got slope {slope}, inter {intercept}")
    out = np.empty((shape[3], int(mask_xyz.sum())), dtype=np.int16)
    if not out.size:
        return out
    xs, ys, zs = _mask_bounding_box(mask_xyz)
    inside = mask_xyz[xs, ys, zs]
    block = max(1, READ_BLOCK_VALUES // inside.size)
    for start in range(0, shape[3], block):
        with _reading_values(path):
            box_xyzt = np.asarray(image.dataobj[xs, ys, zs, start : start + block])
        out[start : start + block] = box_xyzt[inside].T
    return out


def _image_brick(handle: h5py.File, path: Path) -> h5py.Dataset:
    if "imgBrick" not in handle:
        raise NsdError(f"{path}: missing dataset 'imgBrick'")
    bricks = handle["imgBrick"]
    if bricks.ndim != 4 or bricks.shape[3] != 3 or bricks.dtype != np.uint8:
        raise NsdError(
            f"{path}: expected 'imgBrick' uint8 (N, H, W, 3), got {bricks.dtype} {bricks.shape}"
        )
    return bricks
