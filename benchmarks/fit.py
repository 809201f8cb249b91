"""Core-seconds of one layer's ridge + LOO for many voxels: our dual GCV vs sklearn RidgeCV.

Both run in this process on the same data; the printed ratio is what matters (the machines
are shared and noisy, so no absolute number is asserted anywhere).

    python benchmarks/fit.py [--n 1000] [--k 5960] [--voxels 10000]
"""

import argparse
import time

import numpy as np
from sklearn.linear_model import RidgeCV

from nsdbench.reduce import centred_gram_of
from nsdbench.ridge import DualRidge


def cpu_seconds(function):
    start = time.process_time()
    result = function()
    return time.process_time() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=5960)
    parser.add_argument("--voxels", type=int, default=10000)
    parser.add_argument("--alpha", type=float, default=1e5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # Power-law feature spectrum so the penalty sits inside it, as for real layers.
    features = (rng.standard_normal((args.n, args.k)) * np.arange(1, args.k + 1) ** -0.5 * 60)
    features = features.astype(np.float32)
    signal = features[:, :50] @ rng.standard_normal((50, args.voxels)).astype(np.float32)
    responses = signal + rng.standard_normal((args.n, args.voxels)).astype(np.float32)

    ours_s, fit = cpu_seconds(
        lambda: DualRidge(centred_gram_of(features)).loo_fit(responses, [args.alpha])
    )
    base_s, _ = cpu_seconds(
        lambda: RidgeCV(alphas=[args.alpha], gcv_mode="eigen").fit(features, responses)
    )
    print(f"n={args.n} k={args.k} voxels={args.voxels} alpha={args.alpha:g}")
    mean_r = np.nanmean(fit.voxel_r)
    print(f"dual GCV (ours):        {ours_s:8.2f} core-s  (mean LOO r {mean_r:.3f})")
    print(f"sklearn RidgeCV eigen:  {base_s:8.2f} core-s")
    print(f"speed-up over sklearn:  {base_s / ours_s:8.1f}x")


if __name__ == "__main__":
    main()
