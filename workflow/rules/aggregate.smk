# Gather the per-job scores into the long score table, and draw the figures.

# What `rule all` asks for from this file.
FINDINGS = [
    "results/tables/scores.parquet",
    "results/figures/best_scores.png",
    "results/figures/best_scores.svg",
]


rule aggregate_scores:
    input:
        # Listing every inventory lets a dry run show all of them before any has run.
        inventories=expand("results/layers/{model}.parquet", model=MODELS),
        scores=all_score_files,
        generalization=expand("results/generalization/{model}.parquet", model=MODELS),
    output:
        "results/tables/scores.parquet",
    log:
        "logs/aggregate/scores.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/aggregate_scores.py"


rule figure_best_scores:
    input:
        "results/tables/scores.parquet",
    output:
        png="results/figures/best_scores.png",
        svg="results/figures/best_scores.svg",
    log:
        "logs/figures/best_scores.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_best_scores.py"
