"""The brains' own reference ceilings on the train images (intersubject cRSA and ridge)."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import read_stimuli_store
from nsdbench.ceilings import reference_ceilings
from nsdbench.fit import BrainTargets
from nsdbench.joblog import setup_job_logging
from nsdbench.reduce import srp_dimension
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
train_ids = read_stimuli_store(snakemake.input.stimuli).nsd_ids
targets = BrainTargets.load(snakemake.input.brain, train_ids)
responses = {key: targets.responses[:, columns] for key, columns in targets.columns.items()}
srp_dim = srp_dimension(params.ridge, len(train_ids))
ceilings = reference_ceilings(
    responses, alphas=params.ridge["alphas"], srp_dim=srp_dim, seed=params.seed,
    n_boot=params.n_bootstrap,
)
log.info("reference ceilings (mean over subjects):\n%s",
         ceilings.groupby(["ceiling", "metric", "roi"])["score"].mean().unstack("roi").round(3))
write_table(ceilings, snakemake.output[0], snakemake.config)
