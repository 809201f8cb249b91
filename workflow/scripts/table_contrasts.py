"""Table: the paper's contrasts (architecture, task, input diet, training) with statistics."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.findings import contrasts, model_table
from nsdbench.joblog import setup_job_logging
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
table, skipped = contrasts(pd.read_parquet(snakemake.input[0]),
                           model_table(snakemake.params.models), seed=snakemake.params.seed)
log.info("%d contrast rows; %d contrast cells left out (reasons above)", len(table), len(skipped))
write_table(table, snakemake.output[0], snakemake.config)
