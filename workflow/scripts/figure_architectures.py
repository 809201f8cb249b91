"""Figure 2: best-layer scores of ImageNet classifiers by architecture class."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.figures import plot_architectures
from nsdbench.findings import roi_groups
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
plot_architectures(pd.read_parquet(snakemake.input.best), pd.read_parquet(snakemake.input.ceilings),
                   roi_groups(snakemake.params.rois), [snakemake.output.png, snakemake.output.svg])
