# Gather the per-job scores into the long score table; derive the findings tables (Parquet),
# the paper's figures (PNG + SVG, one rule each) and the pages of the Snakemake report.
#
#   snakemake --report report.html      (after a run; see workflow/report/workflow.rst)

FINDING_TABLES = ["best_layers", "hierarchy", "contrasts", "gains", "generalization"]
FIGURES = [
    "best_scores",
    "fig1b_hierarchy",
    "fig2_architecture",
    "fig3_taskonomy",
    "fig4_generalization",
    "fig5_ceilings",
]
REPORT_TABLES = ["contrasts", "gains", "generalization", "hierarchy"]
# The demo knows the depth of the layer it planted in each ROI: Figure 1B draws it.
PLANTED_TRUTH = (
    {"planted": str(NSD_ROOT / "planted_truth.json")} if config["nsd"].get("demo") else {}
)
# What the contrasts read of each model: its descriptors (weights or options do not matter).
MODEL_DESCRIPTORS = [
    {key: entry[key] for key in ("name", "source", "arch", "architecture", "task",
                                  "task_category", "input_diet", "trained")}
    for entry in MODELS.values()
]

# What `rule all` asks for from this file.
FINDINGS = [
    "results/tables/scores.parquet",
    *expand("results/tables/{table}.parquet", table=FINDING_TABLES),
    *expand("results/figures/{figure}.{ext}", figure=FIGURES, ext=["png", "svg"]),
    *expand("results/report/{table}.html", table=REPORT_TABLES),
]


report: "../report/workflow.rst"


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


rule table_best_layers:
    input:
        "results/tables/scores.parquet",
    output:
        "results/tables/best_layers.parquet",
    params:
        rois=config["rois"],
    log:
        "logs/tables/best_layers.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/table_best_layers.py"


rule table_hierarchy:
    input:
        "results/tables/best_layers.parquet",
    output:
        "results/tables/hierarchy.parquet",
    params:
        rois=config["rois"],
    log:
        "logs/tables/hierarchy.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/table_hierarchy.py"


rule table_contrasts:
    input:
        "results/tables/best_layers.parquet",
    output:
        "results/tables/contrasts.parquet",
    params:
        models=MODEL_DESCRIPTORS,
        seed=config["seed"],
    log:
        "logs/tables/contrasts.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/table_contrasts.py"


rule table_gains:
    input:
        "results/tables/best_layers.parquet",
    output:
        "results/tables/gains.parquet",
    params:
        seed=config["seed"],
    log:
        "logs/tables/gains.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/table_gains.py"


rule table_generalization:
    input:
        "results/tables/best_layers.parquet",
    output:
        "results/tables/generalization.parquet",
    params:
        seed=config["seed"],
    log:
        "logs/tables/generalization.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/table_generalization.py"


rule figure_best_scores:
    input:
        "results/tables/scores.parquet",
    output:
        png=report("results/figures/best_scores.png", caption="../report/best_scores.rst",
                   category="Figures"),
        svg="results/figures/best_scores.svg",
    params:
        rois=config["rois"],  # the panel order; a changed ROI list redraws the figure
    log:
        "logs/figures/best_scores.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_best_scores.py"


rule figure_hierarchy:
    input:
        hierarchy="results/tables/hierarchy.parquet",
        **PLANTED_TRUTH,
    output:
        png=report("results/figures/fig1b_hierarchy.png", caption="../report/fig1b.rst",
                   category="Figures"),
        svg="results/figures/fig1b_hierarchy.svg",
    log:
        "logs/figures/fig1b_hierarchy.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_hierarchy.py"


rule figure_architectures:
    input:
        best="results/tables/best_layers.parquet",
        ceilings="results/ceilings.parquet",
    output:
        png=report("results/figures/fig2_architecture.png", caption="../report/fig2.rst",
                   category="Figures"),
        svg="results/figures/fig2_architecture.svg",
    params:
        rois=config["rois"],
    log:
        "logs/figures/fig2_architecture.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_architectures.py"


rule figure_taskonomy:
    input:
        best="results/tables/best_layers.parquet",
        ceilings="results/ceilings.parquet",
    output:
        png=report("results/figures/fig3_taskonomy.png", caption="../report/fig3.rst",
                   category="Figures"),
        svg="results/figures/fig3_taskonomy.svg",
    params:
        rois=config["rois"],
    log:
        "logs/figures/fig3_taskonomy.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_taskonomy.py"


rule figure_generalization:
    input:
        "results/tables/generalization.parquet",
    output:
        png=report("results/figures/fig4_generalization.png", caption="../report/fig4.rst",
                   category="Figures"),
        svg="results/figures/fig4_generalization.svg",
    params:
        rois=config["rois"],
    log:
        "logs/figures/fig4_generalization.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_generalization.py"


rule figure_ceilings:
    input:
        best="results/tables/best_layers.parquet",
        ceilings="results/ceilings.parquet",
    output:
        png=report("results/figures/fig5_ceilings.png", caption="../report/fig5.rst",
                   category="Figures"),
        svg="results/figures/fig5_ceilings.svg",
    params:
        rois=config["rois"],
    log:
        "logs/figures/fig5_ceilings.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/figure_ceilings.py"


rule report_tables:
    input:
        **{table: f"results/tables/{table}.parquet" for table in REPORT_TABLES},
    output:
        **{
            table: report(f"results/report/{table}.html",
                          caption=f"../report/table_{table}.rst", category="Tables")
            for table in REPORT_TABLES
        },
    log:
        "logs/tables/report_pages.log",
    localrule: True
    conda:
        "../../envs/cpu.yaml"
    script:
        "../scripts/report_tables.py"
