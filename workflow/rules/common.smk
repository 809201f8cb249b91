# Helpers shared by the rules: config lookups and the job plan read from layer inventories.
#
# Rules pass the config slices a job depends on as `params`, so that changing them (a penalty,
# an ROI, a model's weights) reruns exactly the jobs they affect.
import functools
import os
import re

import pandas as pd

from nsdbench.config import model_entry
from nsdbench.plan import assign_jobs
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
    inventory = pd.read_parquet(path)
    return assign_jobs(
        inventory, int(inventory["n_images"].iloc[0]), config["extraction"]["scratch_gb"],
        config["fit"]["layers_per_job"], BYTES_PER_FEATURE,
    )


def layers_of_group(wildcards):
    plan = job_plan(wildcards.model)
    return plan.loc[plan["group"] == int(wildcards.group), "layer"].tolist()


def layers_of_block(wildcards):
    plan = job_plan(wildcards.model)
    return plan.loc[plan["block"] == int(wildcards.block), "layer"].tolist()


def group_of_block(wildcards):
    plan = job_plan(wildcards.model)
    group = int(plan.loc[plan["block"] == int(wildcards.block), "group"].iloc[0])
    return f"results/features/{wildcards.model}/group-{group}"


def group_feature_mb(wildcards):
    plan = job_plan(wildcards.model)
    rows = plan[plan["group"] == int(wildcards.group)]
    return int((rows["n_features"] * rows["n_images"]).sum() * BYTES_PER_FEATURE / 1e6) + 1


def score_files(model):
    blocks = sorted(job_plan(model)["block"].unique())
    return [f"results/scores/{model}/block-{block}.parquet" for block in blocks]


def model_score_files(wildcards):
    return score_files(wildcards.model)


def all_score_files(wildcards):
    return [path for model in MODELS for path in score_files(model)]
