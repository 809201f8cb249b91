"""Table: the best layer of each model x subject x ROI x metric, chosen by its train score."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.findings import best_layers, roi_groups
from nsdbench.joblog import setup_job_logging
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
best = best_layers(pd.read_parquet(snakemake.input[0]), roi_groups(snakemake.params.rois))
log.info("%d best layers (%d with a test score)", len(best), best["test_score"].notna().sum())
write_table(best, snakemake.output[0], snakemake.config)
