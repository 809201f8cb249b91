"""The paper's findings as tables, computed from the long score table.

Every finding starts from the best layer of each model x subject x ROI x metric, chosen by its
train (leave-one-out) score, as in the paper. A model's score in an ROI is that layer's train
score averaged over subjects; in an ROI group (early visual, category-selective) it is the mean
over the group's ROIs. Models are the unit of every contrast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from nsdbench import stats
from nsdbench.atomic import replaced_when_done
from nsdbench.tables import MODEL_COLUMNS

log = logging.getLogger(__name__)

ROI_GROUPS = ("early", "category-selective")
CONTRAST_METRICS = ("crsa", "versa")
ARCHITECTURES = ("convolutional", "transformer", "mlp-mixer")
TASKONOMY_CATEGORIES = ("2d", "3d", "geometric", "semantic")

BEST_LAYER_COLUMNS = [
    "model", *MODEL_COLUMNS, "subject", "roi", "roi_group", "metric", "layer", "layer_index",
    "layer_depth", "train_score", "test_score",
]
HIERARCHY_COLUMNS = [
    "level", "model", "architecture", "trained", "roi", "roi_group", "metric", "depth",
    "depth_sd", "n_models", "roi_order",
]
CONTRAST_COLUMNS = [
    "contrast", "population", "roi_group", "metric", "test", "group_a", "group_b", "groups",
    "n", "statistic_name", "statistic", "df", "p_value", "p_holm", "effect_name", "effect",
    "ci_low", "ci_high", "mean_difference",
]
GAIN_COLUMNS = [
    "level", "population", "model", "roi", "roi_group", "crsa", "versa", "gain", "ci_low",
    "ci_high", "n",
]
GENERALIZATION_COLUMNS = [
    "level", "population", "metric", "model", "subject", "roi", "layer", "train_score",
    "test_score", "drop", "ci_low", "ci_high", "n",
]


def roi_groups(rois: list[dict]) -> dict[str, str]:
    """ROI name -> group, from the ROI's NSD volume: prf-* files hold the early visual areas,
    floc-* files the category-selective ones; any other volume is its own group."""
    groups = {}
    for roi in rois:
        volume = str(roi.get("file", ""))
        if volume.startswith("prf-"):
            groups[roi["name"]] = "early"
        elif volume.startswith("floc-"):
            groups[roi["name"]] = "category-selective"
        else:
            groups[roi["name"]] = volume or "other"
    return groups


def model_table(models: list[dict]) -> pd.DataFrame:
    """The configured models' descriptors (with ``arch``), one row per model."""
    rows = [{"model": entry["name"], "arch": entry.get("arch", ""),
             **{column: entry[column] for column in MODEL_COLUMNS}} for entry in models]
    return pd.DataFrame(rows, columns=["model", "arch", *MODEL_COLUMNS])


def population(trained) -> str:
    return "trained" if bool(trained) else "random"


# --- best layers --------------------------------------------------------------------------


def best_layers(scores: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per model x subject x ROI x metric, the layer with the highest train score (the
    shallowest on ties), with its train score and, where generalization ran, its test score."""
    train = scores[scores["split"] == "train"].dropna(subset=["score"])
    train = train.sort_values(["model", "subject", "roi", "metric", "layer_index"], kind="stable")
    keys = ["model", "subject", "roi", "metric"]
    best = train.loc[train.groupby(keys, sort=True)["score"].idxmax()]
    best = best.rename(columns={"score": "train_score"})
    test = scores.loc[scores["split"] == "test", [*keys, "layer", "score"]]
    best = best.merge(test.rename(columns={"score": "test_score"}), on=[*keys, "layer"],
                      how="left")
    unmatched = test.merge(best[[*keys, "layer"]], on=[*keys, "layer"], how="left",
                           indicator=True)
    if (unmatched["_merge"] == "left_only").any():
        log.warning("%d test scores are for a layer other than the best train layer; "
                    "they are left out", int((unmatched["_merge"] == "left_only").sum()))
    best["roi_group"] = best["roi"].map(groups).fillna("other")
    return best[BEST_LAYER_COLUMNS].reset_index(drop=True)


def model_roi_scores(best: pd.DataFrame, metric: str, column: str = "train_score"):
    """Per model x ROI: the best layer's score averaged over subjects."""
    rows = best[best["metric"] == metric]
    return rows.groupby(["model", "roi", "roi_group"], as_index=False)[column].mean()


def model_group_scores(best: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per model x ROI group: the mean over the group's ROIs of the model's ROI score."""
    per_roi = model_roi_scores(best, metric)
    return per_roi.groupby(["model", "roi_group"], as_index=False)["train_score"].mean()


# --- hierarchy (Figure 1B) ----------------------------------------------------------------


def hierarchy(best: pd.DataFrame, roi_names: list[str]) -> pd.DataFrame:
    """Relative depth of the best layer per model x ROI (mean over subjects), and its mean per
    architecture class and over all models, trained and random models apart. ``roi_order`` is
    the ROI's rank by the mean depth of all trained models (of all models if none is trained),
    the x axis of Figure 1B."""
    per_model = best.groupby(
        ["model", "architecture", "trained", "roi", "roi_group", "metric"], as_index=False
    )["layer_depth"].mean().rename(columns={"layer_depth": "depth"})
    per_model["level"] = "model"
    per_model["n_models"] = 1
    per_model["depth_sd"] = np.nan
    summaries = []
    for level, keys in (("architecture", ["architecture"]), ("all", [])):
        summary = per_model.groupby([*keys, "trained", "roi", "roi_group", "metric"],
                                    as_index=False)["depth"].agg(["mean", "std", "count"])
        summary = summary.rename(columns={"mean": "depth", "std": "depth_sd",
                                          "count": "n_models"})
        summary["level"] = level
        summary["model"] = None
        if not keys:
            summary["architecture"] = "all"
        summaries.append(summary)
    table = pd.concat([per_model, *summaries], ignore_index=True)
    table["roi_order"] = 0
    for metric, rows in table[table["level"] == "all"].groupby("metric"):
        reference = rows[rows["trained"]] if rows["trained"].any() else rows
        depth = reference.groupby("roi")["depth"].mean()
        configured = {roi: index for index, roi in enumerate(roi_names)}
        ordered = sorted(depth.index, key=lambda roi: (depth[roi], configured.get(roi, 0)))
        rank = {roi: position for position, roi in enumerate(ordered)}
        chosen = table["metric"] == metric
        table.loc[chosen, "roi_order"] = table.loc[chosen, "roi"].map(rank).fillna(-1)
    table["roi_order"] = table["roi_order"].astype(int)
    table["trained"] = table["trained"].astype(bool)
    return table[HIERARCHY_COLUMNS].sort_values(
        ["metric", "level", "architecture", "model", "roi_order"], na_position="first",
        kind="stable").reset_index(drop=True)


# --- contrasts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Contrast:
    """Models compared on one descriptor: ``select`` picks the population, ``group_of`` names
    each model's group, ``order`` fixes the groups (others are ignored)."""

    name: str
    population: str
    select: object
    group_of: object
    order: tuple


def contrast_specs() -> list[Contrast]:
    def imagenet_classifiers(m):
        return (m["task"] == "classification") & (m["input_diet"] == "imagenet")

    specs = [
        Contrast("architecture", pop,
                 lambda m, t=trained: imagenet_classifiers(m) & (m["trained"] == t),
                 lambda m: m["architecture"], ARCHITECTURES)
        for pop, trained in (("trained", True), ("random", False))
    ]
    specs.append(Contrast(
        "taskonomy_category", "trained",
        lambda m: (m["input_diet"] == "taskonomy") & m["trained"].astype(bool),
        lambda m: m["task_category"], TASKONOMY_CATEGORIES))

    def supervision(m):
        return np.where(m["task_category"] == "self-supervised", "self-supervised",
                        np.where(imagenet_classifiers(m), "category-supervised", ""))

    specs.append(Contrast(
        "supervision_resnet50", "trained",
        lambda m: (m["arch"] == "resnet50") & m["trained"].astype(bool),
        supervision, ("self-supervised", "category-supervised")))
    specs.append(Contrast(
        "input_diet", "trained", lambda m: m["trained"].astype(bool),
        lambda m: m["input_diet"], ("imagenet", "taskonomy")))
    return specs


def twin_pairs(models: pd.DataFrame) -> list[tuple[str, str]]:
    """(trained, random) twins: a random model and the trained model of the same source and
    arch, preferring the one named like it without ``_random``; one twin per random model."""
    pairs = []
    trained = models[models["trained"].astype(bool)]
    for _, random in models[~models["trained"].astype(bool)].iterrows():
        same = trained[(trained["source"] == random["source"])
                       & (trained["arch"] == random["arch"])]
        by_name = same[same["model"] == random["model"].removesuffix("_random")]
        if len(by_name) == 1:
            pairs.append((by_name["model"].iloc[0], random["model"]))
        elif len(same) == 1:
            pairs.append((same["model"].iloc[0], random["model"]))
        elif len(same) > 1:
            log.info("random model %s: %d trained models share its source and arch, none "
                     "named %s; left out of the training contrast", random["model"], len(same),
                     random["model"].removesuffix("_random"))
    return pairs


def _row(**values) -> dict:
    return {column: values.get(column) for column in CONTRAST_COLUMNS}


def _group_comparison(spec, roi_group, metric, groups, seed, n_boot) -> list[dict]:
    """Kruskal-Wallis over the groups, then Mann-Whitney U for each pair (Holm within)."""
    names = list(groups)
    samples = [groups[name] for name in names]
    n = sum(sample.size for sample in samples)
    key = f"{spec.name}/{spec.population}/{roi_group}/{metric}"
    omnibus = stats.kruskal_wallis(samples)
    low, high = stats.bootstrap_groups_ci(stats.epsilon_squared_batch, samples,
                                          stats.rng_for(seed, key), n_boot)
    common = dict(contrast=spec.name, population=spec.population, roi_group=roi_group,
                  metric=metric)
    description = ", ".join(f"{name}:{groups[name].size}" for name in names)
    rows = [_row(**common, test="kruskal-wallis", groups=description, n=n,
                 statistic_name="H", statistic=omnibus.statistic, df=omnibus.df,
                 p_value=omnibus.p_value, effect_name="epsilon_squared_ordinal",
                 effect=stats.epsilon_squared_ordinal(omnibus.statistic, n),
                 ci_low=low, ci_high=high)]
    pair_rows = []
    for a, b in combinations(names, 2):
        result = stats.mann_whitney(groups[a], groups[b])
        n_a, n_b = groups[a].size, groups[b].size
        low, high = stats.bootstrap_groups_ci(
            stats.rank_biserial_batch, [groups[a], groups[b]],
            stats.rng_for(seed, f"{key}/{a}/{b}"), n_boot)
        pair_rows.append(_row(
            **common, test="mann-whitney", group_a=a, group_b=b, groups=f"{a}:{n_a}, {b}:{n_b}",
            n=n_a + n_b, statistic_name="U", statistic=result.statistic, df=np.nan,
            p_value=result.p_value, effect_name="rank_biserial",
            effect=stats.rank_biserial(result.statistic, n_a, n_b), ci_low=low, ci_high=high,
            mean_difference=float(groups[a].mean() - groups[b].mean())))
    for row, adjusted in zip(pair_rows, stats.holm([row["p_value"] for row in pair_rows])):
        row["p_holm"] = adjusted
    return rows + pair_rows


def _training_rows(pairs, values, roi_group, metric, seed, n_boot) -> list[dict]:
    matched = [(t, r) for t, r in pairs if t in values.index and r in values.index]
    if not matched:
        return []
    differences = np.array([values[t] - values[r] for t, r in matched])
    result = stats.wilcoxon_signed_rank(differences)
    key = f"training/{roi_group}/{metric}"
    low, high = stats.bootstrap_groups_ci(stats.paired_rank_biserial_batch, [differences],
                                          stats.rng_for(seed, key), n_boot)
    return [_row(contrast="training", population="twins", roi_group=roi_group, metric=metric,
                 test="wilcoxon-signed-rank", group_a="trained", group_b="random",
                 groups=f"pairs:{len(matched)}", n=len(matched), statistic_name="W+",
                 statistic=result.statistic, df=np.nan, p_value=result.p_value,
                 effect_name="rank_biserial_paired",
                 effect=stats.paired_rank_biserial(differences), ci_low=low, ci_high=high,
                 mean_difference=float(differences.mean()))]


def contrasts(best: pd.DataFrame, models: pd.DataFrame, seed: int,
              n_boot: int = stats.N_BOOTSTRAP) -> tuple[pd.DataFrame, list[str]]:
    """The paper's contrasts (architecture, Taskonomy task category, self-supervised vs
    category-supervised ResNet-50, input diet, trained vs random twins), for each ROI group and
    for cRSA and veRSA. Returns the table and, for each contrast left out, why.

    Holm's correction runs over a contrast's omnibus tests (ROI groups x metrics) and, for the
    post-hoc pairs, over the pairs of one omnibus test."""
    models = models[models["model"].isin(best["model"].unique())].reset_index(drop=True)
    rows, skipped = [], []
    group_scores = {metric: model_group_scores(best, metric) for metric in CONTRAST_METRICS}
    for spec in contrast_specs():
        chosen = models[spec.select(models).to_numpy(dtype=bool)].copy()
        chosen["group"] = np.asarray(spec.group_of(chosen)) if len(chosen) else []
        chosen = chosen[chosen["group"].isin(spec.order)]
        spec_rows = []
        for roi_group in ROI_GROUPS:
            for metric in CONTRAST_METRICS:
                table = group_scores[metric]
                values = table[table["roi_group"] == roi_group].set_index("model")["train_score"]
                groups = {
                    name: values.reindex(chosen.loc[chosen["group"] == name, "model"])
                    .dropna().to_numpy()
                    for name in spec.order
                }
                groups = {name: sample for name, sample in groups.items() if sample.size}
                if len(groups) < 2:
                    skipped.append(
                        f"{spec.name} ({spec.population}) in {roi_group}, {metric}: "
                        f"{len(groups)} of the groups {', '.join(spec.order)} have models "
                        f"with scores ({', '.join(groups) or 'none'}); at least two needed")
                    continue
                spec_rows += _group_comparison(spec, roi_group, metric, groups, seed, n_boot)
        omnibus = [row for row in spec_rows if row["test"] == "kruskal-wallis"]
        for row, adjusted in zip(omnibus, stats.holm([row["p_value"] for row in omnibus])):
            row["p_holm"] = adjusted
        rows += spec_rows

    pairs = twin_pairs(models)
    training = []
    for roi_group in ROI_GROUPS:
        for metric in CONTRAST_METRICS:
            table = group_scores[metric]
            values = table[table["roi_group"] == roi_group].set_index("model")["train_score"]
            new = _training_rows(pairs, values, roi_group, metric, seed, n_boot)
            if not new:
                skipped.append(f"training in {roi_group}, {metric}: no trained/random twins "
                               "with scores")
            training += new
    for row, adjusted in zip(training, stats.holm([row["p_value"] for row in training])):
        row["p_holm"] = adjusted
    rows += training
    for reason in skipped:
        log.info("no contrast row: %s", reason)
    table = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    for column in ("n", "df", "statistic", "p_value", "p_holm", "effect", "ci_low", "ci_high",
                   "mean_difference"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table["n"] = table["n"].astype(int)
    return table, skipped


# --- gains of reweighting -----------------------------------------------------------------


def gains(best: pd.DataFrame, seed: int, n_boot: int = stats.N_BOOTSTRAP) -> pd.DataFrame:
    """veRSA - cRSA of each model's best layers, per model x ROI (mean over subjects, CI over
    subjects), and its mean per ROI, per ROI group and over all model x ROI cells (CI over the
    cells), trained and random models apart."""
    rows = best[best["metric"].isin(["crsa", "versa"])]
    wide = rows.pivot_table(index=["model", "trained", "subject", "roi", "roi_group"],
                            columns="metric", values="train_score").reset_index()
    if not {"crsa", "versa"} <= set(wide.columns):
        return pd.DataFrame(columns=GAIN_COLUMNS)
    wide["gain"] = wide["versa"] - wide["crsa"]
    out = []
    for (model, trained, roi, group), cell in wide.groupby(
            ["model", "trained", "roi", "roi_group"], sort=True):
        low, high = stats.bootstrap_mean_ci(cell["gain"], stats.rng_for(seed, f"{model}/{roi}"),
                                            n_boot)
        out.append(dict(level="model_roi", population=population(trained), model=model, roi=roi,
                        roi_group=group, crsa=cell["crsa"].mean(), versa=cell["versa"].mean(),
                        gain=cell["gain"].mean(), ci_low=low, ci_high=high, n=len(cell)))
    per_cell = pd.DataFrame(out)
    for level, keys in (("roi", ["roi", "roi_group"]), ("roi_group", ["roi_group"]),
                        ("all", [])):
        for key_values, cells in per_cell.groupby(["population", *keys], sort=True):
            key_values = dict(zip(["population", *keys], key_values))
            name = "/".join(map(str, key_values.values()))
            low, high = stats.bootstrap_mean_ci(cells["gain"], stats.rng_for(seed, name), n_boot)
            out.append(dict(level=level, model=None, crsa=cells["crsa"].mean(),
                            versa=cells["versa"].mean(), gain=cells["gain"].mean(), ci_low=low,
                            ci_high=high, n=len(cells), **key_values))
    table = pd.DataFrame(out, columns=GAIN_COLUMNS)
    table["n"] = table["n"].astype(int)
    return table


# --- generalization -----------------------------------------------------------------------


def generalization(best: pd.DataFrame, seed: int,
                   n_boot: int = stats.N_BOOTSTRAP) -> pd.DataFrame:
    """Train (LOO) against test score of each best layer, per model x subject x ROI x metric,
    and the mean drop (train - test) per metric with a bootstrap CI over those rows, per ROI
    and over all, trained and random models apart."""
    rows = best.dropna(subset=["test_score"]).copy()
    rows["drop"] = rows["train_score"] - rows["test_score"]
    rows["population"] = rows["trained"].map(population)
    detail = rows.assign(level="model_subject_roi", ci_low=np.nan, ci_high=np.nan, n=1)
    out = [detail]
    for level, keys in (("roi", ["roi"]), ("all", [])):
        summary = []
        for key_values, cells in rows.groupby(["population", "metric", *keys], sort=True):
            key_values = dict(zip(["population", "metric", *keys], key_values))
            name = "generalization/" + "/".join(map(str, key_values.values()))
            low, high = stats.bootstrap_mean_ci(cells["drop"], stats.rng_for(seed, name), n_boot)
            summary.append(dict(level=level, train_score=cells["train_score"].mean(),
                                test_score=cells["test_score"].mean(),
                                drop=cells["drop"].mean(), ci_low=low, ci_high=high,
                                n=len(cells), **key_values))
        out.append(pd.DataFrame(summary))
    table = pd.concat(out, ignore_index=True).reindex(columns=GENERALIZATION_COLUMNS)
    table["n"] = table["n"].fillna(0).astype(int)
    return table


# --- report pages -------------------------------------------------------------------------

REPORT_VIEWS = {
    # the rows each report page shows: summaries, not the per-model detail
    "contrasts": lambda table: table,
    "gains": lambda table: table[table["level"] != "model_roi"],
    "generalization": lambda table: table[table["level"] != "model_subject_roi"],
    "hierarchy": lambda table: table[table["level"] != "model"],
}


def report_table_html(name: str, table: pd.DataFrame, path) -> None:
    """One findings table as a small standalone HTML page, written via a temporary name."""
    view = REPORT_VIEWS[name](table)
    body = view.to_html(index=False, float_format=lambda value: f"{value:.4g}", na_rep="",
                        border=0, classes="findings")
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{name}</title><style>"
        "table.findings{border-collapse:collapse;font:12px sans-serif}"
        "table.findings td,table.findings th{padding:2px 6px;border-bottom:1px solid #ddd}"
        "</style></head><body>"
        f"<p>results/tables/{name}.parquet: {len(view)} of {len(table)} rows</p>"
        f"{body}</body></html>"
    )
    with replaced_when_done(path) as partial:
        partial.write_text(page)
