# The embedded demo: a small fake NSD tree with planted responses, generated locally.
if config["nsd"].get("demo"):

    rule demo_nsd:
        output:
            **nsd_inputs(),
            planted=str(NSD_ROOT / "planted_truth.json"),
        params:
            demo=config.get("demo"),
            rois=config["rois"],
            subjects=config["subjects"],
            seed=config["seed"],
            ground_truth=model_entry(config, config["demo"]["ground_truth"]),
        log:
            "logs/demo_nsd.log",
        benchmark:
            "logs/benchmarks/demo_nsd.tsv"
        threads: 2
        resources:
            mem_mb=fixed("demo_nsd", "mem_mb"),
            runtime=fixed("demo_nsd", "runtime"),
            cpus_per_task=threads_as_cpus,
        conda:
            "../../envs/gpu.yaml"
        script:
            "../scripts/demo_nsd.py"
