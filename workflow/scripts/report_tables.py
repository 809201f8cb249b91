"""The key findings tables as HTML pages for the Snakemake report (the Parquet files stay the
tables of record)."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.findings import report_table_html
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
for name in ("contrasts", "gains", "generalization", "hierarchy"):
    report_table_html(name, pd.read_parquet(snakemake.input[name]), snakemake.output[name])
