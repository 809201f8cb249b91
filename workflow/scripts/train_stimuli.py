"""The train probe images (the shared images, sorted by id) as a Zarr store."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import open_brain_source, study_train_ids, write_stimuli_store
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
source = open_brain_source(params.nsd)
# The same images as every subject's train responses: for NSD the shared images with all 3
# repetitions on disk for every subject (all of shared1000 on the full release).
nsd_ids = study_train_ids(source, list(params.subjects))
log.info("%s: %d shared train images", source, len(nsd_ids))
write_stimuli_store(snakemake.output[0], source, nsd_ids)
