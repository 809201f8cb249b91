"""Does the benchmark recover the demo's planted truth?

Three checks on the ground-truth model's scores (train split, LOO veRSA):
- its best layer per ROI x subject lies within ``depth_tolerance`` of the planted layer's depth;
- its best-layer veRSA beats every other model's, on average over ROIs and per ROI x subject;
- across ROIs, planted depth and best-layer depth rank alike (Spearman).

Run ``python -m nsdbench.demo.recovery SCORES PLANTED_JSON`` to print them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr


def best_layers(scores: pd.DataFrame, metric: str = "versa") -> pd.DataFrame:
    """Per model x subject x ROI: the layer with the highest train score."""
    train = scores[(scores["metric"] == metric) & (scores["split"] == "train")].dropna(
        subset=["score"]
    )
    index = train.groupby(["model", "subject", "roi"])["score"].idxmax()
    return train.loc[index].reset_index(drop=True)


def planted_recovery(scores: pd.DataFrame, truth: dict, depth_tolerance: float = 0.05) -> dict:
    best = best_layers(scores)
    truth_model = truth["ground_truth"]
    planted = pd.DataFrame([
        {"roi": roi, "planted_depth": layer["layer_depth"]}
        for roi, layer in truth["rois"].items()
    ])
    ours = best[best["model"] == truth_model].merge(planted, on="roi")
    depth_error = (ours["layer_depth"] - ours["planted_depth"]).abs()

    wide = best.pivot_table(index=["subject", "roi"], columns="model", values="score")
    others = wide.drop(columns=truth_model)
    beats_per_pair = (wide[truth_model].to_numpy()[:, None] > others.to_numpy()).all(axis=1)
    mean_by_model = wide.mean()

    per_roi = ours.groupby("roi")[["layer_depth", "planted_depth"]].mean()
    rho = spearmanr(per_roi["planted_depth"], per_roi["layer_depth"]).statistic
    return {
        "pairs": int(len(ours)),
        "fraction_within_depth_tolerance": float((depth_error <= depth_tolerance).mean()),
        "median_depth_error": float(depth_error.median()),
        "truth_mean_versa": float(mean_by_model[truth_model]),
        "best_other_mean_versa": float(mean_by_model.drop(truth_model).max()),
        "beats_others_on_average": bool(
            mean_by_model[truth_model] > mean_by_model.drop(truth_model).max()
        ),
        "fraction_pairs_beating_all_others": float(beats_per_pair.mean()),
        "spearman_planted_vs_best_depth": float(rho),
    }


def main(argv: list[str]) -> None:
    scores = pd.read_parquet(argv[0])
    truth = json.loads(Path(argv[1]).read_text())
    for key, value in planted_recovery(scores, truth).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
