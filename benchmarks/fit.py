"""Core-seconds and peak memory of one layer's fit job, against sklearn, and the cost model's
calibration.

Three measurements, on synthetic data shaped like the paper's survey (n images, 4 subjects x
40,000 voxels in 16 ROIs, one layer of k features):

1. Our engine, the fit job's own code path: ``nsdbench.fit.score_layer`` on all subjects x ROIs
   at once (streaming reduce -> DualRidge LOO -> voxel r, predicted ROI RDMs, cRSA, veRSA).
2. sklearn ``RidgeCV(alphas=[alpha], gcv_mode='eigen', store_cv_results=True)`` run per
   subject, with a scorer so that ``cv_results_`` holds the LOO predictions, then the same
   scoring. Ratio of the two, and our fraction of the FLOP lower bound of compute-notes.md.
3. Peak RSS of the fit step (a subprocess, ``RUSAGE_CHILDREN``) on a float16 Zarr layer of
   ``--rss-features`` features (default 3,000,000) written like extraction writes it.

Core-seconds are process CPU time across all threads (``time.process_time``); wall time is
printed beside them. Machines are shared and noisy: nothing here is asserted, the ratios and
constants are what matter. ``--calibration-out`` writes the fitted cost-model constants (read
by ``nsdbench.cost`` as its defaults).

    python benchmarks/fit.py [--n 1000] [--k 5960] [--subjects 4] [--voxels 40000]
        [--rois 16] [--rss-features 3000000] [--calibration-out benchmarks/fit_calibration.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nsdbench.cost import (
    DEFAULT_CALIBRATION_PATH,
    ROOFLINE_FLOPS,
    fixed_matrix_bytes,
    flop_lower_bound,
)
from nsdbench.fit import (
    BrainTargets,
    CentredTargets,
    LazyRdms,
    reduce_for_ridge,
    score_layer,
)
from nsdbench.reduce import DEFAULT_READ_BLOCK, reduce_layer
from nsdbench.ridge import DualRidge
from nsdbench.rsa import compare_rdms, pearson_columns, rdm

REPO = Path(__file__).resolve().parents[1]


def timed(function):
    """(core-seconds, wall seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def median_timed(function, repeats: int):
    runs = [timed(function) for _ in range(repeats)]
    cpu = float(np.median([run[0] for run in runs]))
    wall = float(np.median([run[1] for run in runs]))
    return cpu, wall, runs[-1][2]


def max_rss_bytes(who=resource.RUSAGE_SELF) -> int:
    # Linux reports kilobytes.
    return resource.getrusage(who).ru_maxrss * 1024


def high_water_bytes() -> int:
    """This process's peak RSS (VmHWM): unlike ru_maxrss, exec resets it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return max_rss_bytes()


def synthetic_features(rng, n: int, k: int) -> np.ndarray:
    """Power-law spectrum so the penalty sits inside it, as for real layers (compute-notes.md)."""
    features = rng.standard_normal((n, k), dtype=np.float32)
    features *= (np.arange(1, k + 1, dtype=np.float32) ** -0.5) * 60
    return features


def synthetic_targets(rng, features, subjects: int, voxels: int, rois: int) -> BrainTargets:
    """Low-rank signal plus noise; each subject's voxels split into ``rois`` ROIs.

    Built in place (no concatenation copy) so the child's peak RSS is the fit's, not ours."""
    n = features.shape[0]
    responses = np.empty((n, subjects * voxels), dtype=np.float32)
    columns, rdms = {}, {}
    edges = np.linspace(0, voxels, rois + 1).astype(int)
    for subject in range(subjects):
        block = responses[:, subject * voxels:(subject + 1) * voxels]
        for start in range(0, voxels, 8192):
            stop = min(start + 8192, voxels)
            weights = rng.standard_normal((50, stop - start), dtype=np.float32)
            block[:, start:stop] = features[:, :50] @ weights
            block[:, start:stop] += rng.standard_normal((n, stop - start), dtype=np.float32) * 30
        for roi in range(rois):
            key = (f"{subject + 1:02d}", f"roi{roi:02d}")
            columns[key] = slice(subject * voxels + edges[roi], subject * voxels + edges[roi + 1])
            rdms[key] = rdm(responses[:, columns[key]])
    return BrainTargets(responses, columns, rdms, np.arange(n))


def engine(features, targets, alpha, srp_dim):
    return score_layer(features, targets, alphas=[alpha], srp_dim=srp_dim, seed=0,
                       model="bench", layer="layer")


def sklearn_baseline(features, targets, alpha, subjects):
    """One sklearn RidgeCV per subject (LOO predictions stored), then the same scores."""
    from sklearn.linear_model import RidgeCV

    ridge_s = 0.0
    scores = []
    crsa_rdm = rdm(features)  # classical RSA needs the layer's RDM once
    for subject in range(subjects):
        keys = [key for key in targets.columns if key[0] == f"{subject + 1:02d}"]
        first, last = targets.columns[keys[0]].start, targets.columns[keys[-1]].stop
        y = targets.responses[:, first:last]
        start = time.process_time()
        model = RidgeCV(alphas=[alpha], gcv_mode="eigen", store_cv_results=True,
                        scoring="explained_variance").fit(features, y)
        # (n * v, alphas) or (n, v, alphas) depending on the sklearn version.
        predictions = np.asarray(model.cv_results_)[..., 0].reshape(y.shape)
        ridge_s += time.process_time() - start
        voxel_r = pearson_columns(predictions, y)
        for key in keys:
            part = slice(targets.columns[key].start - first, targets.columns[key].stop - first)
            brain = targets.rdms[key]
            scores.append((compare_rdms(crsa_rdm, brain),
                           compare_rdms(rdm(predictions[:, part]), brain),
                           float(np.nanmean(voxel_r[part]))))
        del model, predictions
    return ridge_s, scores


def measure_gram_rate(n: int, width: int = 4 * DEFAULT_READ_BLOCK) -> float:
    """Seconds per flop of the streaming float32 Gram (reduce_layer without SRP)."""
    x = np.random.default_rng(1).random((n, width), dtype=np.float32)
    cpu, _, _ = median_timed(lambda: reduce_layer(x, n_components=None), 3)
    return cpu / (n * n * width)


def sgemm_rate() -> float:
    """Measured float32 GEMM flop/s of this process's BLAS (all its threads, per core-second)."""
    a = np.random.default_rng(2).random((2000, 2000), dtype=np.float32)
    cpu, _, _ = median_timed(lambda: a @ a, 3)
    return 2 * 2000**3 / cpu


# ---------------------------------------------------------------------------------------------
# Peak RSS of the fit step on a wide float16 layer (run in a child process)

def make_store(directory: Path, n: int, d: int, chunk_rows: int) -> Path:
    """A float16 (n x d) layer written as extraction writes it (create_layer_store)."""
    from nsdbench.features import COLUMN_BLOCK, create_layer_store, layer_store_path

    path = layer_store_path(directory, "wide")
    if path.exists():
        import zarr

        array = zarr.open_array(path, mode="r")
        if array.shape == (n, d) and str(array.dtype) == "float16":
            return path
        shutil.rmtree(path)
    array = create_layer_store(directory, "wide", n_images=n, width=d, chunk_rows=chunk_rows,
                               dtype="float16")
    rng = np.random.default_rng(3)
    # ReLU-like activations; one random block, shifted per column block (values don't matter
    # for time or memory, only that they are finite and not constant).
    base = np.maximum(rng.standard_normal((n, COLUMN_BLOCK), dtype=np.float32), 0)
    base = base.astype(np.float16)
    for index, start in enumerate(range(0, d, COLUMN_BLOCK)):
        stop = min(start + COLUMN_BLOCK, d)
        array[:, start:stop] = np.roll(base, index, axis=0)[:, :stop - start]
    return path


def rss_child(args) -> None:
    """The fit step alone on the wide store: prints one JSON line."""
    import zarr

    startup_s = time.process_time()
    base_rss = high_water_bytes()
    rng = np.random.default_rng(0)
    features = zarr.open_array(args.rss_child, mode="r")
    small = synthetic_features(rng, args.n, 64)
    # As the fit job: responses centred in place, once for all its layers.
    targets = CentredTargets(synthetic_targets(rng, small, args.subjects, args.voxels, args.rois),
                             in_place=True)
    del small
    before_fit_rss = high_water_bytes()
    fit_cpu, fit_wall, _ = timed(lambda: engine(features, targets, args.alpha, args.k))
    print(json.dumps({
        "startup_s": startup_s, "base_rss": base_rss, "before_fit_rss": before_fit_rss,
        "peak_rss": high_water_bytes(), "fit_cpu": fit_cpu, "fit_wall": fit_wall,
    }))


def run_rss_child(args, store: Path) -> dict:
    command = [sys.executable, __file__, "--rss-child", str(store)] + [
        f"--{name}={getattr(args, name)}" for name in ("n", "k", "subjects", "voxels", "rois",
                                                       "alpha", "threads")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"fit child failed:\n{result.stderr[-3000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["children_maxrss"] = max_rss_bytes(resource.RUSAGE_CHILDREN)
    return measured


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images")
    parser.add_argument("--k", type=int, default=5960,
                        help="layer width of the engine/sklearn comparison, and srp_dim")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--voxels", type=int, default=40000, help="voxels per subject")
    parser.add_argument("--rois", type=int, default=16, help="ROIs per subject")
    parser.add_argument("--alpha", type=float, default=1e5)
    parser.add_argument("--repeats", type=int, default=3, help="engine runs (median)")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--rss-features", type=int, default=3_000_000,
                        help="width of the float16 Zarr layer for the peak-RSS run (0: skip)")
    parser.add_argument("--store-dir", type=Path, default=None,
                        help="where to write (or reuse) the wide store; default a temporary "
                             "directory, deleted afterwards")
    parser.add_argument("--chunk-rows", type=int, default=32, help="extraction batch size")
    parser.add_argument("--calibration-out", type=Path, default=None,
                        help=f"write the fitted constants here (e.g. {DEFAULT_CALIBRATION_PATH})")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads (the fit rule runs with 1; core-seconds are CPU time "
                             "across threads either way)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        if args.rss_child:
            rss_child(args)
        else:
            run(args)


def subset_targets(targets: BrainTargets, per_set: int) -> BrainTargets:
    """The same subjects x ROIs with only their first ``per_set`` voxels (separates the
    per-ROI cost from the per-voxel cost)."""
    pieces = [targets.responses[:, columns][:, :per_set] for columns in targets.columns.values()]
    columns = {key: slice(i * per_set, (i + 1) * per_set) for i, key in enumerate(targets.columns)}
    return BrainTargets(np.ascontiguousarray(np.concatenate(pieces, axis=1)), columns,
                        targets.rdms, targets.nsd_ids)


def peak_rss_run(args, n: int, k: int) -> dict | None:
    """Write (or reuse) the wide store and measure the fit step on it in a child process.

    Runs before this process allocates anything large: a forked child's ru_maxrss starts at
    its parent's RSS (the child reports its own VmHWM too, which exec resets)."""
    if not args.rss_features:
        return None
    directory = args.store_dir or Path(tempfile.mkdtemp(prefix="nsdbench-fit-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        _, write_wall, store = timed(
            lambda: make_store(directory, n, args.rss_features, args.chunk_rows))
        print(f"wide store: {n} x {args.rss_features} float16 "
              f"({n * args.rss_features * 2 / 1e9:.1f} GB) ready in {write_wall:.0f} s")
        return run_rss_child(args, store)
    finally:
        if args.store_dir is None:
            shutil.rmtree(directory, ignore_errors=True)


def component_times(features, targets, alpha, k, repeats):
    """Core-seconds of the Gram-free pieces: eigh (+ operator) and the LOO fit."""
    _, gram, _ = reduce_for_ridge(features, srp_dim=k, seed=0, model="b", layer="l")
    eigh_cpu, _, ridge = median_timed(lambda: DualRidge(gram), repeats)
    loo_cpu, _, _ = median_timed(lambda: ridge.loo_fit(targets.responses, [alpha]), repeats)
    return eigh_cpu, loo_cpu


def few_voxels_time(features, targets, alpha, k, repeats):
    """Engine core-seconds with every ROI kept but 16 voxels each, and that voxel count."""
    small = CentredTargets(subset_targets(targets, 16))
    cpu, _, _ = median_timed(lambda: engine(features, small, alpha, k), repeats)
    return cpu, small.responses.shape[1]


def run(args):
    n, k = args.n, args.k
    total_voxels = args.subjects * args.voxels
    n_sets = args.subjects * args.rois
    print(f"n={n} k={k} subjects={args.subjects} voxels/subject={args.voxels} rois={args.rois} "
          f"(V={total_voxels}) alpha={args.alpha:g}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}, "
          f"cores={os.cpu_count()}, BLAS threads={args.threads}")
    child = peak_rss_run(args, n, k)

    rng = np.random.default_rng(0)
    features = synthetic_features(rng, n, k)
    targets = synthetic_targets(rng, features, args.subjects, args.voxels, args.rois)

    # Once per fit job, shared by its layers: brain RDMs and the responses centred.
    lazy = BrainTargets(targets.responses, targets.columns,
                        LazyRdms(targets.responses, targets.columns), targets.nsd_ids)
    prepare_cpu, _, centred = timed(lambda: CentredTargets(lazy))
    # Calibration pieces.
    sgemm = sgemm_rate()
    gram_s_per_flop = measure_gram_rate(n)
    eigh_cpu, loo_cpu = component_times(features, targets, args.alpha, k, args.repeats)
    small_cpu, small_voxels = few_voxels_time(features, targets, args.alpha, k, args.repeats)

    ours_cpu, ours_wall, table = median_timed(
        lambda: engine(features, centred, args.alpha, k), args.repeats)
    bound_flops = flop_lower_bound(n, k, total_voxels)
    bound_s = bound_flops / ROOFLINE_FLOPS
    print(f"BLAS SGEMM here: {sgemm / 1e9:.0f} GFLOP/s per core-second; streaming Gram "
          f"{1 / gram_s_per_flop / 1e9:.0f} GFLOP/s; roofline used {ROOFLINE_FLOPS / 1e9:.0f}")
    print(f"engine (score_layer, all subjects x ROIs): {ours_cpu:8.2f} core-s/layer "
          f"({ours_wall:.2f} s wall, median of {args.repeats}); of which eigh {eigh_cpu:.2f}, "
          f"LOO fit {loo_cpu:.2f}; same {n_sets} ROIs with {small_voxels} voxels: "
          f"{small_cpu:.2f}")
    print(f"  once per fit job (brain RDMs, responses centred): {prepare_cpu:.2f} core-s")
    versa = table.loc[table.metric == "versa", "score"].mean()
    print(f"  mean versa {versa:.3f}, mean voxel r "
          f"{table.loc[table.metric == 'voxel_r', 'score'].mean():.3f}")
    print(f"FLOP lower bound: {bound_flops:.3g} flop = {bound_s:.2f} core-s at "
          f"{ROOFLINE_FLOPS / 1e9:.0f} GFLOP/s -> {bound_s / ours_cpu:.0%} of bound "
          f"(vs this BLAS's SGEMM: {bound_flops / sgemm / ours_cpu:.0%})")

    if not args.skip_sklearn:
        base_cpu, base_wall, (ridge_cpu, _) = timed(
            lambda: sklearn_baseline(features, targets, args.alpha, args.subjects))
        print(f"sklearn RidgeCV eigen per subject + same scoring: {base_cpu:8.2f} core-s/layer "
              f"({base_wall:.2f} s wall); RidgeCV alone {ridge_cpu:.2f} core-s")
        print(f"speed-up over sklearn: {base_cpu / ours_cpu:6.1f}x "
              f"(ridge alone vs our whole layer: {ridge_cpu / ours_cpu:.1f}x)")

    n2 = float(n) ** 2
    per_voxel = max(ours_cpu - small_cpu, 0.0) / (n2 * (total_voxels - small_voxels))
    fixed = gram_s_per_flop * n2 * k + eigh_cpu
    per_set = max(small_cpu - fixed - per_voxel * n2 * small_voxels, 0.0) / (n2 * n_sets)
    calibration = {
        "gram_s_per_flop": gram_s_per_flop,
        "eigh_s_per_n3": eigh_cpu / n**3,
        "voxel_s_per_n2v": per_voxel,
        "set_s_per_n2": per_set,
        "prepare_s_per_n2v": prepare_cpu / (n2 * total_voxels),
    }
    if child:
        d = args.rss_features
        block_bytes = n * DEFAULT_READ_BLOCK * 2
        peak = child["peak_rss"]
        limit = 2e9 + block_bytes
        print(f"fit step at d={d}, V={total_voxels}: peak RSS {peak / 1e9:.2f} GB "
              f"(limit 2 GB + block {block_bytes / 1e6:.0f} MB = {limit / 1e9:.2f} GB: "
              f"{'OK' if peak < limit else 'OVER'}); after imports {child['base_rss'] / 1e9:.2f}"
              f" GB, with responses {child['before_fit_rss'] / 1e9:.2f} GB; "
              f"RUSAGE_CHILDREN {child['children_maxrss'] / 1e9:.2f} GB")
        print(f"  whole layer {child['fit_cpu']:.1f} core-s ({child['fit_wall']:.1f} s wall)")
        # Reading + float16 cast + SRP, per byte of stored features: what the Gram pass, the
        # SRP features' Gram (float32 since issue 5's speed-ups), eigh, ROIs and voxels do not
        # explain.
        explained = (gram_s_per_flop * n2 * (d + k) + eigh_cpu + per_set * n2 * n_sets
                     + per_voxel * n2 * total_voxels)
        calibration["stream_s_per_byte"] = max(child["fit_cpu"] - explained, 0.0) / (n * d * 2)
        calibration["startup_s"] = child["startup_s"]
        calibration["base_bytes"] = child["base_rss"]
        fixed_bytes = fixed_matrix_bytes(n, k, DEFAULT_READ_BLOCK)
        calibration["response_copies"] = max(peak - child["base_rss"] - fixed_bytes, 0) / (
            4 * n * total_voxels)
    calibration["measured"] = {
        "n": n, "k": k, "voxels": total_voxels, "sets": n_sets,
        "rss_features": args.rss_features, "engine_core_s": ours_cpu, "sgemm_flops": sgemm,
        "threads": args.threads, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "date": time.strftime("%Y-%m-%d"),
    }
    print("calibration:", json.dumps(calibration, indent=1))
    if args.calibration_out:
        args.calibration_out.write_text(json.dumps(calibration, indent=1) + "\n")
        print(f"wrote {args.calibration_out}")


if __name__ == "__main__":
    main()
