"""Figures from the score and findings tables (the paper's Figures 1B-5), saved atomically."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from nsdbench.atomic import replaced_when_done  # noqa: E402

# SVG text stays text (searchable, editable, smaller files) instead of glyph outlines.
plt.rcParams["svg.fonttype"] = "none"

ARCHITECTURE_COLORS = {"convolutional": "#1f77b4", "transformer": "#d62728",
                       "mlp-mixer": "#2ca02c", "all": "#444444"}
TASK_COLORS = {"2d": "#8c564b", "3d": "#9467bd", "geometric": "#17becf", "semantic": "#ff7f0e",
               "random": "#7f7f7f"}
CEILING_COLORS = {"intersubject_crsa": "#7f7f7f", "subject_to_subject": "#ff7f0e",
                  "others_to_subject": "#1f77b4"}
GROUP_TITLES = {"early": "early visual ROIs", "category-selective": "category-selective ROIs"}
METRIC_TITLES = {"crsa": "cRSA", "versa": "veRSA", "voxel_r": "voxel r"}


def save_figure(figure, out_paths) -> None:
    """Write the figure to each path (PNG, SVG, ...) under a temporary name, then rename: a
    killed job leaves no finished-looking figure."""
    for path in out_paths:
        with replaced_when_done(path) as partial:
            figure.savefig(partial, dpi=120)
    plt.close(figure)


def _jitter(count: int, width: float = 0.25, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-width, width, count)


def _model_marker(axis, x, y, trained: bool, color, label=None):
    if trained:
        axis.scatter(x, y, s=42, marker="o", color=color, edgecolor="black", linewidth=0.4,
                     zorder=3, label=label)
    else:
        axis.scatter(x, y, s=22, marker="D", facecolor="none", edgecolor=color, linewidth=1.0,
                     zorder=3, label=label)


# --- the first figure: best score per model and ROI ---------------------------------------


def best_scores(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per model x ROI: the best layer's score (layer chosen per subject by its train score),
    averaged over subjects."""
    train = scores[(scores["metric"] == metric) & (scores["split"] == "train")]
    train = train.dropna(subset=["score"])  # layers with NaN scores (constant features)
    best = train.loc[train.groupby(["model", "subject", "roi"])["score"].idxmax()]
    return best.groupby(["model", "roi"], sort=False)["score"].mean().unstack("roi")


def plot_best_scores(scores: pd.DataFrame, out_paths, roi_order, metric: str = "versa") -> None:
    """Grouped bars: best-layer score per model, one group per ROI (ordered as configured)."""
    table = best_scores(scores, metric)
    table = table[[roi for roi in roi_order if roi in table.columns]]
    figure, axis = plt.subplots(figsize=(1.2 + 1.1 * len(table.columns), 4.2))
    width = 0.8 / max(len(table.index), 1)
    for offset, (model, row) in enumerate(table.iterrows()):
        positions = [index + offset * width - 0.4 + width / 2 for index in range(len(row))]
        axis.bar(positions, row.values, width=width, label=model)
    axis.set_xticks(range(len(table.columns)), table.columns)
    axis.set_ylabel(f"best-layer {metric} (mean over subjects)")
    axis.set_xlabel("ROI")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.legend(fontsize=8, frameon=False, ncols=2)
    axis.set_title(f"Best {metric} per model and ROI")
    figure.tight_layout()
    save_figure(figure, out_paths)


# --- Figure 1B: hierarchy -----------------------------------------------------------------


def plot_hierarchy(hierarchy: pd.DataFrame, out_paths, metric: str = "versa",
                   planted: dict[str, float] | None = None) -> None:
    """ROIs on x, ordered by the mean relative depth of their best layer (trained models);
    one panel for all models and one per architecture class. Each point is a model's best
    layer averaged over subjects (trained: circles, random: hollow diamonds); lines are the
    class means. ``planted``: ROI -> depth of a known ground truth (the demo), drawn as x."""
    rows = hierarchy[hierarchy["metric"] == metric]
    order = (rows.drop_duplicates("roi").sort_values("roi_order")["roi"].tolist())
    position = {roi: index for index, roi in enumerate(order)}
    classes = [name for name in ARCHITECTURE_COLORS if name != "all"
               and (rows["architecture"] == name).any()]
    panels = ["all", *classes]
    figure, axes = plt.subplots(1, len(panels), figsize=(0.5 + 3.2 * len(panels), 3.8),
                                sharey=True, squeeze=False)
    for axis, panel in zip(axes[0], panels):
        color = ARCHITECTURE_COLORS[panel]
        models = rows[rows["level"] == "model"]
        if panel != "all":
            models = models[models["architecture"] == panel]
        for index, (_, points) in enumerate(models.groupby("model", sort=True)):
            points = points.sort_values("roi_order")
            x = points["roi"].map(position) + _jitter(len(points), 0.12, seed=index)
            _model_marker(axis, x, points["depth"], bool(points["trained"].iloc[0]),
                          ARCHITECTURE_COLORS.get(points["architecture"].iloc[0], color))
        means = rows[(rows["level"] == "all") if panel == "all"
                     else ((rows["level"] == "architecture") & (rows["architecture"] == panel))]
        for trained, style in ((True, "-"), (False, ":")):
            line = means[means["trained"] == trained].sort_values("roi_order")
            if len(line):
                axis.plot(line["roi"].map(position), line["depth"], style, color=color,
                          linewidth=1.6, label=f"mean, {'trained' if trained else 'random'}")
        if planted:
            known = [roi for roi in order if roi in planted]
            axis.scatter([position[roi] for roi in known], [planted[roi] for roi in known],
                         marker="x", s=50, color="black", zorder=4, label="planted depth")
        axis.set_xticks(range(len(order)), order, rotation=45, ha="right")
        axis.set_title("all models" if panel == "all" else panel)
        axis.set_ylim(0, 1.05)
        axis.grid(axis="y", linewidth=0.3)
    axes[0][0].set_ylabel(f"relative depth of best layer ({metric})")
    handles, labels = _marker_legend(axes[0][0])
    figure.legend(handles, labels, loc="lower center", ncols=len(handles), fontsize=8,
                  frameon=False)
    figure.suptitle("ROIs ordered by the mean depth of their best layer", fontsize=11)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(figure, out_paths)


def _marker_legend(axis):
    """The axis' own legend entries plus the two marker kinds (trained, random)."""
    handles, labels = axis.get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="o", linestyle="", color="gray"),
                plt.Line2D([], [], marker="D", linestyle="", markerfacecolor="none",
                           color="gray")]
    return handles, [*labels, "trained model", "random model"]



# --- Figures 2 and 3: contrasts with reference bands --------------------------------------


def intersubject_bands(ceilings: pd.DataFrame, groups: dict[str, str]) -> pd.DataFrame:
    """Per ROI group: the intersubject cRSA reference (mean over subjects and ROIs) with the
    mean of its bootstrap 95% limits."""
    rows = ceilings[ceilings["ceiling"] == "intersubject_crsa"].copy()
    rows["roi_group"] = rows["roi"].map(groups)
    return rows.groupby("roi_group")[["score", "ci_low", "ci_high"]].mean()


def _strip_panels(values: pd.DataFrame, group_column: str, order, colors, bands, title,
                  out_paths, empty_message: str | None = None) -> None:
    """2 x 2 panels (ROI group x metric): one point per model at its group on x."""
    figure, axes = plt.subplots(2, 2, figsize=(3.0 + 1.8 * max(len(order), 3), 6.6),
                                sharey="row", squeeze=False)
    for row, roi_group in enumerate(GROUP_TITLES):
        for column, metric in enumerate(("crsa", "versa")):
            axis = axes[row][column]
            if roi_group in bands.index:
                band = bands.loc[roi_group]
                axis.axhspan(band["ci_low"], band["ci_high"], color="0.8", zorder=0,
                             label="intersubject cRSA (95% CI)")
                axis.axhline(band["score"], color="0.5", linewidth=0.8, zorder=0)
            cell = values[(values["roi_group"] == roi_group) & (values["metric"] == metric)]
            for index, name in enumerate(order):
                points = cell[cell[group_column] == name]
                x = index + _jitter(len(points), 0.18, seed=index)
                for (_, point), xi in zip(points.iterrows(), x):
                    _model_marker(axis, xi, point["score"], bool(point["trained"]),
                                  colors.get(name, "black"))
            axis.set_xticks(range(len(order)), order, rotation=30, ha="right")
            axis.set_xlim(-0.6, len(order) - 0.4)
            axis.set_title(f"{GROUP_TITLES[roi_group]}, {METRIC_TITLES[metric]}", fontsize=9)
            axis.axhline(0, color="black", linewidth=0.5)
            if column == 0:
                axis.set_ylabel("best-layer score (r)")
            if empty_message:
                axis.text(0.5, 0.5, empty_message, transform=axis.transAxes, ha="center",
                          va="center", fontsize=10, color="#b00000",
                          bbox=dict(facecolor="white", edgecolor="#b00000"))
    handles, labels = _marker_legend(axes[0][0])
    figure.legend(handles, labels, loc="lower center", ncols=len(handles), fontsize=8,
                  frameon=False)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    save_figure(figure, out_paths)


def model_points(best: pd.DataFrame) -> pd.DataFrame:
    """Per model x ROI group x metric: the mean over ROIs and subjects of the best layer's
    train score, with the model's descriptors."""
    descriptors = ["model", "architecture", "task", "task_category", "input_diet", "trained"]
    per_roi = best.groupby([*descriptors, "roi", "roi_group", "metric"],
                           as_index=False)["train_score"].mean()
    points = per_roi.groupby([*descriptors, "roi_group", "metric"],
                             as_index=False)["train_score"].mean()
    return points.rename(columns={"train_score": "score"})


def plot_architectures(best: pd.DataFrame, ceilings: pd.DataFrame, groups: dict[str, str],
                       out_paths) -> None:
    """Figure 2: ImageNet classifiers by architecture class."""
    points = model_points(best)
    points = points[(points["task"] == "classification") & (points["input_diet"] == "imagenet")]
    order = [name for name in ARCHITECTURE_COLORS if name != "all"]
    _strip_panels(points, "architecture", order, ARCHITECTURE_COLORS,
                  intersubject_bands(ceilings, groups),
                  "Architecture: each point is a model's best layer", out_paths)


def plot_taskonomy(best: pd.DataFrame, ceilings: pd.DataFrame, groups: dict[str, str],
                   out_paths) -> None:
    """Figure 3: Taskonomy encoders by task category, with the random encoder apart; a
    labelled empty panel when the run has no Taskonomy models."""
    points = model_points(best)
    points = points[points["input_diet"] == "taskonomy"].copy()
    points["category"] = np.where(points["trained"], points["task_category"], "random")
    order = ["2d", "3d", "geometric", "semantic", "random"]
    message = None if len(points) else "no Taskonomy models in this run"
    _strip_panels(points, "category", order, TASK_COLORS, intersubject_bands(ceilings, groups),
                  "Taskonomy tasks by category", out_paths, empty_message=message)


# --- Figure 4: generalization -------------------------------------------------------------


def plot_generalization(generalization: pd.DataFrame, roi_order, out_paths,
                        metric: str = "versa") -> None:
    """Per subject (panels) and ROI (x): each model's best layer scored by LOO on the train
    images (red) and on the subject's held-out test images (blue), joined by a line."""
    rows = generalization[(generalization["level"] == "model_subject_roi")
                          & (generalization["metric"] == metric)]
    subjects = sorted(rows["subject"].dropna().unique())
    rois = [roi for roi in roi_order if roi in set(rows["roi"])]
    figure, axes = plt.subplots(1, max(len(subjects), 1), figsize=(0.8 + 0.9 * len(rois) *
                                max(len(subjects), 1), 3.8), sharey=True, squeeze=False)
    for axis, subject in zip(axes[0], subjects):
        cell = rows[rows["subject"] == subject]
        for index, roi in enumerate(rois):
            points = cell[cell["roi"] == roi]
            for _, point in points.iterrows():
                axis.plot([index - 0.15, index + 0.15],
                          [point["train_score"], point["test_score"]], color="0.7",
                          linewidth=0.6, zorder=1)
            axis.scatter(np.full(len(points), index - 0.15), points["train_score"], s=16,
                         color="#d62728", zorder=2, label="train (LOO)" if index == 0 else None)
            axis.scatter(np.full(len(points), index + 0.15), points["test_score"], s=16,
                         color="#1f77b4", zorder=2, label="test (held out)" if index == 0
                         else None)
        axis.set_xticks(range(len(rois)), rois, rotation=45, ha="right")
        axis.set_title(f"subject {subject}")
        axis.axhline(0, color="black", linewidth=0.5)
    if not subjects:
        axes[0][0].text(0.5, 0.5, "no test scores in this run", ha="center", va="center",
                        transform=axes[0][0].transAxes)
    axes[0][0].set_ylabel(f"{METRIC_TITLES.get(metric, metric)} of the best layer")
    axes[0][0].legend(fontsize=7, frameon=False)
    figure.suptitle("Generalization: train (LOO) vs held-out test images", fontsize=11)
    figure.tight_layout()
    save_figure(figure, out_paths)


# --- Figure 5: reference ceilings ---------------------------------------------------------


def plot_ceilings(best: pd.DataFrame, ceilings: pd.DataFrame, roi_order, out_paths) -> None:
    """Per subject (panels) and ROI (x): the 95% CI band of each reference ceiling (RDM
    metrics: intersubject cRSA, subject-to-subject and others-to-subject veRSA) and every
    model's best-layer veRSA (black points)."""
    references = ceilings[ceilings["metric"].isin(["crsa", "versa"])]
    models = best[best["metric"] == "versa"]
    subjects = sorted(set(references["subject"]) | set(models["subject"]))
    rois = [roi for roi in roi_order if roi in set(references["roi"]) | set(models["roi"])]
    figure, axes = plt.subplots(1, max(len(subjects), 1), figsize=(0.8 + 0.9 * len(rois) *
                                max(len(subjects), 1), 3.9), sharey=True, squeeze=False)
    kinds = [kind for kind in CEILING_COLORS if kind in set(references["ceiling"])]
    width = 0.8 / max(len(kinds), 1)
    for axis, subject in zip(axes[0], subjects):
        for index, roi in enumerate(rois):
            for offset, kind in enumerate(kinds):
                band = references[(references["subject"] == subject)
                                  & (references["roi"] == roi) & (references["ceiling"] == kind)]
                if band.empty:
                    continue
                band = band.iloc[0]
                left = index - 0.4 + offset * width
                axis.fill_between([left, left + width], band["ci_low"], band["ci_high"],
                                  color=CEILING_COLORS[kind], alpha=0.45, linewidth=0,
                                  label=f"{kind} ({band['metric']})" if index == 0 else None)
            scores = models[(models["subject"] == subject) & (models["roi"] == roi)]
            axis.scatter(index + _jitter(len(scores), 0.2, seed=index), scores["train_score"],
                         s=12, color="black", zorder=3,
                         label="model veRSA (best layer)" if index == 0 else None)
        axis.set_xticks(range(len(rois)), rois, rotation=45, ha="right")
        axis.set_title(f"subject {subject}")
    axes[0][0].set_ylabel("r")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncols=max(len(handles), 1), fontsize=8,
                  frameon=False)
    figure.suptitle("Human reference points (95% CI bands) against model scores", fontsize=11)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    save_figure(figure, out_paths)
