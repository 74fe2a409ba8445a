rule demo:
    output:
        directory("results/{dataset}/videos"),
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset),
    log:
        "results/{dataset}/logs/demo.log",
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/demo.py"
