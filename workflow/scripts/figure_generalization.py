"""Figure 4: each best layer's train (LOO) and held-out test score, per subject and ROI."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.figures import plot_generalization
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
rois = [roi["name"] for roi in snakemake.params.rois]
plot_generalization(pd.read_parquet(snakemake.input[0]), rois,
                    [snakemake.output.png, snakemake.output.svg])
