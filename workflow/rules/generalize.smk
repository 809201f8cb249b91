# Generalization (paper 3.5): each model's best layers, fitted on all train images and scored
# on every subject's own held-out test images. One job per model: it extracts only the best
# layers, for the train and test images together, and deletes those features when done.
# And the brains' own reference ceilings (paper A.5).


rule ceilings:
    input:
        brain=expand("results/brain/sub-{subject}.zarr", subject=SUBJECTS),
        stimuli="results/stimuli/train.zarr",
    output:
        "results/ceilings.parquet",
    params:
        ridge=config["ridge"],
        seed=config["seed"],
        n_bootstrap=config["ceilings"]["n_bootstrap"],
    log:
        "logs/ceilings.log",
    benchmark:
        "logs/benchmarks/ceilings.tsv"
    resources:
        mem_mb=fixed("ceilings", "mem_mb"),
        runtime=fixed("ceilings", "runtime"),
        cpus_per_task=threads_as_cpus,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/ceilings.py"


rule test_stimuli:
    input:
        **nsd_inputs(),
        brain="results/brain/sub-{subject}.zarr",
    output:
        directory("results/stimuli/test-sub-{subject}.zarr"),
    params:
        nsd=config["nsd"],
    log:
        "logs/stimuli/test-sub-{subject}.log",
    resources:
        mem_mb=fixed("test_stimuli", "mem_mb"),
        runtime=fixed("test_stimuli", "runtime"),
        cpus_per_task=threads_as_cpus,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/test_stimuli.py"


rule generalize:
    input:
        unpack(model_weights),
        scores=model_score_files,
        inventory="results/layers/{model}.parquet",
        brain=expand("results/brain/sub-{subject}.zarr", subject=SUBJECTS),
        stimuli="results/stimuli/train.zarr",
        test_stimuli=expand("results/stimuli/test-sub-{subject}.zarr", subject=SUBJECTS),
    output:
        "results/generalization/{model}.parquet",
    params:
        model=model_params,
        ridge=config["ridge"],
        seed=config["seed"],
        batch_size=config["extraction"]["batch_size"],
        device=config["extraction"]["device"],
        dtype=config["extraction"]["dtype"],
    log:
        "logs/generalize/{model}.log",
    benchmark:
        "logs/benchmarks/generalize/{model}.tsv"
    threads: EXTRACT_THREADS
    # Planned for the model's widest layers (nsdbench.plan.generalize_jobs): the best layers
    # are known only once its fits have run.
    resources:
        mem_mb=requested("generalize", "mem_mb"),
        disk_mb=requested("generalize", "disk_mb"),
        runtime=requested("generalize", "runtime"),
        cpus_per_task=threads_as_cpus,
        gpu=int(EXTRACT_GPU),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/generalize.py"
