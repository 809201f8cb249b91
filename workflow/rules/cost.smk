# The cost of a full run, before it starts: `snakemake cost` (after the layer inventories, which
# are cheap; it runs them first) prints and writes results/cost.tsv. It needs no extraction and
# no fit. Its job counts come from the same plans as the rules' jobs, and its resources from the
# same requests (nsdbench.plan); once jobs have run, their benchmark files recalibrate it.


rule cost:
    input:
        inventories=expand("results/layers/{model}.parquet", model=MODELS),
    output:
        report="results/cost.tsv",
        calibration=COST_CALIBRATION,
    params:
        rules=cost_rules(),  # every rule defined so far: this file is included last
        voxels=lambda wildcards: voxel_count(),
        fetched=len({weights_file(entry) for entry in MODELS.values() if fetched_weights(entry)}),
        profile=str(Path(workflow.basedir) / "profiles" / "slurm" / "config.v8+.yaml"),
        benchmarks="logs/benchmarks",
    log:
        "logs/cost.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/cost_report.py"
