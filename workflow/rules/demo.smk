rule demo:
    output:
        directory("results/{dataset}/videos"),
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset),
    log:
        "results/{dataset}/logs/demo.log",
    resources:
        mem_mb=lambda wildcards: config["resources"]["demo"].get(wildcards.dataset, config["resources"]["demo"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["demo"].get(wildcards.dataset, config["resources"]["demo"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/demo.py"
