"""Responses of one subject per ROI, from the configured format (nsd, algonauts or byo):
NSD is z-scored, repetition-averaged and reliability-selected here; the others as their
readers document (nsdbench.algonauts, nsdbench.byo)."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import (
    brain_summary,
    build_responses,
    open_brain_source,
    write_response_store,
)
from nsdbench.joblog import setup_job_logging
from nsdbench.nsd import NsdTree, RoiSpec
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
subject = int(snakemake.wildcards.subject)
source = open_brain_source(params.nsd)
if isinstance(source, NsdTree):
    log.info("%s: subject %02d, sessions %s", source, subject, source.sessions(subject))
else:
    log.info("%s: subject %02d (format %s)", source, subject, params.nsd["format"])
responses = build_responses(
    source, subject, [RoiSpec(**roi) for roi in params.rois],
    n_test=params.images["n_test"], n_reliability=params.images["n_reliability"],
    reliability_threshold=params.voxels["reliability_threshold"],
    selection=params.voxels["selection"], ncsnr_threshold=params.voxels["ncsnr_threshold"],
    seed=params.seed,
    # The study's subjects: every subject's train images are the same shared images.
    subjects=list(params.subjects),
)
if responses.voxels["reliability"].isna().all():
    log.info(
        "no repetitions in this data: no reliability, every voxel/vertex/unit of each ROI is kept"
    )
counts = {
    split: len(getattr(responses, f"{split}_nsd_ids")) for split in ("train", "test", "reliability")
}
summary = brain_summary(responses.voxels, {subject: counts})
log.info("voxels kept and images per split:\n%s", summary.to_string(index=False))
write_table(responses.voxels, snakemake.output.voxels, snakemake.config)
write_response_store(snakemake.output.store, responses)
