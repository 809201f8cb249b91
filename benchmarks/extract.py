"""Extraction overhead: capturing every layer of a ResNet-50 (random init) and storing it, against
a plain forward pass over the same images, on CPU.

Both run in this process on the same images; the printed ratios are what matters (the machines
are shared and noisy, so no absolute number is asserted anywhere; the best of the repeats is
reported for each path, which is the least disturbed by other load; CPU time, over all threads,
is printed too, as it suffers less from that load). Besides the full path
(``extract_features``: fx capture, float16 cast and overflow check, Zarr writes) it times the
steps cumulatively, so the ratios show where extra time goes.

    python benchmarks/extract.py [--images 32] [--batch 16] [--threads 2] [--repeats 2]
"""

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nsdbench.extract import STORE_DTYPES, HostBuffers, extract_features, stored_values
from nsdbench.layers import LayerReader, layer_inventory
from nsdbench.models import build_model

RESNET50 = {"name": "resnet50_random", "source": "torchvision", "arch": "resnet50",
            "trained": False}


def natural_images(n: int, size: int) -> np.ndarray:
    """n random (size x size) crops of skimage's colour photographs (offline, no download)."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(0)
    crops = []
    for index in range(n):
        photo = photos[index % len(photos)]
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(photo[top:top + size, left:left + size])
    return np.stack(crops)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread, kernel time included
    return usage.ru_utime + usage.ru_stime


def seconds(function) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def batches(images, batch_size):
    return [images[start:start + batch_size] for start in range(0, len(images), batch_size)]


def plain_forward(model, images, batch_size):
    with torch.no_grad():
        for batch in batches(images, batch_size):
            model.module(model.preprocess(batch))


def capture_only(model, reader, images, batch_size):
    for batch in batches(images, batch_size):
        reader(model.preprocess(batch))


def capture_and_cast(model, reader, images, batch_size, layers, dtype):
    buffers = HostBuffers(STORE_DTYPES[dtype])
    for index, batch in enumerate(batches(images, batch_size)):
        outputs = reader(model.preprocess(batch))
        for layer in layers:
            output = outputs.pop(layer)
            stored_values(output, len(batch), dtype, model.name, layer,
                          out=buffers.get(layer, index % 2, output))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--scratch", default=None, help="where the stores go (default: a tmp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model({**RESNET50, "image_size": args.size})
    images = natural_images(args.images, args.size + args.size // 7)  # resize + centre crop
    inventory = layer_inventory(model, images[:2])
    layers, method = list(inventory["layer"]), inventory["method"].iloc[0]
    reader = LayerReader(model, method, layers)
    plain_forward(model, images[:2], 2)  # warm-up: one-off kernel set-up and tracing
    capture_only(model, reader, images[:2], 2)
    scratch = Path(tempfile.mkdtemp(dir=args.scratch))

    def full_extraction():
        extract_features(model, images, method, layers, scratch / "group-0",
                         batch_size=args.batch, dtype=args.dtype, progress=False)

    paths = {
        "plain forward": lambda: plain_forward(model, images, args.batch),
        "+ fx capture": lambda: capture_only(model, reader, images, args.batch),
        f"+ {args.dtype} cast": lambda: capture_and_cast(model, reader, images, args.batch,
                                                          layers, args.dtype),
        "+ zarr writes (extract_features)": full_extraction,
    }
    best = {name: (float("inf"), float("inf")) for name in paths}
    try:
        # Interleaved, so that load from elsewhere hits every path alike.
        for _ in range(args.repeats):
            for name, path in paths.items():
                wall, cpu = seconds(path)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
                shutil.rmtree(scratch / "group-0", ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    n_values = int(inventory["n_features"].sum())
    print(f"{RESNET50['arch']} random init, {args.images} images at {args.size} px, batch "
          f"{args.batch}, {args.threads} threads, best of {args.repeats}; {len(layers)} {method} "
          f"layers, {n_values / 1e6:.1f} M values per image "
          f"({n_values * args.images * np.dtype(args.dtype).itemsize / 1e9:.2f} GB stored)")
    base_wall, base_cpu = best["plain forward"]
    print(f"{'':34s} {'wall':>9s} {'ms/image':>9s} {'ratio':>6s} {'CPU':>9s} {'ratio':>6s}")
    for name, (wall, cpu) in best.items():
        print(f"{name:34s} {wall:7.2f} s {wall / args.images * 1e3:9.0f} {wall / base_wall:5.2f}x"
              f" {cpu:7.2f} s {cpu / base_cpu:5.2f}x")
    wall, cpu = best["+ zarr writes (extract_features)"]
    print(f"extraction overhead: {wall / base_wall:.2f}x a plain forward pass "
          f"({cpu / base_cpu:.2f}x in CPU time)")


if __name__ == "__main__":
    main()
