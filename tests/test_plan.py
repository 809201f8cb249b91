"""Extraction groups bound the feature bytes; fit blocks never span two groups."""

import pandas as pd
import pytest

from nsdbench.plan import assign_jobs


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
