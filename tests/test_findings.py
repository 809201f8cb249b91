"""The findings tables and figures: on synthetic score tables with a known truth (Taskonomy
models included), checked against brute-force pandas and scipy/statsmodels; then on the tiny
demo run, every table and figure exists with its schema."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from statsmodels.stats.multitest import multipletests

from nsdbench import findings
from nsdbench.figures import plot_hierarchy, plot_taskonomy
from nsdbench.tables import SCORE_COLUMNS, read_provenance

ROIS = [
    {"name": "V1", "file": "prf-visualrois"}, {"name": "V2", "file": "prf-visualrois"},
    {"name": "FFA-1", "file": "floc-faces"}, {"name": "PPA", "file": "floc-places"},
]
PLANTED = {"V1": 0.1, "V2": 0.3, "FFA-1": 0.7, "PPA": 0.9}
SUBJECTS = ["01", "02"]
N_LAYERS = 10


def entry(name, architecture="convolutional", trained=True, task="classification",
          category="semantic", diet="imagenet", source="timm", arch=None):
    return {"name": name, "source": source, "arch": arch or name.removesuffix("_random"),
            "architecture": architecture, "task": task, "task_category": category,
            "input_diet": diet, "trained": trained}


MODELS = [
    *[entry(f"conv{i}") for i in range(4)],
    *[entry(f"conv{i}_random", trained=False) for i in range(4)],
    *[entry(f"vit{i}", "transformer") for i in range(3)],
    *[entry(f"vit{i}_random", "transformer", trained=False) for i in range(3)],
    *[entry(f"mixer{i}", "mlp-mixer") for i in range(2)],
    entry("resnet50", source="torchvision", arch="resnet50"),
    *[entry(f"ssl{i}", task=f"ssl{i}", category="self-supervised", source="vissl",
            arch="resnet50") for i in range(3)],
    *[entry(f"tk_{category}{i}", task=f"{category}{i}", category=category, diet="taskonomy",
            source="taskonomy", arch=f"{category}{i}")
      for category in ("2d", "3d", "geometric", "semantic") for i in range(3)],
    entry("taskonomy_random", task="2d0", category="2d", diet="taskonomy", source="taskonomy",
          arch="2d0", trained=False),
]


def synthetic_scores(models=MODELS, seed=0) -> pd.DataFrame:
    """Every layer peaks at its ROI's planted depth; a model's level depends on its kind."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in models:
        level = (0.3 + 0.1 * model["trained"] + 0.05 * (model["input_diet"] == "imagenet")
                 + rng.normal(0, 0.03))
        for layer in range(N_LAYERS):
            depth = (layer + 1) / N_LAYERS
            for subject in SUBJECTS:
                for roi, planted in PLANTED.items():
                    for metric, lift in (("crsa", 0.0), ("versa", 0.15), ("voxel_r", -0.1)):
                        score = (level + lift - 5 * (depth - planted) ** 2
                                 + rng.normal(0, 0.005))
                        rows.append({
                            "model": model["name"], "source": model["source"],
                            "architecture": model["architecture"], "task": model["task"],
                            "task_category": model["task_category"],
                            "input_diet": model["input_diet"], "trained": model["trained"],
                            "layer": f"l{layer}", "layer_index": layer, "layer_depth": depth,
                            "subject": subject, "roi": roi, "metric": metric, "split": "train",
                            "score": score, "n_voxels": 40, "n_images": 100, "srp_dim": 0,
                            "alpha": 1e5})
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    best = scores.loc[scores.groupby(["model", "subject", "roi", "metric"])["score"].idxmax()]
    test = best.assign(split="test", score=best["score"] - 0.02 + rng.normal(0, 0.01, len(best)))
    return pd.concat([scores, test], ignore_index=True)


@pytest.fixture(scope="module")
def synthetic():
    scores = synthetic_scores()
    best = findings.best_layers(scores, findings.roi_groups(ROIS))
    return scores, best


def oracle_model_scores(scores, metric, roi_group):
    """Brute force: per model, the max train score over layers per subject x ROI, averaged
    over subjects, then over the group's ROIs."""
    rois = [roi["name"] for roi in ROIS if findings.roi_groups(ROIS)[roi["name"]] == roi_group]
    train = scores[(scores["split"] == "train") & (scores["metric"] == metric)
                   & scores["roi"].isin(rois)]
    best = train.groupby(["model", "subject", "roi"])["score"].max()
    return best.groupby(["model", "roi"]).mean().groupby("model").mean()


def test_roi_groups_follow_the_roi_volumes():
    assert findings.roi_groups(ROIS) == {"V1": "early", "V2": "early",
                                         "FFA-1": "category-selective",
                                         "PPA": "category-selective"}


def test_best_layers_are_the_argmax_of_the_train_score(synthetic):
    scores, best = synthetic
    assert list(best.columns) == findings.BEST_LAYER_COLUMNS
    assert len(best) == len(MODELS) * len(SUBJECTS) * len(PLANTED) * 3
    for (model, subject, roi, metric), row in best.set_index(
            ["model", "subject", "roi", "metric"]).sample(40, random_state=0).iterrows():
        layer_scores = scores[(scores["model"] == model) & (scores["subject"] == subject)
                              & (scores["roi"] == roi) & (scores["metric"] == metric)
                              & (scores["split"] == "train")]
        top = layer_scores.loc[layer_scores["score"].idxmax()]
        assert row["layer"] == top["layer"] and row["train_score"] == top["score"]
    assert best["test_score"].notna().all()
    # planted: the best layer sits at the planted depth
    assert (best["layer_depth"] - best["roi"].map(PLANTED)).abs().max() < 1e-9


def test_hierarchy_orders_rois_by_depth_and_averages_by_class(synthetic):
    _, best = synthetic
    table = findings.hierarchy(best, list(PLANTED))
    assert list(table.columns) == findings.HIERARCHY_COLUMNS
    versa = table[table["metric"] == "versa"]
    order = versa.drop_duplicates("roi").sort_values("roi_order")["roi"].tolist()
    assert order == sorted(PLANTED, key=PLANTED.get)
    classes = versa[(versa["level"] == "architecture") & versa["trained"]]
    expected = (best[(best["metric"] == "versa") & best["trained"]]
                .groupby(["model", "architecture", "roi"])["layer_depth"].mean()
                .groupby(["architecture", "roi"]).mean())
    got = classes.set_index(["architecture", "roi"])["depth"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    assert set(table["level"]) == {"model", "architecture", "all"}


def test_contrasts_match_scipy_and_statsmodels(synthetic):
    scores, best = synthetic
    table, skipped = findings.contrasts(best, findings.model_table(MODELS), seed=0, n_boot=200)
    assert list(table.columns) == findings.CONTRAST_COLUMNS
    assert not skipped
    models = findings.model_table(MODELS).set_index("model")

    # Taskonomy categories: Kruskal-Wallis over the trained Taskonomy encoders
    omnibus = table[(table["contrast"] == "taskonomy_category")
                    & (table["test"] == "kruskal-wallis")]
    assert len(omnibus) == 4  # ROI groups x metrics
    for _, row in omnibus.iterrows():
        values = oracle_model_scores(scores, row["metric"], row["roi_group"])
        chosen = models[(models["input_diet"] == "taskonomy") & models["trained"]]
        groups = [values[chosen.index[chosen["task_category"] == category]].to_numpy()
                  for category in ("2d", "3d", "geometric", "semantic")]
        oracle = scipy.stats.kruskal(*groups)
        assert row["statistic"] == pytest.approx(oracle.statistic)
        assert row["p_value"] == pytest.approx(oracle.pvalue)
        assert row["effect"] == pytest.approx(oracle.statistic / (12 - 1))
        assert row["ci_low"] <= row["ci_high"]
    np.testing.assert_allclose(omnibus["p_holm"],
                               multipletests(omnibus["p_value"], method="holm")[1])

    # Post-hoc pairs of one omnibus test: Mann-Whitney U, Holm within the test
    pairs = table[(table["contrast"] == "architecture") & (table["population"] == "trained")
                  & (table["test"] == "mann-whitney") & (table["roi_group"] == "early")
                  & (table["metric"] == "versa")]
    assert len(pairs) == 3
    values = oracle_model_scores(scores, "versa", "early")
    for _, row in pairs.iterrows():
        chosen = models[(models["task"] == "classification") & (models["input_diet"] == "imagenet")
                        & models["trained"]]
        a = values[chosen.index[chosen["architecture"] == row["group_a"]]].to_numpy()
        b = values[chosen.index[chosen["architecture"] == row["group_b"]]].to_numpy()
        oracle = scipy.stats.mannwhitneyu(a, b)
        assert row["statistic"] == pytest.approx(oracle.statistic)
        assert row["p_value"] == pytest.approx(oracle.pvalue)
        assert row["mean_difference"] == pytest.approx(a.mean() - b.mean())
    np.testing.assert_allclose(pairs["p_holm"], multipletests(pairs["p_value"], method="holm")[1])

    # Self-supervised vs category-supervised ResNet-50s, and ImageNet vs Taskonomy diet
    supervision = table[(table["contrast"] == "supervision_resnet50")
                        & (table["test"] == "kruskal-wallis")]
    assert set(supervision["groups"]) == {"self-supervised:3, category-supervised:1"}
    diet = table[(table["contrast"] == "input_diet") & (table["test"] == "kruskal-wallis")]
    assert len(diet) == 4

    # Training: Wilcoxon signed-rank over the trained/random twins
    training = table[table["contrast"] == "training"]
    assert len(training) == 4
    twins = findings.twin_pairs(findings.model_table(MODELS))
    assert ("tk_2d0", "taskonomy_random") in twins and ("conv0", "conv0_random") in twins
    assert len(twins) == 8
    for _, row in training.iterrows():
        values = oracle_model_scores(scores, row["metric"], row["roi_group"])
        differences = np.array([values[t] - values[r] for t, r in twins])
        oracle = scipy.stats.wilcoxon(differences)
        assert row["p_value"] == pytest.approx(oracle.pvalue)
        assert row["n"] == 8 and row["mean_difference"] == pytest.approx(differences.mean())
        assert row["effect"] == 1.0  # every trained twin beats its random one


def test_a_contrast_with_one_group_has_no_row_and_a_reason(synthetic):
    _, best = synthetic
    imagenet_only = [model for model in MODELS if model["input_diet"] == "imagenet"]
    best = best[best["input_diet"] == "imagenet"]
    table, skipped = findings.contrasts(best, findings.model_table(imagenet_only), seed=0,
                                        n_boot=50)
    assert not (table["contrast"].isin(["taskonomy_category", "input_diet"])).any()
    assert any(reason.startswith("taskonomy_category") and "none" in reason
               for reason in skipped)
    assert any(reason.startswith("input_diet") and "imagenet" in reason for reason in skipped)
    assert (table["contrast"] == "architecture").any()


def test_gains_are_versa_minus_crsa(synthetic):
    scores, best = synthetic
    table = findings.gains(best, seed=0, n_boot=200)
    assert list(table.columns) == findings.GAIN_COLUMNS
    cells = table[table["level"] == "model_roi"]
    assert len(cells) == len(MODELS) * len(PLANTED)
    train = scores[scores["split"] == "train"]
    peak = train.groupby(["model", "subject", "roi", "metric"])["score"].max().unstack()
    oracle = (peak["versa"] - peak["crsa"]).groupby(["model", "roi"]).mean()
    got = cells.set_index(["model", "roi"])["gain"]
    pd.testing.assert_series_equal(got.sort_index(), oracle.sort_index(), check_names=False)
    overall = table[(table["level"] == "all") & (table["population"] == "trained")].iloc[0]
    trained_cells = cells[cells["population"] == "trained"]
    assert overall["gain"] == pytest.approx(trained_cells["gain"].mean())
    assert overall["ci_low"] < overall["gain"] < overall["ci_high"]
    assert overall["gain"] == pytest.approx(0.15, abs=0.01)  # the synthetic lift


def test_generalization_drop_is_train_minus_test(synthetic):
    _, best = synthetic
    table = findings.generalization(best, seed=0, n_boot=200)
    assert list(table.columns) == findings.GENERALIZATION_COLUMNS
    rows = table[table["level"] == "model_subject_roi"]
    assert len(rows) == len(best)
    np.testing.assert_allclose(rows["drop"], rows["train_score"] - rows["test_score"])
    overall = table[(table["level"] == "all") & (table["metric"] == "versa")
                    & (table["population"] == "trained")].iloc[0]
    assert overall["drop"] == pytest.approx(0.02, abs=0.005)  # the synthetic drop
    assert overall["ci_low"] < overall["drop"] < overall["ci_high"]


def test_taskonomy_figure_with_and_without_taskonomy_models(synthetic, tmp_path):
    _, best = synthetic
    ceilings = pd.DataFrame({"subject": "01", "roi": list(PLANTED),
                             "ceiling": "intersubject_crsa", "metric": "crsa", "score": 0.4,
                             "ci_low": 0.35, "ci_high": 0.45, "n_images": 100, "n_voxels": 40})
    groups = findings.roi_groups(ROIS)
    with_models = [tmp_path / "with.svg", tmp_path / "with.png"]
    plot_taskonomy(best, ceilings, groups, with_models)
    without = [tmp_path / "without.svg", tmp_path / "without.png"]
    plot_taskonomy(best[best["input_diet"] != "taskonomy"], ceilings, groups, without)
    message = "no Taskonomy models in this run"
    assert message not in with_models[0].read_text()
    assert message in without[0].read_text()
    assert all(path.stat().st_size > 1000 for path in with_models + without)


def test_hierarchy_figure_draws_planted_depths(synthetic, tmp_path):
    _, best = synthetic
    out = [tmp_path / "h.svg"]
    plot_hierarchy(findings.hierarchy(best, list(PLANTED)), out, planted=PLANTED)
    text = out[0].read_text()
    assert "planted depth" in text and "convolutional" in text and "mlp-mixer" in text


# --- the tiny demo run --------------------------------------------------------------------

TABLES = {
    "best_layers": findings.BEST_LAYER_COLUMNS,
    "hierarchy": findings.HIERARCHY_COLUMNS,
    "contrasts": findings.CONTRAST_COLUMNS,
    "gains": findings.GAIN_COLUMNS,
    "generalization": findings.GENERALIZATION_COLUMNS,
}
FIGURES = ["best_scores", "fig1b_hierarchy", "fig2_architecture", "fig3_taskonomy",
           "fig4_generalization", "fig5_ceilings"]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tiny_run_writes_every_table_with_provenance(tiny_run, name):
    path = tiny_run / f"results/tables/{name}.parquet"
    table = pd.read_parquet(path)
    assert list(table.columns) == TABLES[name]
    assert len(table) > 0
    provenance = read_provenance(path)
    assert provenance["seed"] == "0"
    for library in ("numpy", "scipy", "pandas", "torch", "nsdbench"):
        assert provenance[f"{library}_version"]


def test_tiny_run_draws_every_figure(tiny_run):
    for name in FIGURES:
        for suffix in ("png", "svg"):
            assert (tiny_run / f"results/figures/{name}.{suffix}").stat().st_size > 1000
    svg = (tiny_run / "results/figures/fig3_taskonomy.svg").read_text()
    assert "no Taskonomy models in this run" in svg


def test_tiny_run_contrasts_and_hierarchy(tiny_run):
    contrasts = pd.read_parquet(tiny_run / "results/tables/contrasts.parquet")
    # One trained model, no Taskonomy models: only the random-init architecture contrast and
    # the trained/random twin contrast have two groups.
    assert set(contrasts["contrast"]) == {"architecture", "training"}
    assert set(contrasts.loc[contrasts["contrast"] == "architecture", "population"]) == {"random"}
    training = contrasts[contrasts["contrast"] == "training"]
    assert (training["n"] == 1).all()  # efficientnet_lite0 and its random twin
    log = (tiny_run / "logs/tables/contrasts.log").read_text()
    assert "taskonomy_category" in log and "no contrast row" in log

    hierarchy = pd.read_parquet(tiny_run / "results/tables/hierarchy.parquet")
    truth = json.loads((tiny_run / "resources/demo-nsd/planted_truth.json").read_text())
    planted = pd.Series({roi: layer["layer_depth"] for roi, layer in truth["rois"].items()})
    ground_truth = hierarchy[(hierarchy["model"] == "efficientnet_lite0")
                             & (hierarchy["metric"] == "versa")].set_index("roi")["depth"]
    # Figure 1B's x order (trained models) follows the planted hierarchy
    order = (hierarchy[hierarchy["metric"] == "versa"].drop_duplicates("roi")
             .sort_values("roi_order")["roi"].tolist())
    assert scipy.stats.spearmanr(planted[order], range(len(order))).statistic >= 0.8
    assert (ground_truth - planted[ground_truth.index]).abs().median() <= 0.05
