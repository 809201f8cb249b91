"""Table: train (LOO) against held-out test score of each best layer, and the mean drop."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.findings import generalization
from nsdbench.joblog import setup_job_logging
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
table = generalization(pd.read_parquet(snakemake.input[0]), seed=snakemake.params.seed)
log.info("%d generalization rows", len(table))
write_table(table, snakemake.output[0], snakemake.config)
