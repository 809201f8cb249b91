"""The train probe images (NSD shared images, sorted by NSD id) as a Zarr store."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import shared_train_ids, write_stimuli_store
from nsdbench.joblog import setup_job_logging
from nsdbench.nsd import NsdTree

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
tree = NsdTree(params.nsd["root"], betas_format=params.nsd["betas_format"])
# The same images as every subject's train responses: shared images with all 3 repetitions
# on disk for every subject (all of shared1000 on the full release).
nsd_ids = shared_train_ids(tree, list(params.subjects))
log.info("%d shared images (%d in the design)", len(nsd_ids), tree.design.n_shared)
write_stimuli_store(snakemake.output[0], tree, nsd_ids)
