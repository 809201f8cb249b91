"""Generate the embedded demo NSD tree with planted responses."""

from pathlib import Path

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.demo.planted import build_demo_tree
from nsdbench.joblog import setup_job_logging

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
root = Path(snakemake.output.planted).parent
truth = build_demo_tree(snakemake.config, root)
for roi, layer in truth["rois"].items():
    log.info("planted %s <- %s (depth %.3f)", roi, layer["layer"], layer["layer_depth"])
