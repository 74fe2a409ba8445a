# Pretraining runs per official split and sees only that split's train videos (minus the
# validation part its lr plateau watches). CPC trains each view alone; a joint method
# trains a view set (e.g. rgb+flow) from the CPC checkpoints of its views.
rule pretrain_cpc:
    input:
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
        shards=cpc_inputs,
    output:
        "results/{dataset}/split{split}/pretrain/cpc/{view}.pt",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain"),
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
        state="results/{dataset}/split{split}/pretrain/cpc/{view}.state",
    log:
        "results/{dataset}/logs/split{split}/pretrain/cpc/{view}.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/pretrain/cpc/{view}.tsv"
    threads: config["threads"]["pretrain"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["pretrain"].get(wildcards.dataset, config["resources"]["pretrain"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["pretrain"].get(wildcards.dataset, config["resources"]["pretrain"])["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["pretrain"]["gpus"],
        # one task: its gpus, and a CPU per training process (one per GPU) and per data loader
        cpus_per_task=lambda wildcards, threads: max(threads, DATASETS[wildcards.dataset]["pretrain"]["gpus"] * (DATASETS[wildcards.dataset]["pretrain"]["workers"] + 1)),
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/pretrain_cpc.py"


rule pretrain_cocon:
    input:
        unpack(joint_inputs),
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
    output:
        "results/{dataset}/split{split}/pretrain/{method}/{view_set}/joint.pt",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain"),
        views=joint_views,
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
        state="results/{dataset}/split{split}/pretrain/{method}/{view_set}/joint.state",
    log:
        "results/{dataset}/logs/split{split}/pretrain/{method}/{view_set}.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/pretrain/{method}/{view_set}.tsv"
    threads: config["threads"]["pretrain"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["pretrain"].get(wildcards.dataset, config["resources"]["pretrain"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["pretrain"].get(wildcards.dataset, config["resources"]["pretrain"])["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["pretrain"]["gpus"],
        # one task: its gpus, and a CPU per training process (one per GPU) and per data loader
        cpus_per_task=lambda wildcards, threads: max(threads, DATASETS[wildcards.dataset]["pretrain"]["gpus"] * (DATASETS[wildcards.dataset]["pretrain"]["workers"] + 1)),
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/pretrain_cocon.py"
