"""Fit and score a block of layers of one model against all subjects x ROIs."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from nsdbench.brain import read_stimuli_store
from nsdbench.features import open_layer
from nsdbench.fit import BrainTargets, CentredTargets, score_layer
from nsdbench.joblog import setup_job_logging
from nsdbench.reduce import srp_dimension
from nsdbench.tables import score_rows, write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
entry, ridge = params.model, params.ridge
inventory = pd.read_parquet(snakemake.input.inventory).set_index("layer", drop=False)
train_ids = read_stimuli_store(snakemake.input.stimuli).nsd_ids
# Centred once for all the job's layers, in place: no second copy of the responses.
targets = CentredTargets(BrainTargets.load(snakemake.input.brain, train_ids), in_place=True)
srp_dim = srp_dimension(ridge, len(train_ids))
tables = []
# BLAS uses the job's cores only, so parallel jobs do not oversubscribe the machine.
with threadpool_limits(limits=snakemake.threads):
    for layer in params.layers:
        scores = score_layer(
            open_layer(snakemake.input.features, layer), targets, alphas=ridge["alphas"],
            srp_dim=srp_dim, seed=params.seed, model=entry["name"], layer=layer,
        )
        tables.append(score_rows(scores, entry, inventory.loc[layer]))
        versa = scores.loc[scores["metric"] == "versa", "score"]
        log.info("%s %s: mean versa %.3f", entry["name"], layer, np.nanmean(versa))
write_table(pd.concat(tables, ignore_index=True), snakemake.output[0], snakemake.config)
