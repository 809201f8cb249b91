# Feature extraction on GPU (or CPU), one forward pass per model x extraction group.


rule extract:
    input:
        inventory="results/layers/{model}.parquet",
        stimuli="results/stimuli/train.zarr",
    output:
        temp(directory("results/features/{model}/group-{group}")),
    params:
        layers=layers_of_group,
        model=model_params,
        batch_size=config["extraction"]["batch_size"],
        device=config["extraction"]["device"],
    log:
        "logs/extract/{model}/group-{group}.log",
    benchmark:
        "logs/benchmarks/extract/{model}/group-{group}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        disk_mb=group_feature_mb,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/extract.py"
