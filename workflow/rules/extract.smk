# Feature extraction on GPU (or CPU), one forward pass per model x extraction group.
# A killed job resumes: its stores grow in "<output>.partial", which is not a declared output,
# so Snakemake's removal of a failed job's outputs leaves it for the rerun (no shadow: the
# partial directory must live beside the real output, not in a throwaway copy).


rule extract:
    input:
        unpack(model_weights),
        inventory="results/layers/{model}.parquet",
        stimuli="results/stimuli/train.zarr",
    output:
        temp(directory("results/features/{model}/group-{group}")),
    params:
        layers=layers_of_group,
        model=model_params,
        batch_size=config["extraction"]["batch_size"],
        device=config["extraction"]["device"],
        dtype=config["extraction"]["dtype"],
    log:
        "logs/extract/{model}/group-{group}.log",
    benchmark:
        "logs/benchmarks/extract/{model}/group-{group}.tsv"
    threads: EXTRACT_THREADS
    # From the group's layers (nsdbench.plan.extract_jobs): host buffers of a batch of the
    # group's features, the forward pass and the writes; disk_mb is the group's features.
    resources:
        mem_mb=requested("extract", "mem_mb"),
        disk_mb=requested("extract", "disk_mb"),
        runtime=requested("extract", "runtime"),
        cpus_per_task=threads_as_cpus,
        gpu=int(EXTRACT_GPU),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/extract.py"
