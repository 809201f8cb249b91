"""The fit cost model: scaling, table sums, extrapolation and the CLI (no timing)."""

import json

import numpy as np
import pandas as pd
import pytest

from nsdbench import cost
from nsdbench.cost import Calibration, cost_table, extrapolate, job_cost, layer_core_seconds

CALIBRATION = Calibration(
    gram_s_per_flop=1e-11, stream_s_per_byte=1e-9, eigh_s_per_n3=2e-10, voxel_s_per_n2v=5e-11,
    set_s_per_n2=1e-8, startup_s=2.0, base_bytes=3e8, response_copies=3.0,
)


def inventory(model, widths):
    return pd.DataFrame({"model": model, "layer": [f"l{i}" for i in range(len(widths))],
                         "n_features": widths})


def test_layer_cost_is_linear_in_features_and_voxels():
    c = CALIBRATION
    base = layer_core_seconds(1000, 1e5, 0, srp_dim=None, calibration=c, sets=0)
    wider = layer_core_seconds(1000, 2e5, 0, srp_dim=None, calibration=c, sets=0)
    eigh = c.eigh_s_per_n3 * 1e9
    assert wider - eigh == pytest.approx(2 * (base - eigh))
    no_voxels = layer_core_seconds(1000, 1e5, 0, calibration=c)
    one = layer_core_seconds(1000, 1e5, 10_000, calibration=c)
    two = layer_core_seconds(1000, 1e5, 20_000, calibration=c)
    assert two - no_voxels == pytest.approx(2 * (one - no_voxels))
    # Projecting adds the projection's own Gram only for layers wider than srp_dim.
    assert layer_core_seconds(1000, 5000, 0, srp_dim=5960, calibration=c) == pytest.approx(
        layer_core_seconds(1000, 5000, 0, srp_dim=None, calibration=c))
    assert layer_core_seconds(1000, 1e6, 0, srp_dim=5960, calibration=c) > layer_core_seconds(
        1000, 1e6, 0, srp_dim=None, calibration=c)


def test_layer_cost_scales_with_images():
    c = Calibration(gram_s_per_flop=1e-11, stream_s_per_byte=0.0, eigh_s_per_n3=0.0,
                    voxel_s_per_n2v=5e-11, set_s_per_n2=0.0)
    # Gram and voxel terms are both n^2: doubling n quadruples them.
    assert layer_core_seconds(2000, 1e5, 1000, calibration=c) == pytest.approx(
        4 * layer_core_seconds(1000, 1e5, 1000, calibration=c))
    c = Calibration(gram_s_per_flop=0.0, stream_s_per_byte=0.0, eigh_s_per_n3=1e-10,
                    voxel_s_per_n2v=0.0, set_s_per_n2=0.0)
    assert layer_core_seconds(2000, 1e5, 1000, calibration=c) == pytest.approx(
        8 * layer_core_seconds(1000, 1e5, 1000, calibration=c))


def test_job_memory_grows_with_voxels_not_features():
    small = job_cost(1000, 1e4, 10_000, calibration=CALIBRATION)
    wide = job_cost(1000, 3e6, 10_000, calibration=CALIBRATION)
    more = job_cost(1000, 1e4, 20_000, calibration=CALIBRATION)
    assert wide["peak_bytes"] == small["peak_bytes"]
    assert more["peak_bytes"] - small["peak_bytes"] == pytest.approx(
        CALIBRATION.response_copies * 4 * 1000 * 10_000)
    assert wide["core_seconds"] > small["core_seconds"] > CALIBRATION.startup_s


def test_table_sums_models_and_counts_jobs():
    inventories = [inventory("a", [1000, 20_000, 300_000]), inventory("b", [50_000] * 5)]
    table = cost_table(inventories, 1000, 40_000, calibration=CALIBRATION, layers_per_job=2)
    models = table[table.model != "TOTAL"].set_index("model")
    total = table[table.model == "TOTAL"].iloc[0]
    assert list(models.fit_jobs) == [2, 3]
    assert total.layers == 8 and total.fit_jobs == 5
    assert total.core_hours == pytest.approx(models.core_hours.sum())
    expected_a = (layer_core_seconds(1000, np.array([1000, 20_000, 300_000]), 40_000,
                                     calibration=CALIBRATION).sum() + 2 * 2.0) / 3600
    assert models.loc["a", "core_hours"] == pytest.approx(expected_a)
    # A {model: inventory} mapping gives the same table.
    mapped = cost_table({"a": inventories[0].drop(columns="model"), "b": inventories[1]}, 1000,
                        40_000, calibration=CALIBRATION, layers_per_job=2)
    pd.testing.assert_frame_equal(mapped, table)


def test_extrapolation_uses_the_closest_sampled_family():
    entries = [
        {"name": "r50", "source": "tv", "arch": "resnet50", "architecture": "convolutional"},
        {"name": "r50_random", "source": "tv", "arch": "resnet50",
         "architecture": "convolutional"},
        {"name": "vgg", "source": "tv", "arch": "vgg16", "architecture": "convolutional"},
        {"name": "other", "source": "timm", "arch": "x", "architecture": "convolutional"},
        {"name": "vit", "source": "timm", "arch": "vit", "architecture": "transformer"},
    ]
    sampled = cost_table([inventory("r50", [1e5] * 4), inventory("vit", [1e4] * 2)], 1000,
                         1000, calibration=CALIBRATION)
    survey = extrapolate(entries, sampled).set_index("model")
    assert survey.loc["r50_random", "basis"] == "arch"
    assert survey.loc["vgg", "basis"] == "source"
    assert survey.loc["other", "basis"] == "family"
    assert survey.loc["r50_random", "core_hours"] == survey.loc["r50", "core_hours"]
    assert survey.loc["other", "layers"] == 4


def test_calibration_file_overrides_defaults(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"gram_s_per_flop": 3e-11, "measured": {"n": 1000}}))
    loaded = Calibration.load(path)
    assert loaded.gram_s_per_flop == 3e-11
    assert loaded.eigh_s_per_n3 == Calibration().eigh_s_per_n3
    assert Calibration.load(tmp_path / "missing.json") == Calibration()


def test_cli_prints_a_table(tmp_path, capsys):
    for model, widths in {"tiny": [100, 2000, 70_000], "small": [4096] * 3}.items():
        inventory(model, widths).to_parquet(tmp_path / f"{model}.parquet")
    cost.main(["--inventories", str(tmp_path / "*.parquet"), "--voxels", "5000",
               "--images", "500"])
    out = capsys.readouterr().out
    assert "core_hours" in out and "peak_gb" in out
    assert "tiny" in out and "small" in out and "TOTAL" in out


def test_cli_rejects_an_empty_glob(tmp_path):
    with pytest.raises(FileNotFoundError):
        cost.main(["--inventories", str(tmp_path / "*.parquet")])
