"""The workflow end to end on the tiny demo: dry run, lint, config errors, the planted truth."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY
from conftest import run_snakemake as snakemake

from nsdbench.demo.recovery import planted_recovery
from nsdbench.tables import SCORE_COLUMNS, read_provenance


def test_dry_run_lists_jobs_and_stats(tmp_path):
    demo = ROOT / "config" / "demo.yaml"
    result = snakemake("-n", "--configfile", str(demo), "-d", str(tmp_path))
    assert "Job stats:" in result.stdout
    for rule in ("demo_nsd", "brain_responses", "layer_inventory", "aggregate_scores"):
        assert rule in result.stdout
    # Every configured model's inventory is listed before any has run.
    assert result.stdout.count("checkpoint layer_inventory:") == 5


def job_count(dry_run_output: str, rule: str) -> int:
    """A rule's job count from the "Job stats" table of a dry run."""
    for line in dry_run_output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == rule:
            return int(fields[1])
    return 0


def test_survey_dry_run_lists_an_inventory_job_and_a_fetch_for_every_model(tmp_path):
    survey = ROOT / "config" / "config.yaml"
    models = yaml.safe_load(survey.read_text())["models"]
    nsd = tmp_path / "nsd"  # the three NSD files the first jobs read; empty is enough for -n
    for relative in ("nsddata/experiments/nsd/nsd_expdesign.mat",
                     "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
                     "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"):
        (nsd / relative).parent.mkdir(parents=True, exist_ok=True)
        (nsd / relative).touch()
    result = snakemake("-n", "--configfile", str(survey), "--config", f"nsd={{root: {nsd}}}",
                       "-d", str(tmp_path / "run"))
    assert job_count(result.stdout, "layer_inventory") == len(models)
    fetched = [m for m in models if m["trained"] and "url" in m.get("weights", {})]
    assert job_count(result.stdout, "fetch_model_weights") == len(fetched)


def test_lint_is_clean():
    result = snakemake("--lint", check=False)
    assert "Lints for" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("ridge:\n  lambda: 1\n", "'lambda' was unexpected"),
        ("extraction:\n  batch_size: sixteen\n", "config key 'extraction.batch_size'"),
    ],
)
def test_bad_config_stops_with_the_key_named(tmp_path, change, expected):
    override = tmp_path / "override.yaml"
    override.write_text(change)
    result = snakemake(
        "-n", "--configfile", str(TINY), str(override), "-d", str(tmp_path), check=False
    )
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr


def test_scores_table_has_the_long_schema(tiny_run):
    scores = pd.read_parquet(tiny_run / "results/tables/scores.parquet")
    assert list(scores.columns) == SCORE_COLUMNS
    assert set(scores["metric"]) == {"crsa", "versa", "voxel_r"}
    assert set(scores["split"]) == {"train", "test"}
    assert set(scores["subject"]) == {"01", "02"}
    assert scores["score"].notna().mean() > 0.99
    assert scores["score"].between(-1, 1).all()
    assert read_provenance(tiny_run / "results/tables/scores.parquet")["seed"] == "0"
    for model, layers in scores.groupby("model")["layer"]:
        inventory = pd.read_parquet(tiny_run / f"results/layers/{model}.parquet")
        assert set(layers) == set(inventory["layer"])


def test_generalization_scores_the_best_train_layers_on_test_images(tiny_run):
    scores = pd.read_parquet(tiny_run / "results/tables/scores.parquet")
    test = scores[scores["split"] == "test"]
    # one row per model x subject x ROI x metric, on the layer the train score chose
    assert len(test) == 5 * 2 * 6 * 3
    assert (test["n_images"] == 30).all()
    train = scores[scores["split"] == "train"].dropna(subset=["score"])
    chosen = train.loc[train.groupby(["model", "subject", "roi", "metric"])["score"].idxmax()]
    merged = test.merge(chosen, on=["model", "subject", "roi", "metric"], suffixes=("", "_train"))
    assert (merged["layer"] == merged["layer_train"]).all()
    versa = test[test["metric"] == "versa"].groupby("model")["score"].mean()
    assert versa.idxmax() == "efficientnet_lite0"  # the planted network generalizes best


def test_reference_ceilings_table(tiny_run):
    ceilings = pd.read_parquet(tiny_run / "results/ceilings.parquet")
    assert len(ceilings) == 2 * 6 * 5  # subjects x ROIs x (ceiling, metric) pairs
    assert set(ceilings["ceiling"]) == {
        "intersubject_crsa", "subject_to_subject", "others_to_subject"
    }
    rdm_rows = ceilings[ceilings["metric"] != "voxel_r"]
    assert (rdm_rows["ci_low"] <= rdm_rows["score"]).all()
    assert (rdm_rows["score"] <= rdm_rows["ci_high"]).all()
    # The demo's subjects share the planted signal, so their RDMs agree. (With 40 voxels, the
    # paper's fixed 1e5 over-shrinks the brain-to-brain ridge: voxel r is near -1 there.)
    assert (rdm_rows["score"] > 0.1).all()
    assert ceilings["score"].between(-1, 1).all()


def test_feature_stores_are_temporary_and_figure_exists(tiny_run):
    assert not list((tiny_run / "results").glob("features/*/group-*"))
    assert not list((tiny_run / "results").glob("generalization/*.features*"))
    for suffix in ("png", "svg"):
        assert (tiny_run / f"results/figures/best_scores.{suffix}").stat().st_size > 1000


def test_planted_truth_is_recovered(tiny_run):
    scores = pd.read_parquet(tiny_run / "results/tables/scores.parquet")
    truth = json.loads((tiny_run / "resources/demo-nsd/planted_truth.json").read_text())
    recovery = planted_recovery(scores, truth)
    assert recovery["pairs"] == 12
    assert recovery["fraction_within_depth_tolerance"] >= 0.8, recovery
    assert recovery["beats_others_on_average"], recovery
    assert recovery["fraction_pairs_beating_all_others"] >= 0.8, recovery
    assert recovery["spearman_planted_vs_best_depth"] >= 0.8, recovery


def test_rerun_does_nothing(tiny_run):
    result = snakemake("-n", "--configfile", str(TINY), "-d", str(tiny_run))
    assert "Nothing to be done" in result.stdout + result.stderr
    assert np.isfinite(pd.read_parquet(tiny_run / "results/tables/scores.parquet")["score"]).any()
