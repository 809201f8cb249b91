"""Slurm requests from the layer inventory, and the cost report against the workflow's own DAG.

The workflow tests run the real Snakefile on small synthetic inventories (no model is built):
the dry run's jobs and printed resources must be those the plan computes, and `snakemake cost`
must count the same jobs and sum the same fits. The survey test runs the cost target on the
paper's 340 model entries with synthetic inventories.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY
from conftest import run_snakemake as snakemake

from nsdbench import cost, plan
from nsdbench.config import validate_config
from nsdbench.plan import PlanSettings, Request, extract_jobs, fit_jobs, request
from nsdbench.weights import weights_path

WIDE, NARROW = 3_000_000, 10_000
TINY_CONFIG = yaml.safe_load(TINY.read_text())
N_IMAGES = 120  # the tiny demo's shared images


# ------------------------------------------------------------------------ requests, no workflow
def inventory(model, widths, n_images=1000):
    return pd.DataFrame({
        "model": model, "layer": [f"layer{i}" for i in range(len(widths))],
        "layer_index": range(len(widths)),
        "layer_depth": (np.arange(len(widths)) + 1) / len(widths),
        "shape": [f"[{w}]" for w in widths], "n_features": widths, "method": "fx",
        "n_images": n_images,
    })


def test_a_wide_layer_asks_for_more_than_a_narrow_one():
    settings = PlanSettings(voxels=161_560)
    jobs_plan = plan.assign_jobs(inventory("m", [WIDE, NARROW]), 1000, scratch_gb=5,
                                 layers_per_job=1)
    assert jobs_plan["group"].tolist() == [0, 1]  # 6 GB of features: a group of its own
    extract = extract_jobs(jobs_plan, settings).set_index("group")
    # Host buffers: two sets of 32 images x the group's features as float16.
    c = cost.ExtractionCalibration()
    for group, width in ((0, WIDE), (1, NARROW)):
        peak = c.base_bytes + 2 * 32 * width * 2
        assert extract.loc[group, "mem_mb"] == math.ceil((peak * 1.25 / 1e6 + 1000) / 100) * 100
        assert extract.loc[group, "disk_mb"] == math.ceil(width * 1000 * 2 / 1e6)
    assert extract.loc[0, "mem_mb"] > extract.loc[1, "mem_mb"]
    assert (extract["gpu"] == 1).all() and (extract["cpus"] == plan.EXTRACT_THREADS).all()
    fit = fit_jobs(jobs_plan, settings).set_index("block")
    # Fit memory does not follow the width: the pass streams column blocks, and every fit job
    # asks for the largest read block (a job array gets its first job's request for all).
    assert fit.loc[0, "peak_bytes"] == fit.loc[1, "peak_bytes"] == pytest.approx(
        cost.job_peak_bytes(1000, 161_560, settings.srp_dim, widest=None))
    assert fit.loc[0, "mem_mb"] == fit.loc[1, "mem_mb"]
    per_job = cost.job_overhead_seconds(1000, 161_560)  # start-up and the shared brain RDMs
    assert fit.loc[0, "wall_s"] > 10 * (fit.loc[1, "wall_s"] - per_job)


def test_a_fit_job_needs_memory_for_its_voxels_and_images():
    settings = PlanSettings(voxels=40_000)
    small = fit_jobs(plan.assign_jobs(inventory("m", [NARROW]), 1000, 5, 1), settings)
    more = fit_jobs(plan.assign_jobs(inventory("m", [NARROW]), 1000, 5, 1),
                    PlanSettings(voxels=80_000))
    c = cost.Calibration.load()
    assert more["peak_bytes"].iloc[0] - small["peak_bytes"].iloc[0] == pytest.approx(
        c.response_copies * 4 * 1000 * 40_000)


def test_requests_have_floors_and_scale_with_the_attempt():
    assert request(1.0, 0.0) == Request(mem_mb=1000, runtime=plan.RUNTIME_FLOOR_MIN)
    big = request(3600.0, 8e9, disk_bytes=2.5e9, cpus=2, gpu=1)
    assert big == Request(mem_mb=11_000, runtime=120, disk_mb=2500, cpus=2, gpu=1)
    third = big.for_attempt(3)
    assert (third.mem_mb, third.runtime) == (33_000, 360)
    assert (third.disk_mb, third.cpus, third.gpu) == (2500, 2, 1)


def test_recalibration_factors_scale_estimates():
    settings = PlanSettings(voxels=10_000)
    base = fit_jobs(plan.assign_jobs(inventory("m", [NARROW, WIDE]), 1000, 50, 1), settings)
    scaled = fit_jobs(plan.assign_jobs(inventory("m", [NARROW, WIDE]), 1000, 50, 1),
                      PlanSettings(voxels=10_000, factors={"fit": {"time": 3.0, "mem": 2.0}}))
    np.testing.assert_allclose(scaled["wall_s"], 3 * base["wall_s"])
    np.testing.assert_allclose(scaled["peak_bytes"], 2 * base["peak_bytes"])


# ------------------------------------------------------------------------- the real workflow
def fake_inputs(workdir: Path, config: dict):
    """Files the layer inventories read, older than the inventories: a dry run then treats
    the inventories as done and lists every job after them."""
    for relative in ("nsddata/experiments/nsd/nsd_expdesign.mat",
                     "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
                     "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "planted_truth.json"):
        path = workdir / config["nsd"]["root"] / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (workdir / "results/stimuli/train.zarr").mkdir(parents=True)
    (workdir / "results/layers").mkdir(parents=True)


def tiny_widths(model_index):
    # Per model: a wide layer, narrow ones, mid-sized ones (several extraction groups: the
    # tiny demo's scratch_gb is 2, i.e. 8.3 M features of 120 float16 images).
    return [WIDE, NARROW, 200_000, 5_000 + model_index, WIDE * 2, 64_000, 1_000][
        : 4 + model_index % 4]


def planted_voxels():
    """A voxel table: per subject x ROI a number of voxels, some not kept; one ROI of subject
    02 keeps fewer than 10 (not scored)."""
    rows = []
    for subject in (1, 2):
        for index, roi in enumerate(TINY_CONFIG["rois"]):
            total = 30 + 7 * index + subject
            kept = 5 if (subject, index) == (2, 3) else total - index
            for voxel in range(total):
                rows.append({"subject": subject, "roi": roi["name"], "x": voxel, "y": 0,
                             "z": 0, "reliability": 0.5, "ncsnr": 1.0, "kept": voxel < kept})
    return pd.DataFrame(rows)


def parse_jobs(dry_run: str, rule: str) -> list[dict]:
    """Wildcards and resources of every job of ``rule`` printed by a dry run."""
    jobs = []
    for block in re.split(r"\n(?=\[.*\]\n)", dry_run):
        if not re.search(rf"^rule {rule}:", block, re.M):
            continue
        wildcards = re.search(r"wildcards: (.*)", block).group(1)
        resources = re.search(r"resources: (.*)", block).group(1)
        job = dict(item.split("=", 1) for item in wildcards.split(", "))
        job.update(dict(item.split("=", 1) for item in resources.split(", ")))
        jobs.append(job)
    return jobs


def job_stats(dry_run: str) -> dict:
    section = dry_run.split("Job stats:")[1].split("total")[0]
    stats = {}
    for line in section.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            stats[fields[0]] = int(fields[1])
    return stats


@pytest.fixture(scope="module")
def tiny_cost(tmp_path_factory):
    """The tiny demo with synthetic inventories, a voxel table and benchmark files of some fit
    jobs that took 3x the estimate and 2x the memory: `snakemake cost`, then a dry run."""
    workdir = tmp_path_factory.mktemp("tiny-cost")
    fake_inputs(workdir, TINY_CONFIG)
    (workdir / "results/brain").mkdir()
    planted_voxels().to_parquet(workdir / "results/brain/voxels.parquet")
    config = validate_config(
        {**TINY_CONFIG, "fit": {"layers_per_job": 2}}, ROOT / "config" / "schema.yaml")
    voxels = cost.scored_voxels(planted_voxels())
    settings = plan.settings_from_config(config, N_IMAGES, voxels)
    plans = {}
    for index, entry in enumerate(config["models"]):
        table = inventory(entry["name"], tiny_widths(index), n_images=N_IMAGES)
        table.to_parquet(workdir / f"results/layers/{entry['name']}.parquet")
        plans[entry["name"]] = plan.plan_from_config(table, config)
        for row in fit_jobs(plans[entry["name"]], settings).head(2).itertuples():
            path = workdir / f"logs/benchmarks/fit/{entry['name']}/block-{row.block}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("s\th:m:s\tmax_rss\tmax_vms\n"
                            f"{3 * row.wall_s:.4f}\t0:00:01\t{2 * row.peak_bytes / 1e6:.4f}\t1\n")
    # The tiny demo with fit blocks of 2 layers: several fit jobs per extraction group.
    override = workdir / "override.yaml"
    override.write_text("fit: {layers_per_job: 2}\n")
    args = ["--configfile", str(TINY), str(override), "-d", str(workdir)]
    report_run = snakemake("cost", "--cores", "1", *args)
    dry_run = snakemake("-n", "--cores", "2", *args).stdout
    return {"workdir": workdir, "config": config, "plans": plans, "voxels": voxels,
            "report": pd.read_csv(workdir / "results/cost.tsv", sep="\t"),
            "printed": report_run.stdout, "dry_run": dry_run}


def test_voxel_count_is_the_voxel_tables(tiny_cost):
    voxels = planted_voxels()
    brute = 0
    for _, rows in voxels.groupby(["subject", "roi"]):
        kept = int(rows["kept"].sum())
        brute += kept if kept >= 10 else 0
    assert tiny_cost["voxels"] == brute
    assert f"scored voxels: {brute:,} (results/brain/voxels.parquet)" in tiny_cost["printed"]


def test_cost_report_counts_the_dry_runs_jobs(tiny_cost):
    report = tiny_cost["report"].set_index("rule")
    stats = job_stats(tiny_cost["dry_run"])
    stats.pop("all")
    for rule, count in stats.items():
        assert report.loc[rule, "jobs"] == count, rule
    # The rest are done already (the inventories and what they read) or have no jobs here.
    done = {rule for rule in report.index if rule not in stats and rule != "TOTAL"}
    assert {"layer_inventory", "train_stimuli", "demo_nsd"} <= done
    assert report.loc[list(done - {"layer_inventory"}), "jobs"].isin([0, 1]).all()
    assert report.loc["layer_inventory", "jobs"] == len(TINY_CONFIG["models"])


def test_cost_report_totals_and_fits(tiny_cost):
    report = tiny_cost["report"]
    assert list(report.columns) == plan.REPORT_COLUMNS
    rules, total = report[report["rule"] != "TOTAL"], report[report["rule"] == "TOTAL"].iloc[0]
    for column in ("jobs", "submissions", "submissions_max", "core_hours", "gpu_hours",
                   "fits"):
        assert total[column] == pytest.approx(rules[column].sum()), column
    for column in ("max_mem_mb", "max_runtime_min", "max_disk_mb"):
        assert total[column] == rules[column].max()
    # One fit per voxel per layer: every layer of every model, against every scored voxel.
    layers = sum(len(tiny_widths(index)) for index in range(len(TINY_CONFIG["models"])))
    assert total["fits"] == layers * tiny_cost["voxels"]
    # Without a Slurm executor's array setting the profile's is used: fit jobs as arrays.
    fit = report.set_index("rule").loc["fit"]
    groups = sum(p["group"].nunique() for p in tiny_cost["plans"].values())
    assert (fit["submissions"], fit["submissions_max"]) == (1, groups)
    # Extraction scratch: every group's features, float16, N_IMAGES images.
    features = sum(sum(tiny_widths(index)) for index in range(len(TINY_CONFIG["models"])))
    assert report.set_index("rule").loc["extract", "disk_total_gb"] == pytest.approx(
        features * N_IMAGES * 2 / 1e9)


def test_benchmark_files_recalibrate_the_requests(tiny_cost):
    calibration = json.loads(
        (tiny_cost["workdir"] / "results/cost-calibration.json").read_text())
    fit = calibration["factors"]["fit"]
    assert fit["jobs"] == 2 * len(TINY_CONFIG["models"])
    assert fit["time"] == pytest.approx(3.0, rel=1e-3)
    assert fit["mem"] == pytest.approx(2.0, rel=1e-3)
    # The dry run's fit and extraction jobs ask for what the recalibrated plan says.
    config = tiny_cost["config"]
    settings = plan.settings_from_config(config, N_IMAGES, tiny_cost["voxels"],
                                         calibration["factors"])
    for rule, make, key in (("fit", fit_jobs, "block"), ("extract", extract_jobs, "group")):
        printed = parse_jobs(tiny_cost["dry_run"], rule)
        assert len(printed) == sum(p[key].nunique() for p in tiny_cost["plans"].values())
        for job in printed:
            planned = make(tiny_cost["plans"][job["model"]], settings).set_index(key)
            row = planned.loc[int(job[key])]
            assert int(job["mem_mb"]) == row["mem_mb"]
            assert int(job["runtime"]) == row["runtime"]
            assert int(job["cpus_per_task"]) == row["cpus"]
            assert int(job["gpu"]) == row["gpu"]
            if rule == "extract":
                assert int(job["disk_mb"]) == row["disk_mb"]


def test_survey_cost_on_synthetic_inventories(tmp_path):
    """The paper's survey (config/config.yaml): every model entry with an inventory of ~220
    layers, the paper's voxels: submissions stay under 2,000 and the fits are counted."""
    survey_path = ROOT / "config" / "config.yaml"
    survey = yaml.safe_load(survey_path.read_text())
    survey["nsd"]["root"] = str(tmp_path / "nsd")
    survey["weights_cache"] = str(tmp_path / "weights")
    config_path = tmp_path / "survey.yaml"
    config_path.write_text(yaml.safe_dump(survey))
    fake_inputs(tmp_path, survey)
    config = validate_config(survey, ROOT / "config" / "schema.yaml")
    for entry in config["models"]:
        if entry["trained"] and "url" in entry.get("weights", {}):
            path = weights_path(entry, config["weights_cache"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    rng = np.random.default_rng(0)
    layers = 0
    fewest_blocks = 0  # blocks of fit.layers_per_job layers, if no extraction group split one
    per_job = config["fit"]["layers_per_job"]
    for entry in config["models"]:
        # Log-uniform widths, 200k features on average (resnet50: 216k over 174 layers).
        widths = np.exp(rng.uniform(np.log(1e3), np.log(1.5e6), rng.integers(150, 290)))
        table = inventory(entry["name"], widths.astype(int))
        table.to_parquet(tmp_path / f"results/layers/{entry['name']}.parquet")
        layers += len(table)
        fewest_blocks += math.ceil(len(table) / per_job)
    snakemake("cost", "--cores", "1", "--configfile", str(config_path), "-d", str(tmp_path))
    report = pd.read_csv(tmp_path / "results/cost.tsv", sep="\t").set_index("rule")
    assert report.loc["layer_inventory", "jobs"] == len(config["models"]) == 340
    # Blocks never span two extraction groups: each group boundary adds at most one block.
    fit_jobs = report.loc["fit", "jobs"]
    assert fewest_blocks <= fit_jobs <= fewest_blocks + report.loc["extract", "jobs"]
    assert report.loc["TOTAL", "fits"] == layers * cost.PAPER_VOXELS
    # Counted as the issue counts: every job of a rule not submitted as arrays, and one per
    # chunk of 1000 tasks for the fit arrays.
    assert report.loc["fit", "submissions"] == math.ceil(fit_jobs / 1000)
    slurm_rules = ["layer_inventory", "extract", "extract_best_layers", "generalize",
                   "brain_responses",
                   "train_stimuli", "test_stimuli", "ceilings"]
    assert report.loc["TOTAL", "submissions"] == (
        report.loc[slurm_rules, "jobs"].sum() + math.ceil(fit_jobs / 1000))
    assert report.loc["TOTAL", "submissions"] <= 2000
