rule manifest:
    input:
        demo_videos,
    output:
        manifest="results/{dataset}/manifest.tsv",
        excluded="results/{dataset}/excluded.tsv",
    params:
        dataset=lambda wildcards: manifest_params(wildcards.dataset),
    log:
        "results/{dataset}/logs/manifest.log",
    benchmark:
        "results/{dataset}/benchmarks/manifest.tsv"
    threads: config["threads"]["manifest"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["manifest"].get(wildcards.dataset, config["resources"]["manifest"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["manifest"].get(wildcards.dataset, config["resources"]["manifest"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/manifest.py"
