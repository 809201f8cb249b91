# Helpers shared by the rules: config lookups and the job plan read from layer inventories.
#
# Rules pass the config slices a job depends on as `params`, so that changing them (a penalty,
# an ROI, a model's weights) reruns exactly the jobs they affect.
import functools
import json
import os
import re

import pandas as pd

from nsdbench import plan as planning
from nsdbench.config import model_entry
from nsdbench.cost import paper_voxels, scored_voxels
from nsdbench.plan import FIXED_REQUESTS, plan_from_config, settings_from_config
from nsdbench.weights import fetch, weights_path

MODELS = {entry["name"]: entry for entry in config["models"]}
SUBJECTS = [f"{subject:02d}" for subject in config["subjects"]]
WEIGHTS_CACHE = config["weights_cache"].rstrip("/")
BYTES_PER_FEATURE = 2 if config["extraction"]["dtype"] == "float16" else 4
NSD_ROOT = Path(config["nsd"]["root"])
NSD_FORMAT = config["nsd"].get("format", "nsd")


def _nsd_files():
    """The input files the brain and stimuli rules read, per input format (nsd.format)."""
    if NSD_FORMAT != "nsd" and config["nsd"].get("demo"):
        raise WorkflowError("config key 'nsd.demo': the demo generates an NSD tree; "
                            f"it needs nsd.format 'nsd', not {NSD_FORMAT!r}")
    if NSD_FORMAT == "algonauts":
        files = {}
        for subject in SUBJECTS:
            base = NSD_ROOT / f"subj{subject}"
            for hemi in ("lh", "rh"):
                files[f"fmri_{subject}_{hemi}"] = (
                    base / f"training_split/training_fmri/{hemi}_training_fmri.npy"
                )
            # The folder: its image file names are the fMRI rows' nsd ids.
            files[f"images_{subject}"] = base / "training_split/training_images"
        return files
    if NSD_FORMAT == "byo":
        files = {"stimuli_table": NSD_ROOT / "stimuli.csv"}
        for subject in SUBJECTS:
            files[f"image_ids_{subject}"] = NSD_ROOT / f"sub-{subject}/image_ids.npy"
            # Keys by position: ROI names may hold characters a Python name cannot.
            for index, roi in enumerate(config["rois"]):
                files[f"roi_{subject}_{index}"] = NSD_ROOT / f"sub-{subject}/{roi['name']}.npy"
        return files
    return {
        "design": NSD_ROOT / "nsddata/experiments/nsd/nsd_expdesign.mat",
        "stim_info": NSD_ROOT / "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
        "stimuli": NSD_ROOT / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5",
    }


NSD_FILES = _nsd_files()


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    subject=r"\d\d",
    group=r"\d+",
    block=r"\d+",
    file_name=r"[^/]+",


def nsd_inputs(wildcards=None):
    return {key: str(path) for key, path in NSD_FILES.items()}


def model_params(wildcards):
    entry = model_entry(config, wildcards.model)
    entry.pop("display_name", None)  # a label for figures: renaming it must not rerun any job
    return entry


def fetched_weights(entry):
    """Whether the entry's checkpoint comes from a URL through the weights cache."""
    return entry["trained"] and "url" in (entry.get("weights") or {})


def weights_file(entry):
    return str(weights_path(entry, WEIGHTS_CACHE))


def model_weights(wildcards):
    """The checkpoint a job of this model reads, if any. ancient(): a re-fetched identical
    file must not rerun finished work; a changed URL or pin reruns it through params."""
    entry = MODELS[wildcards.model]
    if fetched_weights(entry) or (entry["trained"] and "path" in entry.get("weights", {})):
        return {"weights": ancient(weights_file(entry))}
    return {}


def job_plan(model):
    """The model's inventory with extraction groups and fit blocks (after the checkpoint)."""
    path = checkpoints.layer_inventory.get(model=model).output[0]
    return _job_plan(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=None)
def _job_plan(path, modified):
    # Cached: every job's inputs, params and resources ask for the plan of its model.
    return plan_from_config(pd.read_parquet(path), config)


def plan_index(model):
    """The model's plan as lookups by block and group: the jobs' inputs and params ask for them
    tens of thousands of times in a survey's dry run."""
    path = checkpoints.layer_inventory.get(model=model).output[0]
    return _plan_index(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=None)
def _plan_index(path, modified):
    plan = _job_plan(path, modified)
    return {
        "layers_of_block": plan.groupby("block")["layer"].apply(list).to_dict(),
        "layers_of_group": plan.groupby("group")["layer"].apply(list).to_dict(),
        "group_of_block": plan.groupby("block")["group"].first().to_dict(),
    }


def layers_of_group(wildcards):
    return plan_index(wildcards.model)["layers_of_group"][int(wildcards.group)]


def layers_of_block(wildcards):
    return plan_index(wildcards.model)["layers_of_block"][int(wildcards.block)]


def group_of_block(wildcards):
    group = int(plan_index(wildcards.model)["group_of_block"][int(wildcards.block)])
    return f"results/features/{wildcards.model}/group-{group}"


def score_files(model):
    blocks = sorted(job_plan(model)["block"].unique())
    return [f"results/scores/{model}/block-{block}.parquet" for block in blocks]


def model_score_files(wildcards):
    return score_files(wildcards.model)


def all_score_files(wildcards):
    return [path for model in MODELS for path in score_files(model)]


# ---------------------------------------------------------------- resources (Slurm requests)
# Each job's request comes from its model's plan and the cost model (nsdbench.plan): memory,
# runtime and scratch of a fit job from its block's layers, of an extraction from its group's.
# A retried job (profile: retries) asks for `attempt` times the memory and time.
VOXEL_TABLE = "results/brain/voxels.parquet"
COST_CALIBRATION = "results/cost-calibration.json"
EXTRACT_GPU = config["extraction"]["device"] != "cpu"
EXTRACT_THREADS = planning.EXTRACT_THREADS


def voxel_count():
    """(scored voxels, basis): from the voxel table once it exists (or every subject's part of
    it), else the paper's count prorated to the config's subjects x ROIs."""
    parts = [f"results/brain/voxels-sub-{subject}.parquet" for subject in SUBJECTS]
    for paths, basis in (([VOXEL_TABLE], VOXEL_TABLE), (parts, "results/brain/voxels-sub-*")):
        if all(os.path.exists(path) for path in paths):
            stamps = tuple(os.path.getmtime(path) for path in paths)
            return _voxel_count(tuple(paths), stamps), basis
    return paper_voxels(len(SUBJECTS), len(config["rois"])), "paper"


@functools.lru_cache(maxsize=None)
def _voxel_count(paths, stamps):
    return scored_voxels(pd.concat([pd.read_parquet(path) for path in paths]))


def recalibration_factors():
    """{rule: {"time", "mem"}}: written by the cost rule from the benchmark files of jobs that
    have run; later jobs' requests use it."""
    if not os.path.exists(COST_CALIBRATION):
        return {}
    with open(COST_CALIBRATION) as handle:
        return json.load(handle).get("factors", {})


JOB_TABLES = {"fit": (planning.fit_jobs, "block"), "extract": (planning.extract_jobs, "group"),
              "extract_best_layers": (planning.best_layer_extraction_jobs, None),
              "generalize": (planning.generalize_jobs, None)}


@functools.lru_cache(maxsize=None)
def _job_requests(rule, path, modified, voxels):
    """{block or group (or 0): Request} of one model's jobs of `rule`."""
    plan = _job_plan(path, modified)
    make, key = JOB_TABLES[rule]
    settings = settings_from_config(config, int(plan["n_images"].iloc[0]), voxels,
                                    recalibration_factors())
    table = make(plan, settings)
    keys = table[key].tolist() if key else [0]
    return {
        job: planning.Request(mem_mb=int(mem), runtime=int(runtime), disk_mb=int(disk),
                              cpus=int(cpus), gpu=int(gpu))
        for job, mem, runtime, disk, cpus, gpu in zip(
            keys, table["mem_mb"], table["runtime"], table["disk_mb"], table["cpus"],
            table["gpu"])
    }


def job_request(rule, wildcards):
    """The first-attempt Request of one job of `rule` (in JOB_TABLES); None
    before the model's inventory exists. (A job's resources are read once per job: this
    checks the file rather than the checkpoint, which costs ~1 ms a call on the survey's
    75,000 jobs. An inventory that is to be redone changes its mtime, so its new plan is
    read, and the jobs after a checkpoint are made again when it completes.)"""
    path = f"results/layers/{wildcards.model}.parquet"
    if not os.path.exists(path):
        return None
    requests = _job_requests(rule, path, os.path.getmtime(path), voxel_count()[0])
    key = JOB_TABLES[rule][1]
    return requests[int(getattr(wildcards, key)) if key else 0]


def requested(rule, resource):
    """A resource callable for the rules in JOB_TABLES. This job's request from the cost
    model, scaled by the attempt."""
    def value(wildcards, attempt):
        request = job_request(rule, wildcards)
        if request is None:
            # No inventory yet: the floor, for the dry run's listing only. The job is made
            # again, with its real request, once the inventory is there (its inputs need it).
            request = planning.request(0.0, 0.0)
        return getattr(request.for_attempt(attempt), resource)

    return value


def fixed(rule, resource):
    """A resource callable for a rule without a cost model (nsdbench.plan.FIXED_REQUESTS)."""
    def value(wildcards, attempt):
        return getattr(FIXED_REQUESTS[rule].for_attempt(attempt), resource)

    return value


def threads_as_cpus(wildcards, threads):
    """cpus_per_task: the job's threads (Slurm gives it that many cores)."""
    return threads


def runs_on_login_node(rule):
    """Whether this rule's jobs stay on the login node in a cluster run: workflow.is_local()
    less its "everything is local without a cluster" (the cost report is about the cluster
    run, wherever it is made)."""
    return rule.group is None and (rule.name in workflow._localrules or rule.norun)


def cost_rules():
    """The rules of a full run as the cost report counts them: name, output wildcards and
    whether it runs on the login node. Rules without output (`all`, targets) have no jobs.
    Called where rule `cost` is defined, after every other rule."""
    return [
        {"rule": rule.name, "wildcards": sorted(rule.wildcard_names),
         "local": runs_on_login_node(rule)}
        for rule in workflow.rules
        if rule.output and rule.name != "cost"
    ]
