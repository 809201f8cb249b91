"""Figure 5: the human reference ceilings (95% CI bands) against every model's veRSA."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.figures import plot_ceilings
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
plot_ceilings(pd.read_parquet(snakemake.input.best), pd.read_parquet(snakemake.input.ceilings),
              [roi["name"] for roi in snakemake.params.rois],
              [snakemake.output.png, snakemake.output.svg])
