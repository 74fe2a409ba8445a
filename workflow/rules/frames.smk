rule frames:
    input:
        manifest="results/{dataset}/manifest.tsv",
        tree=lambda wildcards: import_inputs(wildcards.dataset, wildcards.shard, "frames"),
    output:
        "results/{dataset}/views/rgb/{shard}.h5",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "frames"),
    log:
        "results/{dataset}/logs/frames/{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/frames/{shard}.tsv"
    threads: config["threads"]["frames"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["frames"].get(wildcards.dataset, config["resources"]["frames"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["frames"].get(wildcards.dataset, config["resources"]["frames"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/frames.py"
