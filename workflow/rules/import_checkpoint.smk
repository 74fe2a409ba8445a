# A checkpoint from outside the workflow (the dataset config's `external` entry, e.g. DPC's
# released weights) read safely, checked against what the entry says, and written as a view
# checkpoint of ours that fine-tuning and the features stage start from.
rule import_checkpoint:
    input:
        external_source,
    output:
        "results/{dataset}/external/{name}.pt",
    params:
        options=lambda wildcards: import_options(wildcards.dataset, wildcards.name),
    log:
        "results/{dataset}/logs/external/{name}.log",
    resources:
        mem_mb=lambda wildcards: config["resources"]["import_checkpoint"].get(wildcards.dataset, config["resources"]["import_checkpoint"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["import_checkpoint"].get(wildcards.dataset, config["resources"]["import_checkpoint"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/import_checkpoint.py"
