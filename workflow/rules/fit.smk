# One job per model x block of layers: reduce each layer, fit the GCV ridge for every voxel of
# every subject and ROI, and score cRSA, veRSA and voxel r.


rule fit:
    input:
        features=group_of_block,
        inventory="results/layers/{model}.parquet",
        brain=expand("results/brain/sub-{subject}.zarr", subject=SUBJECTS),
        stimuli="results/stimuli/train.zarr",
    output:
        "results/scores/{model}/block-{block}.parquet",
    params:
        layers=layers_of_block,
        model=model_params,
        ridge=config["ridge"],
        seed=config["seed"],
    log:
        "logs/fit/{model}/block-{block}.log",
    benchmark:
        "logs/benchmarks/fit/{model}/block-{block}.tsv"
    threads: 1
    # Fit what is extracted before extracting more, so feature stores are deleted early.
    priority: 10
    # From the block's layers, the images and the scored voxels (nsdbench.plan.fit_jobs).
    resources:
        mem_mb=requested("fit", "mem_mb"),
        runtime=requested("fit", "runtime"),
        cpus_per_task=threads_as_cpus,
        gpu=0,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/fit.py"
