"""Gather all per-job score tables into results/tables/scores.parquet."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.joblog import setup_job_logging
from nsdbench.tables import gather_scores, write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
scores = gather_scores([*snakemake.input.scores, *snakemake.input.generalization])
log.info("%d score rows from %d jobs", len(scores), len(snakemake.input))
write_table(scores, snakemake.output[0], snakemake.config)
