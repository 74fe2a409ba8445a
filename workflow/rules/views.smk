rule views:
    input:
        manifest="results/{dataset}/manifest.tsv",
        shards=view_shards,
    output:
        report("results/{dataset}/views.tsv", caption="../report/views.rst", category="Views"),
    log:
        "results/{dataset}/logs/views.log",
    threads: config["threads"]["views"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["views"].get(wildcards.dataset, config["resources"]["views"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["views"].get(wildcards.dataset, config["resources"]["views"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/views.py"
