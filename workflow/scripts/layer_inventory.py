"""Layer inventory of one model: architecture only (no weights), one small forward pass."""

import checkout_src  # noqa: F401  (first: puts src/ on the path)

from nsdbench.brain import read_stimuli_store
from nsdbench.joblog import setup_job_logging
from nsdbench.layers import layer_inventory
from nsdbench.models import build_model
from nsdbench.tables import write_table

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
entry = snakemake.params.model
stimuli = read_stimuli_store(snakemake.input.stimuli)
# Trained weights matter here: a layer that is constant or a copy of another at random init
# (zero-initialised residual branches) is a layer of its own once trained.
model = build_model(entry, with_weights=entry["trained"])
inventory = layer_inventory(model, stimuli.images[:2])
inventory["n_images"] = len(stimuli.nsd_ids)
log.info("model %s: %d layers (%s)", entry["name"], len(inventory), inventory["method"].iloc[0])
write_table(inventory, snakemake.output[0], snakemake.config)
