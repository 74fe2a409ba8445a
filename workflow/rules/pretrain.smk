rule pretrain_cpc:
    input:
        manifest="results/{dataset}/manifest.tsv",
        shards=lambda wildcards: view_shard_paths(wildcards.dataset, [wildcards.view]),
    output:
        "results/{dataset}/pretrain/cpc/{view}.pt",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "split"),
        views_dir="results/{dataset}/views",
        state="results/{dataset}/pretrain/cpc/{view}.state",
    log:
        "results/{dataset}/logs/pretrain/cpc/{view}.log",
    benchmark:
        "results/{dataset}/benchmarks/pretrain/cpc/{view}.tsv"
    threads: config["threads"]["pretrain"]
    resources:
        mem_mb=config["resources"]["pretrain"]["mem_mb"],
        runtime=config["resources"]["pretrain"]["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["pretrain"]["gpus"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/pretrain_cpc.py"


rule pretrain_cocon:
    input:
        manifest="results/{dataset}/manifest.tsv",
        shards=lambda wildcards: view_shard_paths(wildcards.dataset, VIEWS),
        init=expand("results/{{dataset}}/pretrain/cpc/{view}.pt", view=VIEWS),
    output:
        expand("results/{{dataset}}/pretrain/{{method}}/{view}.pt", view=VIEWS),
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "split"),
        views=VIEWS,
        views_dir="results/{dataset}/views",
        state="results/{dataset}/pretrain/{method}/joint.state",
    log:
        "results/{dataset}/logs/pretrain/{method}/joint.log",
    benchmark:
        "results/{dataset}/benchmarks/pretrain/{method}/joint.tsv"
    threads: config["threads"]["pretrain"]
    resources:
        mem_mb=config["resources"]["pretrain"]["mem_mb"],
        runtime=config["resources"]["pretrain"]["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["pretrain"]["gpus"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/pretrain_cocon.py"
