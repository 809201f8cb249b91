# The layer inventory: a checkpoint, so the jobs downstream follow each model's real layers.


checkpoint layer_inventory:
    input:
        unpack(model_weights),
        stimuli="results/stimuli/train.zarr",
    output:
        "results/layers/{model}.parquet",
    params:
        model=model_params,
    log:
        "logs/layers/{model}.log",
    benchmark:
        "logs/benchmarks/layers/{model}.tsv"
    resources:
        mem_mb=fixed("layer_inventory", "mem_mb"),
        runtime=fixed("layer_inventory", "runtime"),
        cpus_per_task=threads_as_cpus,
        gpu=0,  # architecture only: no GPU
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/layer_inventory.py"
