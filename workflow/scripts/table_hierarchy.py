"""Table: relative depth of the best layer per ROI, per model and per architecture class."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.findings import hierarchy
from nsdbench.joblog import setup_job_logging
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
rois = [roi["name"] for roi in snakemake.params.rois]
table = hierarchy(pd.read_parquet(snakemake.input[0]), rois)
log.info("%d hierarchy rows", len(table))
write_table(table, snakemake.output[0], snakemake.config)
