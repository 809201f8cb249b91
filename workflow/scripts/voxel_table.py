"""One voxel table for all subjects, and the summary: kept voxels and images per split."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.brain import brain_summary, image_counts_by_subject, write_summary
from nsdbench.joblog import setup_job_logging
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
voxels = pd.concat([pd.read_parquet(path) for path in snakemake.input.voxels], ignore_index=True)
# Image counts come from the stores' id arrays; the responses themselves are not read.
summary = brain_summary(voxels, image_counts_by_subject(snakemake.input.stores))
log.info(
    "voxels kept per subject x ROI (scored: >= 10 kept) and images per split:\n%s",
    summary.to_string(index=False),
)
if voxels["reliability"].isna().all():
    # Algonauts releases and bring-your-own data without repetitions have no reliability.
    log.info("no reliability in this data (no repetitions): every voxel of each ROI is kept")
write_table(voxels, snakemake.output.voxels, snakemake.config)
write_summary(summary, snakemake.output.summary)
