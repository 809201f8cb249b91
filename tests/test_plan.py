"""Extraction groups bound the feature bytes; fit blocks never span two groups; each job's
estimate and request, and the jobs per rule of a full run."""

import numpy as np
import pandas as pd
import pytest

from nsdbench import plan as planning
from nsdbench.plan import assign_jobs, fit_stage_line


def inventory(widths):
    return pd.DataFrame({"layer": [f"l{i}" for i in range(len(widths))], "n_features": widths})


def test_groups_fit_the_scratch_budget_and_blocks_stay_inside_groups():
    widths = [10, 20, 5, 40, 3, 3, 3, 30]  # x 10 images x 4 bytes: 400 ... 1,600 bytes
    plan = assign_jobs(inventory(widths), n_images=10, scratch_gb=1.6e-6, layers_per_job=2,
                       bytes_per_feature=4)
    bytes_per_group = (plan["n_features"] * 10 * 4).groupby(plan["group"]).sum()
    assert (bytes_per_group <= 1600).all()
    assert plan["group"].tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert plan.groupby("block")["group"].nunique().max() == 1
    assert plan.groupby("block").size().max() <= 2
    assert plan["group"].is_monotonic_increasing and plan["block"].is_monotonic_increasing


def test_budget_and_layers_per_job():
    plan = assign_jobs(inventory([10] * 7), n_images=10, scratch_gb=1.0, layers_per_job=3)
    assert plan["group"].tolist() == [0] * 7
    assert plan["block"].tolist() == [0, 0, 0, 1, 1, 1, 2]
    tight = assign_jobs(inventory([10] * 4), n_images=10, scratch_gb=800e-9, layers_per_job=9,
                         bytes_per_feature=4)
    assert tight["group"].tolist() == [0, 0, 1, 1]  # 400 bytes per layer, 800 per group
    assert tight["block"].tolist() == [0, 0, 1, 1]
    # float16 stores (the default) take half the bytes: twice the layers per group
    half = assign_jobs(inventory([10] * 4), n_images=10, scratch_gb=800e-9, layers_per_job=9)
    assert half["group"].tolist() == [0, 0, 0, 0]


def test_a_layer_wider_than_the_budget_gets_a_group_of_its_own():
    plan = assign_jobs(inventory([1, 100, 1]), n_images=10, scratch_gb=1e-6, layers_per_job=5,
                       bytes_per_feature=4)
    assert plan["group"].tolist() == [0, 1, 2]


def test_empty_inventory_is_refused():
    with pytest.raises(ValueError, match="inventory is empty"):
        assign_jobs(inventory([]), n_images=10, scratch_gb=1.0, layers_per_job=1)


# ------------------------------------------------------------------ job tables and the report

def model_inventory(model, widths, n_images=100):
    return inventory(widths).assign(model=model, n_images=n_images)


def test_job_tables_of_several_models_are_each_models_tables():
    settings = planning.PlanSettings(voxels=5000, sets=8, subjects=2, n_test=50)
    plans = [assign_jobs(model_inventory(m, w), 100, 1e-4, 2)
             for m, w in (("a", [10, 2000, 300_000, 40]), ("b", [50_000] * 5))]
    for make in (planning.fit_jobs, planning.extract_jobs, planning.best_layer_extraction_jobs,
                 planning.generalize_jobs):
        together = make(pd.concat(plans, ignore_index=True), settings)
        apart = pd.concat([make(p, settings) for p in plans], ignore_index=True)
        pd.testing.assert_frame_equal(together, apart)
    fit = planning.fit_jobs(plans[0], settings)
    assert fit["block"].tolist() == sorted(plans[0]["block"].unique())
    assert fit["layers"].tolist() == plans[0].groupby("block").size().tolist()
    assert fit["widest"].tolist() == plans[0].groupby("block")["n_features"].max().tolist()
    extract = planning.extract_jobs(plans[1], settings)
    assert extract["features"].tolist() == plans[1].groupby("group")["n_features"].sum().tolist()
    assert (extract["disk_mb"] == np.ceil(extract["features"] * 100 * 2 / 1e6)).all()
    # Generalization: the GPU job extracts the 5 widest layers for train + 2 x 50 test images;
    # the CPU job fits them on one core, without a GPU or scratch of its own.
    best = planning.best_layer_extraction_jobs(plans[0], settings).iloc[0]
    assert best["layers"] == 4 and best["features"] == 10 + 2000 + 300_000 + 40
    assert best["gpu"] == 1 and best["disk_mb"] == np.ceil(best["features"] * 200 * 2 / 1e6)
    fits = planning.generalize_jobs(plans[0], settings).iloc[0]
    assert (fits["gpu"], fits["cpus"], fits["disk_mb"]) == (0, 1, 0)


def test_plan_and_settings_from_config():
    config = {"extraction": {"scratch_gb": 1e-4, "dtype": "float32", "batch_size": 8,
                             "device": "cpu"},
              "fit": {"layers_per_job": 3}, "subjects": [1, 2, 5],
              "rois": [{"name": r} for r in "abcd"], "images": {"n_test": 40},
              "ridge": {"alphas": [1.0, 10.0], "reduction": "srp", "srp_dim": None}}
    table = model_inventory("m", [10, 2000, 300, 40])
    pd.testing.assert_frame_equal(planning.plan_from_config(table, config),
                                  assign_jobs(table, 100, 1e-4, 3, bytes_per_feature=4))
    settings = planning.settings_from_config(config, 1000, voxels=777)
    assert (settings.sets, settings.subjects, settings.n_test, settings.penalties) == (12, 3, 40, 2)
    assert settings.srp_dim == 5920  # Johnson-Lindenstrauss for 1000 images at eps 0.1
    assert (settings.gpu, settings.bytes_per_feature, settings.voxels) == (False, 4, 777)
    config["ridge"] = {"alphas": [1.0], "reduction": "none", "srp_dim": 100}
    assert planning.settings_from_config(config, 1000, 1).srp_dim is None


def test_jobs_per_rule_and_array_submissions():
    plans = {m: assign_jobs(model_inventory(m, w), 100, 1e-4, 1)
             for m, w in (("a", [300, 300, 300]), ("b", [100] * 5))}
    groups = sum(p["group"].nunique() for p in plans.values())
    assert planning.jobs_of_rule([], plans, 4, 0) == 1
    assert planning.jobs_of_rule(["subject"], plans, 4, 0) == 4
    assert planning.jobs_of_rule(["model"], plans, 4, 0) == 2
    assert planning.jobs_of_rule(["group", "model"], plans, 4, 0) == groups
    assert planning.jobs_of_rule(["block", "model"], plans, 4, 0) == 8
    assert planning.jobs_of_rule(["file_name", "model"], plans, 4, 3) == 3
    with pytest.raises(ValueError, match="cannot count jobs with wildcards"):
        planning.jobs_of_rule(["roi"], plans, 4, 0)
    fit = planning.fit_jobs(pd.concat(plans.values(), ignore_index=True),
                            planning.PlanSettings(voxels=100))
    per_group = fit.groupby(["model", "group"]).size()
    assert planning.array_submissions(fit, 1000) == (1, len(per_group))
    assert planning.array_submissions(fit, 2) == (4, int(np.ceil(per_group / 2).sum()))
    assert planning.slurm_arrays({"slurm-array-jobs": "fit; extract",
                                  "slurm-array-limit": 500}) == (("fit", "extract"), 500)
    assert planning.slurm_arrays(None) == ((), 1000)


def test_fit_stage_is_scaled_to_the_papers_fit_count():
    report = pd.DataFrame({"rule": ["fit", "extract", "TOTAL"], "core_hours": [10.0, 5.0, 15.0],
                           "fits": [5.17e8, 0, 5.17e8]})
    assert fit_stage_line(report) == ("fit stage (CPU): 10.0 core-hours; 100.0 core-hours per "
                                      "5.17 billion fits, the paper's workload (it took ~32,000)")
    assert fit_stage_line(report[report.rule != "fit"]) == "fit stage: no fit jobs"
