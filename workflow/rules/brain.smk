# Brain responses per subject (train = shared images, test = the subject's own) and stimuli,
# read from the configured nsd.format (nsd, algonauts, byo); inputs come from nsd_inputs().


rule brain_responses:
    input:
        **nsd_inputs(),
    output:
        store=directory("results/brain/sub-{subject}.zarr"),
        voxels="results/brain/voxels-sub-{subject}.parquet",
    params:
        nsd=config["nsd"],
        rois=config["rois"],
        images=config["images"],
        voxels=config["voxels"],
        seed=config["seed"],
        subjects=config["subjects"],
    log:
        "logs/brain/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/brain/sub-{subject}.tsv"
    resources:
        mem_mb=fixed("brain_responses", "mem_mb"),
        runtime=fixed("brain_responses", "runtime"),
        cpus_per_task=threads_as_cpus,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/brain_responses.py"


rule voxel_table:
    input:
        voxels=expand("results/brain/voxels-sub-{subject}.parquet", subject=SUBJECTS),
        stores=expand("results/brain/sub-{subject}.zarr", subject=SUBJECTS),
    output:
        voxels="results/brain/voxels.parquet",
        summary="results/brain/summary.tsv",
    log:
        "logs/brain/voxel_table.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/voxel_table.py"


rule train_stimuli:
    input:
        **nsd_inputs(),
    output:
        directory("results/stimuli/train.zarr"),
    params:
        nsd=config["nsd"],
        subjects=config["subjects"],
    log:
        "logs/stimuli/train.log",
    resources:
        mem_mb=fixed("train_stimuli", "mem_mb"),
        runtime=fixed("train_stimuli", "runtime"),
        cpus_per_task=threads_as_cpus,
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/train_stimuli.py"
