"""Generalization of one model: its best layers by train score (extracted by
extract_best_layers), fitted on all train images, scored on each subject's test images."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from nsdbench.brain import read_stimuli_store
from nsdbench.features import open_layer
from nsdbench.generalize import HeldOut, best_layer_names, best_layers, generalization_scores
from nsdbench.joblog import UserError, setup_job_logging
from nsdbench.reduce import srp_dimension
from nsdbench.tables import SCORE_COLUMNS, gather_scores, score_rows, write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
entry, ridge = params.model, params.ridge
inventory = pd.read_parquet(snakemake.input.inventory).set_index("layer", drop=False)
best = best_layers(gather_scores(snakemake.input.scores))
layers = best_layer_names(best, inventory)
if not layers:
    log.warning("model %s: no layer has a finite train score; no test scores", entry["name"])
    write_table(pd.DataFrame(columns=SCORE_COLUMNS), snakemake.output[0], snakemake.config)
    raise SystemExit(0)

train_ids = read_stimuli_store(snakemake.input.stimuli).nsd_ids
held_out = HeldOut.load(snakemake.input.brain, train_ids)
# The feature rows follow the test stimuli's order (extract_best_layers): it must be the
# brain stores' own.
for (subject, ids), path in zip(held_out.test_nsd_ids.items(), snakemake.input.test_stimuli):
    if not np.array_equal(ids, read_stimuli_store(path).nsd_ids):
        raise UserError(f"subject {subject}: test stimuli and brain store list different images")
log.info("model %s: %d best layers, %d train images", entry["name"], len(layers),
         held_out.n_train)

srp_dim = srp_dimension(ridge, held_out.n_train)
tables = []
# BLAS uses the job's cores only (one, as the fit rule: reproducible float32 sums).
with threadpool_limits(limits=snakemake.threads):
    for layer in layers:
        scores = generalization_scores(
            open_layer(snakemake.input.features, layer), held_out, alphas=ridge["alphas"],
            srp_dim=srp_dim, seed=params.seed, model=entry["name"], layer=layer,
        )
        # Keep each subject x ROI x metric only for the layer its train score chose.
        chosen = best[best["layer"] == layer][["subject", "roi", "metric"]]
        scores = scores.merge(chosen, on=["subject", "roi", "metric"])
        tables.append(score_rows(scores, entry, inventory.loc[layer]))
write_table(pd.concat(tables, ignore_index=True), snakemake.output[0], snakemake.config)
