"""Responses of one subject: z-scored, repetition-averaged, reliable voxels per ROI."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import build_subject_responses, write_response_store
from nsdbench.joblog import setup_job_logging
from nsdbench.nsd import NsdTree, RoiSpec
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
subject = int(snakemake.wildcards.subject)
tree = NsdTree(params.nsd["root"], betas_format=params.nsd["betas_format"])
responses = build_subject_responses(
    tree, subject, [RoiSpec(**roi) for roi in params.rois],
    n_test=params.images["n_test"], n_reliability=params.images["n_reliability"],
    reliability_threshold=params.voxels["reliability_threshold"],
    selection=params.voxels["selection"], ncsnr_threshold=params.voxels["ncsnr_threshold"],
    seed=params.seed,
)
for roi, kept in responses.kept_counts().items():
    log.info("subject %02d %s: %d voxels kept", subject, roi, kept)
log.info("images: %d train, %d test", len(responses.train_nsd_ids), len(responses.test_nsd_ids))
write_table(responses.voxels, snakemake.output.voxels, snakemake.config)
write_response_store(snakemake.output.store, responses)
