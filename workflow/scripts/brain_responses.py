"""Responses of one subject: z-scored, repetition-averaged, reliable voxels per ROI."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import brain_summary, build_subject_responses, write_response_store
from nsdbench.joblog import setup_job_logging
from nsdbench.nsd import NsdTree, RoiSpec
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
subject = int(snakemake.wildcards.subject)
tree = NsdTree(params.nsd["root"], betas_format=params.nsd["betas_format"])
log.info("%s: subject %02d, sessions %s", tree, subject, tree.sessions(subject))
responses = build_subject_responses(
    tree, subject, [RoiSpec(**roi) for roi in params.rois],
    n_test=params.images["n_test"], n_reliability=params.images["n_reliability"],
    reliability_threshold=params.voxels["reliability_threshold"],
    selection=params.voxels["selection"], ncsnr_threshold=params.voxels["ncsnr_threshold"],
    seed=params.seed,
    # The study's subjects: every subject's train images are the same shared images.
    subjects=list(params.subjects),
)
counts = {
    split: len(getattr(responses, f"{split}_nsd_ids")) for split in ("train", "test", "reliability")
}
summary = brain_summary(responses.voxels, {subject: counts})
log.info("voxels kept and images per split:\n%s", summary.to_string(index=False))
write_table(responses.voxels, snakemake.output.voxels, snakemake.config)
write_response_store(snakemake.output.store, responses)
