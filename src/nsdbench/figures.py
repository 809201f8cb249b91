"""Figures from the score tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


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
    for path in map(Path, out_paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        figure.savefig(partial, dpi=120)
        partial.replace(path)  # atomic: a killed job leaves no finished-looking figure
    plt.close(figure)
