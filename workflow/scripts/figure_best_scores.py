"""Figure: the best-layer score per model x ROI."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.figures import plot_best_scores
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
scores = pd.read_parquet(snakemake.input[0])
rois = [roi["name"] for roi in snakemake.params.rois]
plot_best_scores(scores, [snakemake.output.png, snakemake.output.svg], rois)
