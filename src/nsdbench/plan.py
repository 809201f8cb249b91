"""Split a model's layers into extraction groups and fit blocks.

An extraction group is a run of layers whose features for all probe images fit in
``scratch_gb``: one forward pass writes them, and they are deleted once fitted. A fit block is
a run of at most ``layers_per_job`` layers of one group, scored by one job (process start-up
costs about a second, so a laptop wants dozens of layers per job; a cluster with job arrays 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from nsdbench import cost

log = logging.getLogger(__name__)


def assign_jobs(
    inventory: pd.DataFrame, n_images: int, scratch_gb: float, layers_per_job: int,
    bytes_per_feature: int = 2,
) -> pd.DataFrame:
    """The inventory with ``group`` and ``block`` columns (both small integers, in order).

    ``bytes_per_feature``: 2 for float16 stores (the default), 4 for float32."""
    if inventory.empty:
        raise ValueError("the layer inventory is empty: the model has no layers to benchmark")
    budget = scratch_gb * 1e9
    groups, blocks = [], []
    group = block = 0
    group_bytes = 0.0
    block_size = 0
    for n_features in inventory["n_features"]:
        layer_bytes = float(n_features) * n_images * bytes_per_feature
        if layer_bytes > budget:
            log.warning(
                "a layer needs %.1f GB of features, more than extraction.scratch_gb=%g; "
                "it gets a group of its own", layer_bytes / 1e9, scratch_gb,
            )
        if groups and group_bytes + layer_bytes > budget:
            group, group_bytes = group + 1, 0.0
            block, block_size = block + 1, 0
        elif groups and block_size >= layers_per_job:
            block, block_size = block + 1, 0
        groups.append(group)
        blocks.append(block)
        group_bytes += layer_bytes
        block_size += 1
    return inventory.assign(group=groups, block=blocks)


# ------------------------------------------------------------------- what a job asks Slurm for
# A request is the cost model's estimate times a safety factor, with a floor (a job that is
# estimated at seconds still pays start-up, file-system latency and a busy node), rounded up.
# A job that runs out of memory or time is retried (profile: retries) with every request
# multiplied by the attempt number (1, 2, 3, ...).
RUNTIME_SAFETY = 2.0
RUNTIME_FLOOR_MIN = 10
MEM_SAFETY = 1.25
MEM_HEADROOM_MB = 1000  # interpreter, allocator slack, Snakemake's own job process
MEM_STEP_MB = 100  # requests are whole multiples: easier to read, same scheduling


@dataclass(frozen=True)
class Request:
    """One job's first-attempt resources, in Snakemake's units (MB, minutes)."""

    mem_mb: int
    runtime: int
    disk_mb: int = 0
    cpus: int = 1
    gpu: int = 0

    def for_attempt(self, attempt: int) -> Request:
        """Retries get more memory and time; cores, GPUs and disk stay as they were."""
        return replace(self, mem_mb=self.mem_mb * attempt, runtime=self.runtime * attempt)


def limits(wall_s, peak_bytes, disk_bytes=0.0):
    """(mem_mb, runtime, disk_mb) for estimates of wall seconds, peak RSS and scratch bytes
    (scalars or arrays, one per job)."""
    mem_mb = np.ceil((np.asarray(peak_bytes) * MEM_SAFETY / 1e6 + MEM_HEADROOM_MB) / MEM_STEP_MB)
    runtime = np.maximum(RUNTIME_FLOOR_MIN, np.ceil(np.asarray(wall_s) * RUNTIME_SAFETY / 60))
    disk_mb = np.ceil(np.asarray(disk_bytes) / 1e6)
    return ((mem_mb * MEM_STEP_MB).astype(np.int64), runtime.astype(np.int64),
            disk_mb.astype(np.int64))


def request(wall_seconds: float, peak_bytes: float, disk_bytes: float = 0.0, cpus: int = 1,
            gpu: int = 0) -> Request:
    """The request for a job estimated at ``wall_seconds`` and ``peak_bytes`` of RSS."""
    mem_mb, runtime, disk_mb = limits(wall_seconds, peak_bytes, disk_bytes)
    return Request(mem_mb=int(mem_mb), runtime=int(runtime), disk_mb=int(disk_mb),
                   cpus=int(cpus), gpu=int(gpu))


# Rules without a cost model: fixed requests (measured on the demo and the tiny run, with
# room for the survey's 4 subjects x 16 ROIs and NSD's 30,000 trials per subject).
FIXED_REQUESTS = {
    "demo_nsd": Request(mem_mb=4000, runtime=30, cpus=2),
    # Reads one subject's betas session by session, in bounded blocks (nsd-layout.md).
    "brain_responses": Request(mem_mb=8000, runtime=120),
    "train_stimuli": Request(mem_mb=4000, runtime=30),
    "test_stimuli": Request(mem_mb=4000, runtime=30),
    # Builds the model (with its weights when trained) and runs two images through it.
    "layer_inventory": Request(mem_mb=8000, runtime=20),
    "ceilings": Request(mem_mb=8000, runtime=60),
}
# Their typical wall minutes on the survey, for the report until benchmark files replace them
# (rough: the demo's benchmark files scaled to NSD's 40 sessions and 4 x 16 ROIs).
FIXED_TYPICAL_MIN = {"demo_nsd": 1, "brain_responses": 5, "train_stimuli": 1,
                     "test_stimuli": 1, "layer_inventory": 1, "ceilings": 10}


# ------------------------------------------------------------------------ the jobs of a plan
# Best layers a generalization job is planned for: the paper's 103 million generalization fits
# over 123 models x 161,560 voxels are ~5.2 best layers per model. The plan takes the model's
# widest layers (for memory and scratch, the safe side).
GENERALIZE_LAYERS = 5


@dataclass(frozen=True)
class PlanSettings:
    """What the requests depend on besides the inventory (from the config and the brain)."""

    voxels: int  # scored voxels over all subjects x ROIs
    sets: int = cost.PAPER_SETS  # subjects x ROIs
    subjects: int = 4
    n_test: int = 1000  # test images per subject (generalization)
    penalties: int = 1
    srp_dim: int | None = cost.DEFAULT_SRP_DIM
    batch_size: int = 32
    bytes_per_feature: int = 2
    gpu: bool = True  # extraction on a GPU
    extract_threads: int = 2
    calibration: cost.Calibration = field(default_factory=cost.Calibration.load)
    extraction: cost.ExtractionCalibration = field(default_factory=cost.ExtractionCalibration)
    # {rule: {"time": factor, "mem": factor}} from benchmark files of jobs that have run
    factors: dict = field(default_factory=dict)

    def scaled(self, rule: str, wall_s, peak_bytes):
        factors = self.factors.get(rule, {})
        return wall_s * factors.get("time", 1.0), peak_bytes * factors.get("mem", 1.0)


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start rows of the runs of equal keys (a plan's rows are in order: a model's layers
    together, groups and blocks numbered in increasing order)."""
    change = np.zeros(len(keys[0]), dtype=bool)
    change[0] = True
    for key in keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _job_rows(plan: pd.DataFrame, starts: np.ndarray, rule: str, settings: PlanSettings,
              wall_s, peak_bytes, disk_bytes, cpus: int, gpu: int, **columns) -> pd.DataFrame:
    """One row per job: its model, estimate (recalibrated) and request, all vectorised (the
    survey has 75,000 fit jobs)."""
    wall_s, peak_bytes = settings.scaled(rule, np.asarray(wall_s, dtype=np.float64),
                                         np.asarray(peak_bytes, dtype=np.float64))
    disk_bytes = np.broadcast_to(np.asarray(disk_bytes, dtype=np.float64), wall_s.shape)
    mem_mb, runtime, disk_mb = limits(wall_s, peak_bytes, disk_bytes)
    models = plan["model"].to_numpy()[starts] if "model" in plan else np.full(len(starts), "")
    return pd.DataFrame({
        "model": models, **columns, "wall_s": wall_s, "peak_bytes": peak_bytes,
        "disk_bytes": disk_bytes, "mem_mb": mem_mb, "runtime": runtime, "disk_mb": disk_mb,
        "cpus": cpus, "gpu": gpu, "core_s": wall_s * cpus, "gpu_s": wall_s * gpu,
    })


def _images(plan: pd.DataFrame) -> int:
    counts = plan["n_images"].unique()
    if len(counts) != 1:
        raise ValueError(f"plans with different image counts {sorted(counts)}: one train set")
    return int(counts[0])


def _model_keys(plan: pd.DataFrame) -> np.ndarray:
    return plan["model"].to_numpy() if "model" in plan else np.zeros(len(plan), dtype=int)


def fit_jobs(plan: pd.DataFrame, settings: PlanSettings) -> pd.DataFrame:
    """One row per fit job (block) of one or several models' plans (each model's rows
    together): its estimate and its request."""
    s, c = settings, settings.calibration
    n = _images(plan)
    widths = plan["n_features"].to_numpy(dtype=np.float64)
    seconds = cost.layer_core_seconds(n, widths, s.voxels, s.srp_dim, c, s.bytes_per_feature,
                                      s.sets)
    # A penalty grid repeats the per-voxel LOO product for each penalty.
    seconds = seconds + (s.penalties - 1) * c.voxel_s_per_n2v * float(n) ** 2 * s.voxels
    blocks = plan["block"].to_numpy()
    starts = _runs(_model_keys(plan), blocks)
    widest = np.maximum.reduceat(widths, starts)
    # The request is the largest any layer can need (widest=None), not this block's: memory is
    # set by images x voxels and one read block, so this costs little, and the Slurm plugin
    # gives every task of a job array the FIRST job's request: all fit jobs must ask alike.
    peak = np.full(len(starts), cost.job_peak_bytes(n, s.voxels, s.srp_dim, c, widest=None))
    if s.penalties > 1:  # the best residuals so far, beside the current penalty's
        peak = peak + 4.0 * n * s.voxels
    brain_read_s = 4.0 * n * s.voxels * 1e-9  # the brain stores: n x V float32 at ~1 GB/s
    wall = (cost.job_overhead_seconds(n, s.voxels, c) + brain_read_s
            + np.add.reduceat(seconds, starts))
    return _job_rows(plan, starts, "fit", s, wall, peak, 0.0, cpus=1, gpu=0,
                     block=blocks[starts], group=plan["group"].to_numpy()[starts],
                     layers=np.diff(np.append(starts, len(plan))), widest=widest)


def extract_jobs(plan: pd.DataFrame, settings: PlanSettings) -> pd.DataFrame:
    """One row per extraction job (group) of one or several models' plans: its estimate and
    its request."""
    s = settings
    n = _images(plan)
    widths = plan["n_features"].to_numpy(dtype=np.float64)
    models, groups = _model_keys(plan), plan["group"].to_numpy()
    starts = _runs(models, groups)
    features = np.add.reduceat(widths, starts)
    widest = np.maximum.reduceat(widths, starts)
    # Each job's forward pass is charged for its whole model.
    model_starts = _runs(models)
    per_model = np.add.reduceat(widths, model_starts)
    model_features = per_model[np.searchsorted(model_starts, starts, side="right") - 1]
    wall = cost.extraction_seconds(features, model_features, n, gpu=s.gpu,
                                   threads=s.extract_threads,
                                   bytes_per_feature=s.bytes_per_feature,
                                   calibration=s.extraction)
    peak = cost.extraction_peak_bytes(features, widest, s.batch_size, gpu=s.gpu,
                                      bytes_per_feature=s.bytes_per_feature,
                                      calibration=s.extraction)
    return _job_rows(plan, starts, "extract", s, wall, peak,
                     features * n * s.bytes_per_feature, cpus=s.extract_threads, gpu=int(s.gpu),
                     group=groups[starts], layers=np.diff(np.append(starts, len(plan))),
                     features=features, widest=widest)


def _best_layer_widths(plan: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """(first row of each model, the GENERALIZE_LAYERS widest layer widths of each model):
    generalization is planned for those, as the best layers are known only once the fits
    have run."""
    widths = plan["n_features"].to_numpy(dtype=np.float64)
    starts = _runs(_model_keys(plan))
    best = [np.sort(model_widths)[::-1][:GENERALIZE_LAYERS]
            for model_widths in np.split(widths, starts[1:])]
    return starts, best


def best_layer_extraction_jobs(plan: pd.DataFrame, settings: PlanSettings) -> pd.DataFrame:
    """The extract_best_layers job of each model: its best layers for the train images and
    every subject's test images (a forward pass over the whole model, GPU)."""
    s = settings
    total = _images(plan) + s.n_test * s.subjects
    starts, best = _best_layer_widths(plan)
    model_widths = np.add.reduceat(plan["n_features"].to_numpy(dtype=np.float64), starts)
    walls = [cost.extraction_seconds(layers.sum(), everything, total, gpu=s.gpu,
                                     threads=s.extract_threads,
                                     bytes_per_feature=s.bytes_per_feature,
                                     calibration=s.extraction)
             for layers, everything in zip(best, model_widths, strict=True)]
    peaks = [cost.extraction_peak_bytes(layers.sum(), layers.max(), s.batch_size, gpu=s.gpu,
                                        bytes_per_feature=s.bytes_per_feature,
                                        calibration=s.extraction) for layers in best]
    disks = [layers.sum() * total * s.bytes_per_feature for layers in best]
    return _job_rows(plan, starts, "extract_best_layers", s, walls, peaks, disks,
                     cpus=s.extract_threads, gpu=int(s.gpu),
                     layers=[len(layers) for layers in best],
                     features=[layers.sum() for layers in best])


def generalize_jobs(plan: pd.DataFrame, settings: PlanSettings) -> pd.DataFrame:
    """The generalize job of each model (CPU, one thread): its best layers, read from
    extract_best_layers' store of train and test images, each fitted against every voxel."""
    s, c = settings, settings.calibration
    n = _images(plan)
    total = n + s.n_test * s.subjects
    tested = total - n
    starts, best = _best_layer_widths(plan)
    walls, peaks = [], []
    for layers in best:
        # Each layer: the train fit as in the main pass, plus the Gram and stream over the
        # test rows and the test predictions (test x train times train x voxels).
        projected = np.minimum(layers, s.srp_dim) if s.srp_dim else layers
        fits = float(cost.layer_core_seconds(n, layers, s.voxels, s.srp_dim, c,
                                             s.bytes_per_feature, s.sets).sum())
        fits += float((c.gram_s_per_flop * (float(total) ** 2 - float(n) ** 2)
                       * (layers + projected)
                       + c.stream_s_per_byte * tested * layers * s.bytes_per_feature).sum())
        fits += len(layers) * c.voxel_s_per_n2v * tested * n * s.voxels
        walls.append(c.startup_s + fits)
        responses = 4.0 * (n * c.response_copies + s.n_test) * s.voxels
        peaks.append(c.base_bytes + responses
                     + cost.fixed_matrix_bytes(total, s.srp_dim or 0))
    return _job_rows(plan, starts, "generalize", s, walls, peaks, 0.0, cpus=1, gpu=0,
                     layers=[len(layers) for layers in best],
                     features=[layers.sum() for layers in best])


# ------------------------------------------------------------------ the workflow's jobs, summed
REPORT_COLUMNS = [
    "rule", "jobs", "submissions", "submissions_max", "local", "cpus", "gpu", "max_mem_mb",
    "max_runtime_min", "max_disk_mb", "disk_total_gb", "core_hours", "gpu_hours", "basis",
    "fits",
]


def jobs_of_rule(wildcards, plans: dict[str, pd.DataFrame], subjects: int,
                 fetched: int) -> int:
    """How many jobs a rule with these output wildcards has in a full run: the same
    enumeration as the rules' input functions (one per subject, model, group or block)."""
    names = frozenset(wildcards)
    if not names:
        return 1
    if names == {"subject"}:
        return subjects
    if names == {"model"}:
        return len(plans)
    if names == {"model", "group"}:
        return sum(int(plan["group"].nunique()) for plan in plans.values())
    if names == {"model", "block"}:
        return sum(int(plan["block"].nunique()) for plan in plans.values())
    if names == {"model", "file_name"}:
        return fetched
    raise ValueError(f"the cost report cannot count jobs with wildcards {sorted(names)}; "
                     "teach nsdbench.plan.jobs_of_rule their enumeration")


def array_submissions(fit: pd.DataFrame, limit: int) -> tuple[int, int]:
    """(fewest, most) sbatch calls for the fit jobs as job arrays of at most ``limit`` tasks.
    Fewest: every fit job ready at once. Most: one array per extraction group, as a group's
    fit jobs become ready together when its extraction ends (the executor submits the jobs
    ready at one moment as one array, split into chunks of ``limit``)."""
    fewest = -(-len(fit) // limit)
    per_group = fit.groupby(["model", "group"]).size()
    most = int((-(-per_group // limit)).sum())
    return fewest, most


def workflow_report(rules: list[dict], plans: dict[str, pd.DataFrame], settings: PlanSettings,
                    *, subjects: int, fetched: int, array_rules=("fit",), array_limit=1000,
                    measured: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Per rule: jobs, Slurm submissions, largest requests, estimated core- and GPU-hours,
    and regression fits; a final TOTAL row. Also returns the per-job tables of the rules with
    a cost model (fit, extract, extract_best_layers, generalize).

    ``rules``: [{"rule", "wildcards", "local"}] for every rule of a full run. ``measured``:
    {rule: read_benchmarks table}; rules without a cost model then estimate from the mean
    measured time, the others are recalibrated through ``settings.factors``."""
    measured = measured or {}
    modelled = {"fit": fit_jobs, "extract": extract_jobs,
                "extract_best_layers": best_layer_extraction_jobs,
                "generalize": generalize_jobs}
    together = pd.concat([plan if "model" in plan else plan.assign(model=model)
                          for model, plan in plans.items()], ignore_index=True)
    tables = {name: make(together, settings) for name, make in modelled.items()}
    rows = []
    for spec in rules:
        name, local = spec["rule"], bool(spec["local"])
        jobs = jobs_of_rule(spec["wildcards"], plans, subjects, fetched)
        row = {"rule": name, "jobs": jobs, "local": local, "cpus": 0, "gpu": 0,
               "max_mem_mb": 0, "max_runtime_min": 0, "max_disk_mb": 0, "disk_total_gb": 0.0,
               "core_hours": 0.0, "gpu_hours": 0.0, "fits": 0,
               "basis": "local" if local else "no estimate"}
        if name in tables:
            table = tables[name]
            if len(table) != jobs:  # the enumeration and the plan must agree
                raise ValueError(f"rule {name}: {jobs} jobs by wildcards, {len(table)} planned")
            row.update(
                cpus=int(table["cpus"].max()), gpu=int(table["gpu"].max()),
                max_mem_mb=int(table["mem_mb"].max()),
                max_runtime_min=int(table["runtime"].max()),
                max_disk_mb=int(table["disk_mb"].max()),
                disk_total_gb=float(table["disk_bytes"].sum() / 1e9),
                core_hours=float(table["core_s"].sum() / 3600),
                gpu_hours=float(table["gpu_s"].sum() / 3600),
                basis="model x benchmarks" if name in settings.factors else "model")
        elif name in FIXED_REQUESTS and not local:
            fixed = FIXED_REQUESTS[name]
            times = measured.get(name)
            if times is not None and not times.empty:
                hours, basis = jobs * float(times["s"].mean()) * fixed.cpus / 3600, "benchmarks"
            else:
                hours, basis = jobs * FIXED_TYPICAL_MIN[name] * fixed.cpus / 60, "typical"
            row.update(cpus=fixed.cpus, gpu=fixed.gpu, max_mem_mb=fixed.mem_mb,
                       max_runtime_min=fixed.runtime, max_disk_mb=fixed.disk_mb,
                       core_hours=hours, gpu_hours=hours / fixed.cpus * fixed.gpu, basis=basis)
        if name == "fit":
            layers = sum(len(plan) for plan in plans.values())
            row["fits"] = cost.fit_count(layers, settings.voxels, settings.penalties)
        if local:
            row["submissions"] = row["submissions_max"] = 0
        elif name in array_rules and jobs > 1:
            if name == "fit":
                row["submissions"], row["submissions_max"] = array_submissions(
                    tables["fit"], array_limit)
            else:
                row["submissions"] = row["submissions_max"] = -(-jobs // array_limit)
        else:
            row["submissions"] = row["submissions_max"] = jobs
        rows.append(row)
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    total = {"rule": "TOTAL", "local": False, "basis": ""}
    for column in ("jobs", "submissions", "submissions_max", "disk_total_gb", "core_hours",
                   "gpu_hours", "fits"):
        total[column] = report[column].sum()
    for column in ("cpus", "gpu", "max_mem_mb", "max_runtime_min", "max_disk_mb"):
        total[column] = report[column].max()
    report = pd.concat([report, pd.DataFrame([total], columns=REPORT_COLUMNS)],
                       ignore_index=True)
    return report, tables


# ------------------------------------------------------------------------- from the config
EXTRACT_THREADS = 2  # an extraction job's cores: preprocessing, float16 casts, Zarr writes
PAPER_FITS = 5.17e9  # the paper's title


def bytes_per_feature(config: dict) -> int:
    return 2 if config["extraction"]["dtype"] == "float16" else 4


def plan_from_config(inventory: pd.DataFrame, config: dict) -> pd.DataFrame:
    """A model's job plan as the workflow makes it (workflow/rules/common.smk: job_plan)."""
    return assign_jobs(inventory, int(inventory["n_images"].iloc[0]),
                       config["extraction"]["scratch_gb"], config["fit"]["layers_per_job"],
                       bytes_per_feature(config))


def settings_from_config(config: dict, n_images: int, voxels: int,
                         factors: dict | None = None) -> PlanSettings:
    """The PlanSettings of a validated config, for plans of ``n_images`` train images."""
    ridge = config["ridge"]
    if ridge["reduction"] == "none":
        srp_dim = None
    elif ridge["srp_dim"]:
        srp_dim = int(ridge["srp_dim"])
    else:  # the Johnson-Lindenstrauss bound (imports sklearn: only when needed)
        from nsdbench.reduce import srp_dimension

        srp_dim = srp_dimension(ridge, n_images)
    return PlanSettings(
        voxels=voxels, sets=len(config["subjects"]) * len(config["rois"]),
        subjects=len(config["subjects"]), n_test=config["images"]["n_test"],
        penalties=len(config["ridge"]["alphas"]),
        srp_dim=srp_dim, batch_size=config["extraction"]["batch_size"],
        bytes_per_feature=bytes_per_feature(config),
        gpu=config["extraction"]["device"] != "cpu", extract_threads=EXTRACT_THREADS,
        factors=factors or {},
    )


# Where each rule's benchmark files live under logs/benchmarks (the rules' `benchmark:`), and
# how a job of a modelled rule is named there.
BENCHMARK_FOLDERS = {"fit": "fit", "extract": "extract",
                     "extract_best_layers": "extract_best_layers", "generalize": "generalize",
                     "brain_responses": "brain", "layer_inventory": "layers",
                     "ceilings": "ceilings", "demo_nsd": "demo_nsd"}
BENCHMARK_JOBS = {"fit": "{model}/block-{block}", "extract": "{model}/group-{group}",
                  "extract_best_layers": "{model}", "generalize": "{model}"}


def slurm_arrays(profile: dict | None) -> tuple[tuple[str, ...], int]:
    """(rules submitted as job arrays, tasks per array) from a Slurm profile's settings."""
    profile = profile or {}
    rules = str(profile.get("slurm-array-jobs", "")).replace(";", ",")
    return (tuple(rule.strip() for rule in rules.split(",") if rule.strip()),
            int(profile.get("slurm-array-limit", 1000)))


def full_run_report(inventories: dict[str, pd.DataFrame], config: dict, rules: list[dict], *,
                    voxels: int, fetched: int, profile: dict | None = None,
                    benchmarks: Path | str | None = None) -> tuple[pd.DataFrame, dict]:
    """The cost table of a full run (see workflow_report) and the recalibration factors
    ({rule: {"jobs", "time", "mem"}}) from the benchmark files under ``benchmarks``."""
    plans = {model: plan_from_config(table if "model" in table else table.assign(model=model),
                                     config)
             for model, table in inventories.items()}
    n_images = int(next(iter(plans.values()))["n_images"].iloc[0])
    base = settings_from_config(config, n_images, voxels)
    measured = {}
    if benchmarks is not None and Path(benchmarks).is_dir():
        measured = {rule: cost.read_benchmarks(benchmarks, folder)
                    for rule, folder in BENCHMARK_FOLDERS.items()}
    factors = {}
    for rule, make in (("fit", fit_jobs), ("extract", extract_jobs),
                       ("extract_best_layers", best_layer_extraction_jobs),
                       ("generalize", generalize_jobs)):
        times = measured.get(rule)
        if times is None or times.empty:
            continue
        estimated = make(pd.concat(plans.values(), ignore_index=True), base)
        estimated["job"] = [BENCHMARK_JOBS[rule].format(**row) for row in
                            estimated.to_dict("records")]
        found = cost.recalibration(times, estimated)
        if found:
            factors[rule] = found
    settings = replace(base, factors=factors)
    array_rules, array_limit = slurm_arrays(profile)
    report, _ = workflow_report(rules, plans, settings, subjects=len(config["subjects"]),
                                fetched=fetched, array_rules=array_rules,
                                array_limit=array_limit, measured=measured)
    return report, factors


def report_summary(report: pd.DataFrame, *, voxels: int, voxel_basis: str, layers: int,
                   models: int, array_rules=("fit",), array_limit: int = 1000) -> str:
    """The report's totals in words: what `snakemake cost` prints under the table."""
    total = report[report["rule"] == "TOTAL"].iloc[0]
    rules = report[report["rule"] != "TOTAL"]
    largest = rules.loc[rules["max_mem_mb"].idxmax()]
    scratch = rules.loc[rules["max_disk_mb"].idxmax()]
    arrays = ", ".join(array_rules) or "none"
    return "\n".join([
        f"models: {models}; layers: {layers:,}; scored voxels: {voxels:,} ({voxel_basis})",
        f"jobs: {int(total['jobs']):,}; Slurm submissions: {int(total['submissions']):,} to "
        f"{int(total['submissions_max']):,} (a local rule submits nothing; a job array of up "
        f"to {array_limit} tasks is one submission; array rules: {arrays}; the fit jobs of "
        "one extraction group become ready together: at most one array per group)",
        f"GPU-hours: {total['gpu_hours']:,.1f}; CPU core-hours: {total['core_hours']:,.1f} "
        "(estimates, not the requests' limits)",
        f"peak scratch: {scratch['max_disk_mb'] / 1e3:,.1f} GB for one {scratch['rule']} job; "
        f"{total['disk_total_gb'] / 1e3:,.2f} TB written in all (temp features, each deleted "
        "once fitted)",
        f"largest memory request: {largest['max_mem_mb'] / 1e3:,.1f} GB ({largest['rule']})",
        f"regression fits: {int(total['fits']):,} (one per voxel x layer x penalty; every "
        f"model's layers), {total['fits'] / PAPER_FITS:.2f} x the paper's 5.17 billion",
        fit_stage_line(report),
    ])


def fit_stage_line(report: pd.DataFrame) -> str:
    """The fit stage's core-hours, and scaled to the paper's 5.17e9 fits (the paper's
    workload, which took it about 32,000 core-hours: 2 weeks on 96 CPUs)."""
    fit = report[report["rule"] == "fit"]
    if fit.empty or not fit["fits"].sum():
        return "fit stage: no fit jobs"
    hours, fits = float(fit["core_hours"].sum()), float(fit["fits"].sum())
    return (f"fit stage (CPU): {hours:,.1f} core-hours; {hours * PAPER_FITS / fits:,.1f} "
            "core-hours per 5.17 billion fits, the paper's workload (it took ~32,000)")
