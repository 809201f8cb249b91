"""Extract one model's best layers (by train score) for the train images and every subject's
test images together: the features that the generalize job fits and scores."""

from pathlib import Path

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd
import torch

from nsdbench.brain import read_stimuli_store
from nsdbench.extract import StackedImages, extract_features
from nsdbench.generalize import best_layer_names, best_layers
from nsdbench.joblog import setup_job_logging
from nsdbench.models import build_model
from nsdbench.tables import gather_scores

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
entry = params.model
inventory = pd.read_parquet(snakemake.input.inventory)
layers = best_layer_names(best_layers(gather_scores(snakemake.input.scores)), inventory)
output = Path(snakemake.output[0])
if not layers:
    # generalize finds no best layer either and writes an empty table.
    log.warning("model %s: no layer has a finite train score; nothing to extract", entry["name"])
    output.mkdir(parents=True)
    raise SystemExit(0)

train = read_stimuli_store(snakemake.input.stimuli)
tests = [read_stimuli_store(path) for path in snakemake.input.test_stimuli]
# Rows: the train images, then each subject's test images (nsdbench.generalize.HeldOut).
images = StackedImages([train.images, *(stimuli.images for stimuli in tests)])
log.info("model %s: %d best layers, %d train + %d test images", entry["name"], len(layers),
         len(train.nsd_ids), images.shape[0] - len(train.nsd_ids))
extract_features(build_model(entry), images, inventory["method"].iloc[0], layers, output,
                 batch_size=params.batch_size, device=params.device, dtype=params.dtype)
