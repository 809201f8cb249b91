"""Generalization of one model: best layers by train score, fitted on train, scored on test."""

import shutil
from pathlib import Path

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import numpy as np
import pandas as pd
import torch

from nsdbench.brain import read_stimuli_store
from nsdbench.extract import StackedImages, extract_features
from nsdbench.features import open_layer
from nsdbench.generalize import HeldOut, best_layers, generalization_scores
from nsdbench.joblog import UserError, setup_job_logging
from nsdbench.models import build_model
from nsdbench.reduce import srp_dimension
from nsdbench.tables import SCORE_COLUMNS, gather_scores, score_rows, write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
params = snakemake.params
entry, ridge = params.model, params.ridge
inventory = pd.read_parquet(snakemake.input.inventory).set_index("layer", drop=False)
best = best_layers(gather_scores(snakemake.input.scores))
layers = [layer for layer in inventory["layer"] if layer in set(best["layer"])]
if not layers:
    log.warning("model %s: no layer has a finite train score; no test scores", entry["name"])
    write_table(pd.DataFrame(columns=SCORE_COLUMNS), snakemake.output[0], snakemake.config)
    raise SystemExit(0)

train = read_stimuli_store(snakemake.input.stimuli)
held_out = HeldOut.load(snakemake.input.brain, train.nsd_ids)
tests = [read_stimuli_store(path) for path in snakemake.input.test_stimuli]
for (subject, ids), stimuli in zip(held_out.test_nsd_ids.items(), tests):
    if not np.array_equal(ids, stimuli.nsd_ids):
        raise UserError(f"subject {subject}: test stimuli and brain store list different images")
images = StackedImages([train.images, *(stimuli.images for stimuli in tests)])
log.info("model %s: %d best layers, %d train + %d test images", entry["name"], len(layers),
         held_out.n_train, images.shape[0] - held_out.n_train)

srp_dim = srp_dimension(ridge, held_out.n_train)
scratch = Path(snakemake.output[0]).with_suffix(".features")
extract_features(build_model(entry), images, inventory["method"].iloc[0], layers, scratch,
                 batch_size=params.batch_size, device=params.device, dtype=params.dtype)
tables = []
for layer in layers:
    scores = generalization_scores(
        open_layer(scratch, layer), held_out, alphas=ridge["alphas"], srp_dim=srp_dim,
        seed=params.seed, model=entry["name"], layer=layer,
    )
    # Keep each subject x ROI x metric only for the layer its train score chose.
    chosen = best[best["layer"] == layer][["subject", "roi", "metric"]]
    scores = scores.merge(chosen, on=["subject", "roi", "metric"])
    tables.append(score_rows(scores, entry, inventory.loc[layer]))
shutil.rmtree(scratch)
write_table(pd.concat(tables, ignore_index=True), snakemake.output[0], snakemake.config)
