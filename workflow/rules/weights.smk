# Checkpoints: fetched once, on the login node (a local rule), into the weights cache.
# Compute nodes often have no internet; the jobs that need a checkpoint only read the cache.
# `snakemake fetch_weights` fetches every configured checkpoint ahead of a run.


localrules:
    fetch_weights,
    fetch_model_weights,


rule fetch_weights:
    input:
        [weights_file(entry) for entry in MODELS.values() if fetched_weights(entry)],


rule fetch_model_weights:
    output:
        f"{WEIGHTS_CACHE}/{{model}}/{{file_name}}",
    params:
        # Only a new URL fetches again (Snakemake deletes an output before rerunning its job).
        # A pin added later is checked by every job that reads the file.
        url=lambda wildcards: MODELS[wildcards.model]["weights"]["url"],
    log:
        "logs/weights/{model}/{file_name}.log",
    run:
        fetch(model_entry(config, wildcards.model), WEIGHTS_CACHE)
