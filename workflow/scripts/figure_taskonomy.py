"""Figure 3: Taskonomy encoders by task category (an empty, labelled panel without them)."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.figures import plot_taskonomy
from nsdbench.findings import roi_groups
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
best = pd.read_parquet(snakemake.input.best)
if not (best["input_diet"] == "taskonomy").any():
    log.info("no Taskonomy models in this run: Figure 3 says so")
plot_taskonomy(best, pd.read_parquet(snakemake.input.ceilings), roi_groups(snakemake.params.rois),
               [snakemake.output.png, snakemake.output.svg])
