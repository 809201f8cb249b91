"""The fit cost model: scaling, table sums, extrapolation and the CLI (no timing)."""

import json

import numpy as np
import pandas as pd
import pytest

from nsdbench import cost
from nsdbench.cost import Calibration, cost_table, extrapolate, job_cost, layer_core_seconds

CALIBRATION = Calibration(
    gram_s_per_flop=1e-11, stream_s_per_byte=1e-9, eigh_s_per_n3=2e-10, voxel_s_per_n2v=5e-11,
    set_s_per_n2=1e-8, startup_s=2.0, prepare_s_per_n2v=1e-11, base_bytes=3e8,
    response_copies=3.0,
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
                                     calibration=CALIBRATION).sum()
                  + 2 * (2.0 + 1e-11 * 1000**2 * 40_000)) / 3600
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


# ----------------------------------------------------------- extraction, voxels, recalibration
def test_extraction_time_is_forward_plus_bytes_written():
    c = cost.ExtractionCalibration(forward_cpu_s_per_feature=1e-8, forward_gpu_s_per_feature=1e-10,
                                   cast_cpu_s_per_feature=5e-9, transfer_s_per_byte=1e-10,
                                   write_s_per_byte=2e-9, startup_s=30.0)
    gpu = cost.extraction_seconds(2e6, 3e7, 1000, gpu=True, calibration=c)
    assert gpu == pytest.approx(30 + 1000 * 3e7 * 1e-10 + 1000 * 2e6 * 2 * (1e-10 + 2e-9))
    cpu = cost.extraction_seconds(2e6, 3e7, 1000, gpu=False, threads=2, calibration=c)
    assert cpu == pytest.approx(30 + 1000 * (3e7 * 1e-8 + 2e6 * 5e-9) / 2 + 1000 * 2e6 * 2 * 2e-9)
    # float32 stores write twice the bytes
    wide = cost.extraction_seconds(2e6, 3e7, 1000, gpu=True, bytes_per_feature=4, calibration=c)
    assert wide - gpu == pytest.approx(1000 * 2e6 * 2 * (1e-10 + 2e-9))


def test_extraction_memory_is_the_groups_batch():
    c = cost.ExtractionCalibration(base_bytes=1e9)
    assert cost.extraction_peak_bytes(1e6, 5e5, 32, gpu=True, calibration=c) == pytest.approx(
        1e9 + 2 * 32 * 1e6 * 2)
    assert cost.extraction_peak_bytes(1e6, 5e5, 32, gpu=False, calibration=c) == pytest.approx(
        1e9 + 2 * 32 * 1e6 * 2 + 32 * (1e6 + 2 * 5e5) * 4)


def test_fit_memory_per_job_accepts_an_array_of_widths():
    widths = np.array([1000.0, 10_000.0, 3e6])
    peaks = cost.job_peak_bytes(1000, 5000, 5960, CALIBRATION, widest=widths)
    assert peaks.tolist() == [cost.job_peak_bytes(1000, 5000, 5960, CALIBRATION, widest=w)
                              for w in widths]
    # No wider than srp_dim: no projection; no wider than a read block: a narrower read.
    assert peaks[1] - peaks[0] == pytest.approx(1000 * 9000 * 10 + 3 * 1000 * 5960 * 4)
    assert peaks[2] == cost.job_peak_bytes(1000, 5000, 5960, CALIBRATION)


def test_scored_voxels_count_kept_voxels_of_scored_rois():
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"subject": rng.integers(1, 4, 2000),
                          "roi": rng.choice(["V1", "V2", "FFA", "tiny"], 2000,
                                            p=[0.4, 0.3, 0.295, 0.005]),
                          "kept": rng.random(2000) < 0.7})
    brute = 0
    for subject in range(1, 4):
        for roi in ("V1", "V2", "FFA", "tiny"):
            kept = int(((table.subject == subject) & (table.roi == roi) & table.kept).sum())
            brute += kept if kept >= 10 else 0
    assert cost.scored_voxels(table) == brute
    assert brute < table["kept"].sum()  # the tiny ROI is below 10 kept voxels


def test_fit_count_reproduces_the_papers_arithmetic():
    # The paper: fits = layers x voxels; 5.17e9 with 4 subjects x ~40.4k voxels over 16 ROIs
    # means ~32,000 layers (compute-notes.md).
    assert cost.paper_voxels(4, 16) == cost.PAPER_VOXELS == 161_560
    assert cost.paper_voxels(2, 6) == round(161_560 * 12 / 64)
    assert cost.fit_count(32_000, cost.PAPER_VOXELS) == pytest.approx(5.17e9, rel=2e-3)
    assert cost.fit_count(10, 100, penalties=7) == 7000


def test_benchmark_files_give_recalibration_factors(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    estimated = pd.DataFrame({"job": [f"m/block-{i}" for i in range(10)],
                              "wall_s": np.arange(1, 11) * 10.0,
                              "peak_bytes": np.full(10, 1e9)})
    for i in range(10):
        path = tmp_path / "fit" / "m" / f"block-{i}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        ratio = 2.0 if i < 9 else 5.0  # one slow outlier
        path.write_text(header + f"{ratio * (i + 1) * 10}\t0:00:10\t{1500.0}\t1\t1\t1\t0\t0\t50"
                                 "\t1\n")
    (tmp_path / "ceilings.tsv").write_text(header + "12.5\t0:00:12\t800\t1\t1\t1\t0\t0\t50\t1\n")
    measured = cost.read_benchmarks(tmp_path, "fit")
    assert sorted(measured["job"]) == sorted(estimated["job"])
    factors = cost.recalibration(measured, estimated, quantile=0.5)
    assert factors == {"jobs": 10, "time": pytest.approx(2.0), "mem": pytest.approx(1.5)}
    assert cost.recalibration(measured, estimated, quantile=1.0)["time"] == pytest.approx(5.0)
    ceilings = cost.read_benchmarks(tmp_path, "ceilings")
    assert ceilings["s"].tolist() == [12.5] and ceilings["max_rss"].tolist() == [800.0]
    assert cost.read_benchmarks(tmp_path, "extract").empty
    assert cost.recalibration(cost.read_benchmarks(tmp_path, "extract"), estimated) == {}
