"""The train probe images (NSD shared images, sorted by NSD id) as a Zarr store."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import write_stimuli_store
from nsdbench.joblog import setup_job_logging
from nsdbench.nsd import NsdTree

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
tree = NsdTree(snakemake.config["nsd"]["root"])
nsd_ids = tree.read_design().shared_nsd_ids()
log.info("%d shared images", len(nsd_ids))
write_stimuli_store(snakemake.output[0], tree, nsd_ids)
