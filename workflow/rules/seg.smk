rule seg:
    input:
        rgb="results/{dataset}/views/rgb/{shard}.h5",
        model=lambda wildcards: model_files(wildcards.dataset, "seg"),
    output:
        "results/{dataset}/views/seg/{shard}.h5",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "seg"),
    log:
        "results/{dataset}/logs/seg/{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/seg/{shard}.tsv"
    threads: config["threads"]["seg"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["seg"].get(wildcards.dataset, config["resources"]["seg"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["seg"].get(wildcards.dataset, config["resources"]["seg"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/seg.py"
