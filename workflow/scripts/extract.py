"""Extract one group of layers of one model for the train images."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd
import torch

from nsdbench.brain import read_stimuli_store
from nsdbench.extract import extract_features
from nsdbench.joblog import setup_job_logging
from nsdbench.models import build_model

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
entry = params.model
inventory = pd.read_parquet(snakemake.input.inventory)
model = build_model(entry)
stimuli = read_stimuli_store(snakemake.input.stimuli)
layers = list(snakemake.params.layers)
method = inventory["method"].iloc[0]
log.info("model %s: extracting %d layers (%s) for %d images as %s", entry["name"], len(layers),
         method, len(stimuli.nsd_ids), params.dtype)
# A killed job leaves <output>.partial behind (not a declared output, so Snakemake keeps it);
# the rerun continues from its last finished batch.
report = extract_features(
    model, stimuli.images, method, layers, snakemake.output[0],
    batch_size=params.batch_size, dtype=params.dtype, device=params.device,
)
log.info("model %s: computed %d batches from image %d (final batch size %d)", entry["name"],
         report.batches_computed, report.first_image, report.batch_size)
