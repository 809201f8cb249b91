"""The cost of a full run from the layer inventories: print it, write results/cost.tsv, and the
recalibration factors the rules' requests use from now on."""

import json
from pathlib import Path

import checkout_src  # noqa: F401  (first: puts src/ on the path)
import pandas as pd
import yaml

from nsdbench.joblog import setup_job_logging
from nsdbench.plan import full_run_report, report_summary, slurm_arrays

snakemake = snakemake  # noqa: F821 - injected by Snakemake
log = setup_job_logging(snakemake.log[0])
params = snakemake.params
inventories = {Path(path).stem: pd.read_parquet(path) for path in snakemake.input.inventories}
voxels, voxel_basis = params.voxels
profile_path = Path(params.profile)
profile = yaml.safe_load(profile_path.read_text()) if profile_path.exists() else {}
report, factors = full_run_report(
    inventories, snakemake.config, params.rules, voxels=voxels, fetched=params.fetched,
    profile=profile, benchmarks=params.benchmarks,
)
array_rules, array_limit = slurm_arrays(profile)
summary = report_summary(
    report, voxels=voxels, voxel_basis=voxel_basis, models=len(inventories),
    layers=sum(len(table) for table in inventories.values()), array_rules=array_rules,
    array_limit=array_limit,
)
if factors:
    summary += "\nrecalibrated from benchmark files: " + ", ".join(
        f"{rule} x{f['time']:.2f} time" + (f", x{f['mem']:.2f} memory" if "mem" in f else "")
        + f" ({f['jobs']} jobs)" for rule, f in factors.items())
text = report.to_string(index=False, float_format=lambda x: f"{x:.4g}") + "\n\n" + summary
print(text)
log.info("cost of a full run:\n%s", text)

for path, write in ((snakemake.output.report, lambda p: report.to_csv(p, sep="\t", index=False)),
                    (snakemake.output.calibration,
                     lambda p: Path(p).write_text(json.dumps({"factors": factors}, indent=1)))):
    partial = Path(f"{path}.partial")
    write(partial)
    partial.rename(path)
