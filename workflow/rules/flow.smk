rule flow:
    input:
        rgb="results/{dataset}/views/rgb/{shard}.h5",
        tree=lambda wildcards: import_inputs(wildcards.dataset, wildcards.shard, "flow"),
    output:
        "results/{dataset}/views/flow/{shard}.h5",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "flow"),
    log:
        "results/{dataset}/logs/flow/{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/flow/{shard}.tsv"
    threads: config["threads"]["flow"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["flow"].get(wildcards.dataset, config["resources"]["flow"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["flow"].get(wildcards.dataset, config["resources"]["flow"])["runtime"],
        # the torch backend on CUDA runs the whole shard on one GPU
        gpu=lambda wildcards: int(DATASETS[wildcards.dataset]["flow"].get("backend") == "torch"
                                  and DATASETS[wildcards.dataset]["flow"].get("device") == "cuda"),
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/flow.py"
