"""Figure 1B: ROIs ordered by the mean depth of their best layer, by architecture class."""

import json

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd

from nsdbench.figures import plot_hierarchy
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
planted = None
if "planted" in snakemake.input.keys():  # the demo: the planted layers' depths
    truth = json.loads(open(snakemake.input.planted).read())
    planted = {roi: layer["layer_depth"] for roi, layer in truth["rois"].items()}
plot_hierarchy(pd.read_parquet(snakemake.input.hierarchy),
               [snakemake.output.png, snakemake.output.svg], planted=planted)
