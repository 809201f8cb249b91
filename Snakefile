# nsdbench: deep vision models vs. the human visual cortex (Conwell et al., 5.17 billion fits).
# Run the embedded demo:  snakemake --cores 2 --configfile config/demo.yaml
# Run on a cluster:       snakemake --profile profiles/slurm
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# The tested package lives in src/; the rules' helpers import it from this checkout.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from nsdbench.config import ConfigError, validate_config  # noqa: E402


configfile: Path(workflow.basedir) / "config" / "config.yaml"


try:
    VALID = validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
except ConfigError as error:
    raise WorkflowError(str(error))
config.clear()
config.update(VALID)


include: "workflow/rules/common.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/brain.smk"
include: "workflow/rules/layers.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/generalize.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/cost.smk"  # after every rule it counts


rule all:
    input:
        "results/brain/voxels.parquet",
        "results/ceilings.parquet",
        FINDINGS,  # tables and figures: workflow/rules/aggregate.smk
