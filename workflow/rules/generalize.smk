# Generalization (paper 3.5): each model's best layers, fitted on all train images and scored
# on every subject's own held-out test images. Two jobs per model, as in the main pass: a GPU
# job extracts only the best layers, for the train and test images together, and a CPU job
# fits and scores them (the GPU is not held while the ridge runs); the features are deleted
# once scored. And the brains' own reference ceilings (paper A.5).


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


rule extract_best_layers:
    input:
        unpack(model_weights),
        scores=model_score_files,
        inventory="results/layers/{model}.parquet",
        stimuli="results/stimuli/train.zarr",
        test_stimuli=expand("results/stimuli/test-sub-{subject}.zarr", subject=SUBJECTS),
    output:
        temp(directory("results/generalization/{model}.features")),
    params:
        model=model_params,
        batch_size=config["extraction"]["batch_size"],
        device=config["extraction"]["device"],
        dtype=config["extraction"]["dtype"],
    log:
        "logs/extract_best_layers/{model}.log",
    benchmark:
        "logs/benchmarks/extract_best_layers/{model}.tsv"
    threads: EXTRACT_THREADS
    # Planned for the model's widest layers (nsdbench.plan.best_layer_extraction_jobs): the
    # best layers are known only once its fits have run. Resumes like extract.
    resources:
        mem_mb=requested("extract_best_layers", "mem_mb"),
        disk_mb=requested("extract_best_layers", "disk_mb"),
        runtime=requested("extract_best_layers", "runtime"),
        cpus_per_task=threads_as_cpus,
        gpu=int(EXTRACT_GPU),
    conda:
        "../../envs/gpu.yaml"
    script:
        "../scripts/extract_best_layers.py"


rule generalize:
    input:
        features="results/generalization/{model}.features",
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
    log:
        "logs/generalize/{model}.log",
    benchmark:
        "logs/benchmarks/generalize/{model}.tsv"
    # One thread, as the fit rule: float32 sums in one order, so scores are reproducible.
    threads: 1
    # Planned for the model's widest layers, like extract_best_layers.
    resources:
        mem_mb=requested("generalize", "mem_mb"),
        runtime=requested("generalize", "runtime"),
        cpus_per_task=threads_as_cpus,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/generalize.py"
