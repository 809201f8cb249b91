"""Cost model of the fit jobs: core-seconds and peak memory per job, per model and in total.

One fit job scores ``layers_per_job`` layers of one model against every subject x ROI. Its work
(compute-notes.md, section 5, and nsdbench.fit.score_layer) is, per layer of d features:

- one streaming pass over the (n x d) store: a float32 centred Gram (n^2 d flops), plus reading
  and casting the stored values and, when d > srp_dim, the sparse random projection
  (memory-bound: charged per byte of stored features);
- with SRP, the float64 Gram of the (n x srp_dim) projection (n^2 srp_dim flops);
- one float64 eigh and residual operator (~n^3);
- per voxel: the LOO product, Pearson r, predicted ROI RDMs (~n^2 V);
- per subject x ROI: comparing two RDMs (cRSA, veRSA) and RDM set-up (~n^2 each);
- per job: process start-up and imports, and the brain RDMs and centred responses that all
  its layers share (~n^2 V).

The constants (seconds per flop, per byte, ...) are fitted by ``benchmarks/fit.py`` and read
from ``benchmarks/fit_calibration.json`` when it exists; the built-in defaults are that file's
values at the time of writing.

    python -m nsdbench.cost --inventories 'results/layers/*.parquet' --voxels 161560 --images 1000
"""

from __future__ import annotations

import argparse
import glob
import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nsdbench.reduce import DEFAULT_READ_BLOCK

DEFAULT_CALIBRATION_PATH = (
    Path(__file__).resolve().parents[2] / "benchmarks" / "fit_calibration.json"
)
# compute-notes.md: single-core SGEMM roofline (OpenBLAS SkylakeX kernel) of the reference machine.
ROOFLINE_FLOPS = 247e9
# The paper's workload (compute-notes.md): 4 subjects x ~40.4k reliable voxels over 16 ROIs.
PAPER_VOXELS = 161_560
PAPER_SETS = 4 * 16  # subjects x ROIs
DEFAULT_SRP_DIM = 5960


@dataclass(frozen=True)
class Calibration:
    """Per-unit costs of a fit job (core-seconds and bytes)."""

    # Defaults: benchmarks/fit.py on the 2-core dev machine, 1 BLAS thread, 2026-11-30
    # (benchmarks/fit_calibration.json, which Calibration.load reads, holds the same values).
    gram_s_per_flop: float = 1.03e-11  # streaming float32 Gram, per flop (n^2 d)
    stream_s_per_byte: float = 4.23e-9  # read + float16 cast + SRP, per byte of stored features
    eigh_s_per_n3: float = 1.69e-10  # float64 eigh + residual operator, per n^3
    voxel_s_per_n2v: float = 2.26e-11  # LOO GEMM + r + predicted RDMs, per n^2 V
    set_s_per_n2: float = 6.1e-9  # per subject x ROI: RDM comparisons, per n^2
    startup_s: float = 1.41  # imports and set-up, per job (without loading brain stores)
    prepare_s_per_n2v: float = 3.89e-11  # per job: brain RDMs and centred responses, per n^2 V
    base_bytes: float = 1.58e8  # RSS after imports
    response_copies: float = 1.70  # float32 (n x V) arrays alive at the peak

    @classmethod
    def load(cls, path: Path | str | None = None) -> Calibration:
        """Defaults overridden by the JSON the benchmark writes (unknown keys ignored)."""
        path = Path(path) if path is not None else DEFAULT_CALIBRATION_PATH
        if not path.exists():
            return cls()
        values = json.loads(path.read_text())
        known = {field.name for field in fields(cls)}
        return replace(cls(), **{key: float(v) for key, v in values.items() if key in known})


def flop_lower_bound(n: int, d: int, voxels: int) -> float:
    """compute-notes.md: n^2 d (symmetric Gram) + ~10 n^3 (eigh and M) + 3 n^2 V (LOO GEMM
    2 n^2 V, predicted-RDM syrk n^2 V)."""
    return float(n) ** 2 * d + 10.0 * float(n) ** 3 + 3.0 * float(n) ** 2 * voxels


def fixed_matrix_bytes(n: int, srp_dim: int, read_block: int = DEFAULT_READ_BLOCK) -> float:
    """Working memory that does not grow with voxels: a read block (float16 as stored, its
    float32 and centred copies), the SRP accumulators, and ~8 float64 n x n matrices (Gram,
    RDM, eigenvectors, hat and residual operators, temporaries)."""
    block = n * np.asarray(read_block, dtype=np.float64) * (2 + 4 + 4)
    projection = 3.0 * n * np.asarray(srp_dim, dtype=np.float64) * 4
    total = block + projection + 8.0 * n * n * 8
    return float(total) if total.ndim == 0 else total


def layer_core_seconds(n: int, d, voxels: int, srp_dim: int | None = DEFAULT_SRP_DIM,
                       calibration: Calibration | None = None, bytes_per_feature: int = 2,
                       sets: int = PAPER_SETS):
    """Core-seconds of one layer (no start-up); ``d`` may be an array of layer widths."""
    c = calibration or Calibration.load()
    d = np.asarray(d, dtype=np.float64)
    n2 = float(n) ** 2
    projected = np.zeros_like(d) if not srp_dim else np.where(d > srp_dim, float(srp_dim), 0.0)
    return (
        c.gram_s_per_flop * n2 * (d + projected)  # the SRP's Gram is a float32 product too
        + c.stream_s_per_byte * n * d * bytes_per_feature
        + c.eigh_s_per_n3 * float(n) ** 3
        + c.voxel_s_per_n2v * n2 * voxels
        + c.set_s_per_n2 * n2 * sets
    )


def job_overhead_seconds(n: int, voxels: int, calibration: Calibration | None = None) -> float:
    """Core-seconds of a fit job besides its layers: start-up, and the brain RDMs and centred
    responses its layers share."""
    c = calibration or Calibration.load()
    return c.startup_s + c.prepare_s_per_n2v * float(n) ** 2 * voxels


def job_peak_bytes(n: int, voxels: int, srp_dim: int | None = DEFAULT_SRP_DIM,
                   calibration: Calibration | None = None,
                   read_block: int = DEFAULT_READ_BLOCK, widest: float | None = None) -> float:
    """Peak RSS of a fit job. It does not grow with the layer width beyond one read block (the
    pass streams column blocks). ``widest``: the job's widest layer; a layer narrower than a
    read block reads a narrower block, and one no wider than ``srp_dim`` is not projected.
    None: the largest a layer can need."""
    c = calibration or Calibration.load()
    projected = srp_dim or 0
    if widest is not None:  # may be an array: one peak per job
        read_block = np.minimum(read_block, widest)
        projected = np.where(np.asarray(widest) > projected, projected, 0)
    return (c.base_bytes + c.response_copies * 4.0 * n * voxels
            + fixed_matrix_bytes(n, projected, read_block))


def job_cost(n: int, d, voxels: int, srp_dim: int | None = DEFAULT_SRP_DIM,
             calibration: Calibration | None = None, bytes_per_feature: int = 2,
             sets: int = PAPER_SETS) -> dict:
    """Core-seconds and peak bytes of one fit job over the layers of widths ``d``."""
    c = calibration or Calibration.load()
    widths = np.atleast_1d(np.asarray(d, dtype=np.float64))
    seconds = float(
        layer_core_seconds(n, widths, voxels, srp_dim, c, bytes_per_feature, sets).sum())
    return {"core_seconds": job_overhead_seconds(n, voxels, c) + seconds,
            "peak_bytes": job_peak_bytes(n, voxels, srp_dim, c)}


def cost_table(inventories, n_images: int, voxels: int, srp_dim: int | None = DEFAULT_SRP_DIM,
               calibration: Calibration | None = None, layers_per_job: int = 1,
               bytes_per_feature: int = 2, sets: int = PAPER_SETS) -> pd.DataFrame:
    """Per-model fit cost and a final ``TOTAL`` row.

    ``inventories``: layer inventories (DataFrames with ``model`` and ``n_features``, as
    results/layers/{model}.parquet), as a list or a {model: DataFrame} mapping."""
    c = calibration or Calibration.load()
    if isinstance(inventories, dict):
        inventories = [table.assign(model=model) for model, table in inventories.items()]
    rows = []
    for table in inventories:
        widths = table["n_features"].to_numpy(dtype=np.float64)
        layer_seconds = layer_core_seconds(n_images, widths, voxels, srp_dim, c,
                                           bytes_per_feature, sets)
        jobs = int(np.ceil(len(widths) / layers_per_job))
        rows.append({
            "model": str(table["model"].iloc[0]),
            "layers": len(widths),
            "mean_features": float(widths.mean()),
            "fit_jobs": jobs,
            "core_hours": (float(layer_seconds.sum())
                           + jobs * job_overhead_seconds(n_images, voxels, c)) / 3600,
            "peak_gb": job_peak_bytes(n_images, voxels, srp_dim, c) / 1e9,
        })
    result = pd.DataFrame(rows)
    total = {
        "model": "TOTAL", "layers": int(result["layers"].sum()),
        "mean_features": float((result["mean_features"] * result["layers"]).sum()
                               / max(result["layers"].sum(), 1)),
        "fit_jobs": int(result["fit_jobs"].sum()), "core_hours": float(result["core_hours"].sum()),
        "peak_gb": float(result["peak_gb"].max()),
    }
    return pd.concat([result, pd.DataFrame([total])], ignore_index=True)


def family_keys(entry: dict) -> list[tuple]:
    """From most to least specific: same network, same source and family, same family."""
    return [("arch", entry.get("source"), entry.get("arch")),
            ("source", entry.get("source"), entry.get("architecture")),
            ("family", entry.get("architecture"))]


def extrapolate(entries: list[dict], sampled: pd.DataFrame) -> pd.DataFrame:
    """Cost of every config entry from a per-model ``cost_table`` of a sample of them.

    An entry takes its own row if sampled, else the mean of the sampled rows of the same
    network (``arch``: random-init twins have the trained model's layers), else of the same
    source and architecture family, else of the same family, else of all. Returns one row per
    entry with the columns of the table and ``basis`` (which rule applied)."""
    by_name = {entry["name"]: entry for entry in entries}
    sampled = sampled[sampled["model"] != "TOTAL"].set_index("model")
    groups: dict[tuple, list[str]] = {}
    for name in sampled.index:
        if name in by_name:
            for key in family_keys(by_name[name]):
                groups.setdefault(key, []).append(name)
    numeric = ["layers", "mean_features", "fit_jobs", "core_hours", "peak_gb"]
    rows = []
    for entry in entries:
        if entry["name"] in sampled.index:
            row, basis = sampled.loc[entry["name"], numeric], "sampled"
        else:
            key = next((key for key in family_keys(entry) if key in groups), None)
            members = groups[key] if key else list(sampled.index)
            row = sampled.loc[members, numeric].mean()
            basis = key[0] if key else "all"
        rows.append({"model": entry["name"], "source": entry.get("source"),
                     "architecture": entry.get("architecture"), "basis": basis, **row.to_dict()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class ExtractionCalibration:
    """Per-unit costs of an extraction job. CPU figures: model-zoo.md section 5 (resnet50,
    2 threads, 37.6 M features per image over all its layers). GPU figures are assumptions
    until benchmark files recalibrate them (no GPU was measured here): the forward pass ~50x
    the 2-thread CPU rate, the float16 cast on the device, writes to a shared file system at
    400 MB/s."""

    forward_cpu_s_per_feature: float = 1.3e-8  # core-s per image per feature of the model
    forward_gpu_s_per_feature: float = 1.3e-10  # GPU-s per image per feature of the model
    cast_cpu_s_per_feature: float = 8.8e-9  # core-s per stored value (0.66 of a forward)
    transfer_s_per_byte: float = 1e-10  # device to host, per stored byte (10 GB/s)
    write_s_per_byte: float = 2.5e-9  # Zarr write, per stored byte (400 MB/s)
    startup_s: float = 60.0  # imports, building the model (and its weights), tracing
    # torch, a CUDA context and the model's weights (inventories do not count parameters;
    # the largest models of the survey hold about 1.2 GB of float32 weights).
    base_bytes: float = 3e9


def extraction_seconds(group_features: float, model_features: float, n_images: int, *,
                       gpu: bool, threads: int = 1, bytes_per_feature: int = 2,
                       calibration: ExtractionCalibration | None = None) -> float:
    """Wall seconds of one extraction job: a forward pass over the model for every image
    (charged for all of its layers: the traced graph stops at the group's last layer, so this
    is an upper bound) and the group's values cast, moved to the host and written."""
    c = calibration or ExtractionCalibration()
    stored = float(n_images) * group_features
    if gpu:
        compute = n_images * model_features * c.forward_gpu_s_per_feature
        compute += stored * bytes_per_feature * c.transfer_s_per_byte
    else:
        compute = (n_images * model_features * c.forward_cpu_s_per_feature
                   + stored * c.cast_cpu_s_per_feature) / max(threads, 1)
    return c.startup_s + compute + stored * bytes_per_feature * c.write_s_per_byte


def extraction_peak_bytes(group_features: float, widest: float, batch_size: int, *, gpu: bool,
                          bytes_per_feature: int = 2,
                          calibration: ExtractionCalibration | None = None) -> float:
    """Host RSS of one extraction job: two sets of host buffers (batch x the group's features,
    as stored) and, on a CPU, the batch's float32 outputs of the group plus the widest
    activation alive twice while the forward pass runs."""
    c = calibration or ExtractionCalibration()
    peak = c.base_bytes + 2.0 * batch_size * group_features * bytes_per_feature
    if not gpu:
        peak += batch_size * (group_features + 2.0 * widest) * 4.0
    return peak


# ------------------------------------------------------------------- voxels and the fit count
def scored_voxels(voxels: pd.DataFrame, min_voxels: int = 10) -> int:
    """Voxels the fits score, from a voxel table (results/brain/voxels*.parquet): the kept
    voxels of every subject x ROI that keeps at least ``min_voxels`` (the fit skips the others).
    A voxel in two ROIs counts twice: it is a column of both."""
    kept = voxels[voxels["kept"]].groupby(["subject", "roi"]).size()
    return int(kept[kept >= min_voxels].sum())


def paper_voxels(n_subjects: int, n_rois: int) -> int:
    """The paper's voxel count (PAPER_VOXELS for 4 subjects x 16 ROIs), prorated by the config's
    subjects and ROIs, for plans made before the voxel table exists."""
    return int(round(PAPER_VOXELS * n_subjects * n_rois / PAPER_SETS))


def fit_count(layers: int, voxels: int, penalties: int = 1) -> int:
    """Regression fits as the paper counts them: one per voxel per layer (per model: ``layers``
    sums every model's layers) per penalty. A leave-one-out fit is one fit: the closed-form
    LOO predictions come with it."""
    return int(layers) * int(voxels) * int(penalties)


# ----------------------------------------------------------------- recalibration from runs
BENCHMARK_COLUMNS = ("s", "max_rss")


def read_benchmarks(root: Path | str, rule: str) -> pd.DataFrame:
    """Snakemake's benchmark files of one rule (``root``/``rule``/**.tsv, or ``root``/rule.tsv):
    one row per job with ``job`` (the path below the rule's folder, without .tsv), wall seconds
    ``s`` and ``max_rss`` in MB (the last repeat of a file with several)."""
    root = Path(root)
    paths = sorted((root / rule).rglob("*.tsv")) + sorted(root.glob(f"{rule}.tsv"))
    rows = []
    for path in paths:
        table = pd.read_csv(path, sep="\t")
        if table.empty or not set(BENCHMARK_COLUMNS) <= set(table.columns):
            continue
        last = table.iloc[-1]
        job = path.relative_to(root / rule).with_suffix("").as_posix() if path.parent != root \
            else ""
        rows.append({"job": job, "s": float(last["s"]),
                     "max_rss": pd.to_numeric(last["max_rss"], errors="coerce")})
    return pd.DataFrame(rows, columns=["job", "s", "max_rss"])


def recalibration(measured: pd.DataFrame, estimated: pd.DataFrame,
                  quantile: float = 0.9) -> dict:
    """Factors to multiply a rule's estimates by, from the jobs that have run: the ``quantile``
    of measured / estimated wall time and peak memory over the jobs in both tables (matched on
    ``job``; ``estimated`` has ``job``, ``wall_s`` and ``peak_bytes``). Empty: no factors."""
    both = measured.merge(estimated, on="job")
    if both.empty:
        return {}
    factors = {"jobs": len(both),
               "time": float(np.quantile(both["s"] / both["wall_s"], quantile))}
    rss = both.dropna(subset=["max_rss"])
    if not rss.empty:
        factors["mem"] = float(np.quantile(rss["max_rss"] * 1e6 / rss["peak_bytes"], quantile))
    return factors


def read_inventories(pattern: str) -> list[pd.DataFrame]:
    paths = sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no layer inventory matches {pattern!r}")
    tables = []
    for path in paths:
        table = pd.read_parquet(path)
        if "model" not in table:
            table = table.assign(model=Path(path).stem)
        tables.append(table)
    return tables


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nsdbench.cost",
                                     description="Fit-job cost table from layer inventories.")
    parser.add_argument("--inventories", required=True,
                        help="glob of layer inventories, e.g. 'results/layers/*.parquet'")
    parser.add_argument("--voxels", type=int, default=PAPER_VOXELS,
                        help="voxels over all subjects and ROIs")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sets", type=int, default=PAPER_SETS, help="subjects x ROIs")
    parser.add_argument("--srp-dim", type=int, default=DEFAULT_SRP_DIM,
                        help="0: no projection (kernel ridge on all features)")
    parser.add_argument("--layers-per-job", type=int, default=1)
    parser.add_argument("--bytes-per-feature", type=int, default=2, help="2: float16 stores")
    parser.add_argument("--calibration", type=Path, default=None,
                        help=f"JSON of constants (default {DEFAULT_CALIBRATION_PATH} if present)")
    parser.add_argument("--config", type=Path, default=None,
                        help="extrapolate the sampled inventories to every model of this config")
    args = parser.parse_args(argv)
    calibration = Calibration.load(args.calibration)
    table = cost_table(read_inventories(args.inventories), args.images, args.voxels,
                       args.srp_dim or None, calibration, args.layers_per_job,
                       args.bytes_per_feature, args.sets)
    pd.set_option("display.width", 200)
    print(f"n={args.images} images, V={args.voxels} voxels, srp_dim={args.srp_dim}, "
          f"{args.layers_per_job} layer(s) per job")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if args.config:
        import yaml

        entries = yaml.safe_load(args.config.read_text())["models"]
        survey = extrapolate(entries, table)
        by_family = survey.groupby(["source", "architecture"]).agg(
            models=("model", "size"), sampled=("basis", lambda b: int((b == "sampled").sum())),
            layers=("layers", "sum"), core_hours=("core_hours", "sum"))
        print(f"\nextrapolated to {len(survey)} entries of {args.config}:")
        print(by_family.to_string(float_format=lambda x: f"{x:.4g}"))
        print(f"TOTAL: {survey['layers'].sum():.0f} layers, {survey['fit_jobs'].sum():.0f} fit "
              f"jobs, {survey['core_hours'].sum():.1f} core-hours, peak "
              f"{survey['peak_gb'].max():.2f} GB per job")


if __name__ == "__main__":
    main()
