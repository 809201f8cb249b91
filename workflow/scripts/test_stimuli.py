"""A subject's held-out test images (as its response store lists them) as a Zarr store."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import open_brain_source, read_response_store, write_stimuli_store
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
nsd_ids = read_response_store(snakemake.input.brain).test_nsd_ids
log.info("subject %s: %d test images", snakemake.wildcards.subject, len(nsd_ids))
write_stimuli_store(snakemake.output[0], open_brain_source(snakemake.params.nsd), nsd_ids)
