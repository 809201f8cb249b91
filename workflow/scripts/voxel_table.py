"""One voxel table for all subjects, and the kept-voxel summary."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.joblog import setup_job_logging
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
voxels = pd.concat([pd.read_parquet(path) for path in snakemake.input], ignore_index=True)
summary = voxels.groupby(["subject", "roi"])["kept"].agg(["sum", "size"])
log.info("kept voxels per subject x ROI:\n%s", summary.to_string())
write_table(voxels, snakemake.output[0], snakemake.config)
