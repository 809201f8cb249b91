"""Feature extraction: float16 stores, resume after a kill, fingerprints, overflow, OOM halving."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nsdbench import extract
from nsdbench.extract import (
    AdaptiveBatches,
    FeatureOverflowError,
    extract_features,
    partial_dir,
    read_progress,
)
from nsdbench.features import ChunkWriter, create_layer_store, open_layer
from nsdbench.layers import layer_inventory
from nsdbench.models import LoadedModel, build_model
from nsdbench.preprocess import Preprocessing
from nsdbench.reduce import reduce_layer

SRC = Path(__file__).resolve().parents[1] / "src"
ALEXNET = {
    "name": "alexnet_random", "source": "torchvision", "arch": "alexnet",
    "architecture": "convolutional", "task": "classification", "task_category": "semantic",
    "input_diet": "imagenet", "trained": False, "image_size": 64,
}
N_IMAGES, BATCH = 48, 8


def probe_images(n=N_IMAGES):
    return np.random.default_rng(0).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def alexnet():
    model = build_model(ALEXNET)
    inventory = layer_inventory(model, probe_images(2))
    return model, inventory["method"].iloc[0], list(inventory["layer"])


class Crash(Exception):
    pass


def crash_after(model, n_batches):
    """Make ``model`` raise on its (n_batches + 1)-th batch, as a job dying mid-way would.
    A forward pre-hook on its first leaf module (which the traced extractor calls too), so the
    model and the resume fingerprint are otherwise unchanged; remove the handle to undo it."""
    calls = []

    def hook(_module, _inputs):
        calls.append(1)
        if len(calls) > n_batches:
            raise Crash("simulated crash")

    first_leaf = next(m for m in model.module.modules() if not list(m.children()))
    return first_leaf.register_forward_pre_hook(hook)


def crashed_run(model, images, method, layers, out_dir, after_batches):
    """An extraction that dies after ``after_batches`` batches, leaving its partial store with
    those batches recorded as finished."""
    crash = crash_after(model, after_batches)
    try:
        with pytest.raises(Crash):
            extract_features(model, images, method, layers, out_dir, batch_size=BATCH,
                             progress=False)
    finally:
        crash.remove()
    assert read_progress(partial_dir(out_dir))["finished"] == after_batches * BATCH


def stored(out_dir, layers):
    return {layer: open_layer(out_dir, layer)[:] for layer in layers}


# The job run in a subprocess: same model, images and threads in every run, so stores from
# different runs can be compared bit for bit. A forward hook counts the batches computed and,
# with a delay, slows each batch so the test can kill the process mid-way.
RUNNER = textwrap.dedent("""
    import json, sys, time
    import numpy as np, torch
    from nsdbench.extract import extract_features
    from nsdbench.layers import layer_inventory
    from nsdbench.models import build_model

    out_dir, delay = sys.argv[1], float(sys.argv[2])
    torch.set_num_threads(1)
    model = build_model(json.loads(sys.argv[3]))
    images = np.random.default_rng(0).integers(0, 256, size=(48, 64, 64, 3), dtype=np.uint8)
    inventory = layer_inventory(model, images[:2])
    forward_calls = []

    def count(*_):
        forward_calls.append(1)
        time.sleep(delay)

    model.module.features[0].register_forward_hook(count)
    report = extract_features(model, images, inventory["method"].iloc[0],
                              list(inventory["layer"]), out_dir, batch_size=8, progress=False)
    print(json.dumps({"first_image": report.first_image, "batches": report.batches_computed,
                      "forward_calls": len(forward_calls), "layers": list(inventory["layer"])}))
""")


def start_runner(tmp_path, out_dir, delay):
    script = tmp_path / "run_extract.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(out_dir), str(delay), json.dumps(ALEXNET)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def finish_runner(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_sigkilled_job_resumes_from_last_finished_batch_and_matches_uninterrupted(tmp_path):
    reference = finish_runner(start_runner(tmp_path, tmp_path / "reference", 0.0))
    assert reference["first_image"] == 0 and reference["batches"] == N_IMAGES // BATCH

    out_dir = tmp_path / "group-0"
    killed = start_runner(tmp_path, out_dir, 0.5)
    deadline = time.monotonic() + 240
    while (read_progress(partial_dir(out_dir)) or {}).get("finished", 0) < 2 * BATCH:
        assert killed.poll() is None, killed.communicate()[1]
        assert time.monotonic() < deadline, "the killable run never finished two batches"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    finished = read_progress(partial_dir(out_dir))["finished"]
    assert 2 * BATCH <= finished < N_IMAGES and finished % BATCH == 0
    assert not out_dir.exists()  # nothing that looks finished

    resumed = finish_runner(start_runner(tmp_path, out_dir, 0.0))
    assert resumed["first_image"] == finished > 0
    assert resumed["batches"] == resumed["forward_calls"] == (N_IMAGES - finished) // BATCH
    assert not partial_dir(out_dir).exists()
    layers = reference["layers"]
    expected, actual = stored(tmp_path / "reference", layers), stored(out_dir, layers)
    for layer in layers:
        assert actual[layer].dtype == np.float16
        assert np.array_equal(actual[layer], expected[layer], equal_nan=False), layer
        assert np.isfinite(actual[layer]).all()  # every row written, none left as fill NaN


def test_float16_default_is_the_float32_extraction_rounded(alexnet, tmp_path):
    model, method, layers = alexnet
    images = probe_images(20)  # 20 = 2 whole batches + a partial one
    half = extract_features(model, images, method, layers, tmp_path / "half", batch_size=BATCH,
                            progress=False)
    full = extract_features(model, images, method, layers, tmp_path / "full", batch_size=BATCH,
                            dtype="float32", progress=False)
    assert half == full == extract.ExtractionReport(0, 20, 3, BATCH)
    rounded = 0
    for layer in layers:
        stored_half, stored_full = open_layer(tmp_path / "half", layer), open_layer(
            tmp_path / "full", layer)
        assert stored_half.dtype == np.float16 and stored_full.dtype == np.float32
        assert stored_half.chunks == (BATCH, min(stored_half.shape[1], 4 * 4096))
        values, reference = stored_half[:], stored_full[:]
        # Round-to-nearest of the very same float32 values, bit for bit...
        assert np.array_equal(values, torch.from_numpy(reference).half().numpy())
        # ...so within half a float16 ulp: relative 2**-11, absolute 2**-25 among subnormals.
        error = np.abs(values.astype(np.float32) - reference)
        assert np.all(error <= np.abs(reference) * 2.0**-11 + 2.0**-25)
        assert np.abs(reference).max() > 0  # a real signal, not all zeros
        rounded += np.count_nonzero(error)
    assert rounded > 0  # the float16 store really is coarser


def test_readers_compute_in_float32_whatever_the_store_holds(alexnet, tmp_path):
    model, method, layers = alexnet
    extract_features(model, probe_images(12), method, layers[:3], tmp_path / "half",
                     batch_size=BATCH, progress=False)
    store = open_layer(tmp_path / "half", layers[2])
    upcast = np.asarray(store[:], dtype=np.float32)
    from_store = reduce_layer(store, n_components=None, read_block=4096)
    from_float32 = reduce_layer(upcast, n_components=None, read_block=4096)
    assert from_store.centred_gram.dtype == np.float64
    np.testing.assert_array_equal(from_store.centred_gram, from_float32.centred_gram)
    np.testing.assert_array_equal(from_store.rdm, from_float32.rdm)


def test_exception_mid_run_keeps_partial_and_rerun_continues(alexnet, tmp_path):
    model, method, layers = alexnet
    images, out_dir = probe_images(), tmp_path / "group-0"
    crashed_run(model, images, method, layers, out_dir, after_batches=3)
    assert not out_dir.exists()
    torn = partial_dir(out_dir) / f"{layers[0]}.zarr" / "c" / "2" / "0.partial"
    torn.write_bytes(b"half a chunk")  # what a kill in the middle of a chunk write leaves
    report = extract_features(model, images, method, layers, out_dir, batch_size=BATCH,
                              progress=False)
    assert (report.first_image, report.batches_computed) == (3 * BATCH, 3)
    fresh = extract_features(model, images, method, layers, tmp_path / "fresh",
                             batch_size=BATCH, progress=False)
    assert (fresh.first_image, fresh.batches_computed) == (0, 6)
    for layer in layers:
        assert np.array_equal(open_layer(out_dir, layer)[:], open_layer(tmp_path / "fresh",
                                                                         layer)[:])
    assert read_progress(out_dir)["finished"] == N_IMAGES
    assert not [path for path in out_dir.rglob("*") if path.name.endswith(".partial")]


def changed_images(images):
    images = images.copy()
    images[0] = 255 - images[0]
    return images


@pytest.mark.parametrize("change", [
    {"batch_size": 4}, {"dtype": "float32"}, {"layers": 3}, {"images": changed_images},
])
def test_fingerprint_change_restarts_from_zero(alexnet, tmp_path, change):
    model, method, layers = alexnet
    images, out_dir = probe_images(), tmp_path / "group-0"
    crashed_run(model, images, method, layers, out_dir, after_batches=2)
    batch_size = change.get("batch_size", BATCH)
    dtype = change.get("dtype", "float16")
    layers = layers[:change.get("layers", len(layers))]
    images = change.get("images", lambda x: x)(images)
    report = extract_features(model, images, method, layers, out_dir, batch_size=batch_size,
                              dtype=dtype, progress=False)
    assert report.first_image == 0
    assert report.batches_computed == N_IMAGES // batch_size
    fresh_dir = tmp_path / "fresh"
    extract_features(model, images, method, layers, fresh_dir, batch_size=batch_size,
                     dtype=dtype, progress=False)
    assert sorted(path.name for path in out_dir.glob("*.zarr")) == sorted(
        f"{layer}.zarr" for layer in layers)
    for layer in layers:
        resumed, fresh = open_layer(out_dir, layer), open_layer(fresh_dir, layer)
        assert resumed.dtype == np.dtype(dtype) and resumed.chunks[0] == batch_size
        assert np.array_equal(resumed[:], fresh[:])


def constant_model(scale: float) -> LoadedModel:
    """A one-layer model whose output is ``scale`` x the sum of its (0..1) input pixels."""
    linear = torch.nn.Linear(3 * 8 * 8, 4)
    torch.nn.init.constant_(linear.weight, scale)
    torch.nn.init.zeros_(linear.bias)
    module = torch.nn.Sequential(torch.nn.Flatten(), linear).eval()
    preprocess = Preprocessing(size=8, resize=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return LoadedModel(name="huge", module=module, preprocess=preprocess, source="torchvision")


def test_float16_overflow_names_model_and_layer_and_the_fix(tmp_path):
    images = np.full((6, 8, 8, 3), 255, dtype=np.uint8)  # every output = 192 * 1000 > 65504
    model = constant_model(1000.0)
    with pytest.raises(FeatureOverflowError, match=(
        r"model 'huge': layer '1' has values beyond the float16 range \(\|value\| up to "
        r"1\.92e\+05.*extraction\.dtype: float32"
    )):
        extract_features(model, images, "fx", ["1"], tmp_path / "half", batch_size=4,
                         progress=False)
    assert not (tmp_path / "half").exists()
    extract_features(model, images, "fx", ["1"], tmp_path / "full", batch_size=4,
                     dtype="float32", progress=False)
    np.testing.assert_array_equal(open_layer(tmp_path / "full", "1")[:], 192_000.0)


def test_values_already_infinite_in_float32_are_stored_not_refused(tmp_path):
    # Not an overflow of the store: the fit sees the inf and scores the layer NaN, as before.
    images = np.full((4, 8, 8, 3), 255, dtype=np.uint8)
    extract_features(constant_model(1e38), images, "fx", ["1"], tmp_path / "out", batch_size=4,
                     progress=False)
    values = open_layer(tmp_path / "out", "1")[:]
    assert values.dtype == np.float16 and np.all(np.isposinf(values))


def test_unknown_dtype_is_refused(alexnet, tmp_path):
    model, method, layers = alexnet
    with pytest.raises(ValueError, match="unknown feature dtype 'bfloat16'"):
        extract_features(model, probe_images(2), method, layers, tmp_path / "out",
                         dtype="bfloat16", progress=False)


def out_of_memory_above(limit, calls):
    def compute(start, stop):
        calls.append((start, stop))
        if stop - start > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    return compute


def test_out_of_memory_halves_the_batch_and_keeps_it_halved():
    calls = []
    batches = AdaptiveBatches(8, adaptive=True)
    assert batches.run(out_of_memory_above(2, calls), 0, 8) == 4
    assert batches.size == 2
    assert calls == [(0, 8), (0, 4), (0, 2), (2, 4), (4, 6), (6, 8)]
    calls.clear()
    assert batches.run(out_of_memory_above(2, calls), 8, 13) == 3  # ends on a short batch
    assert calls == [(8, 10), (10, 12), (12, 13)]


def test_out_of_memory_is_raised_on_cpu_and_at_batch_size_one():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        AdaptiveBatches(8, adaptive=False).run(out_of_memory_above(2, []), 0, 8)
    calls = []
    with pytest.raises(torch.cuda.OutOfMemoryError):
        AdaptiveBatches(4, adaptive=True).run(out_of_memory_above(0, calls), 0, 4)
    assert calls == [(0, 4), (0, 2), (0, 1)]


@pytest.mark.parametrize("dtype", ["float16", "float32"])  # float16: through host buffers
def test_halved_batches_fill_the_configured_chunks(alexnet, tmp_path, monkeypatch, dtype):
    model, method, layers = alexnet
    images = probe_images(20)
    # CPU stands in for CUDA: batches over 3 images "run out of memory".
    monkeypatch.setattr(extract, "AdaptiveBatches",
                        lambda size, adaptive: AdaptiveBatches(size, adaptive=True))
    original = model.preprocess

    def preprocess(batch):
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(batch)

    model.preprocess = preprocess
    try:
        report = extract_features(model, images, method, layers, tmp_path / "small",
                                  batch_size=BATCH, dtype=dtype, progress=False)
    finally:
        model.preprocess = original
    # 8 -> 4 -> 2 images per batch: 4 + 4 + 2 batches over the chunks of 8, 8 and 4 images.
    assert report == extract.ExtractionReport(0, 20, 10, 2)
    extract_features(model, images, method, layers, tmp_path / "whole", batch_size=BATCH,
                     dtype=dtype, progress=False)
    tolerance = 1e-3 if dtype == "float16" else 1e-5
    for layer in layers:
        small, whole = open_layer(tmp_path / "small", layer), open_layer(tmp_path / "whole", layer)
        assert small.chunks == whole.chunks and small.chunks[0] == BATCH
        np.testing.assert_allclose(small[:].astype(np.float32), whole[:].astype(np.float32),
                                   rtol=tolerance, atol=tolerance)


def test_chunk_writer_writes_half_chunks_in_order(tmp_path):
    store = create_layer_store(tmp_path, "layer", n_images=8, width=20, chunk_rows=4,
                               dtype="float16", column_block=16)
    values = np.arange(8 * 20, dtype=np.float16).reshape(8, 20)
    writer = ChunkWriter()
    for start in range(0, 8, 2):  # halved batches: half a chunk at a time
        writer.write(store, start, values[start:start + 2])
    writer.close()
    np.testing.assert_array_equal(store[:], values)
