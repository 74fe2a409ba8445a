rule finetune:
    input:
        manifest="results/{dataset}/manifest.tsv",
        shards=lambda wildcards: view_shard_paths(wildcards.dataset, [wildcards.view]),
        pretrained=pretrained_input,
    output:
        model="results/{dataset}/finetune/{init}/{view}.pt",
        scores="results/{dataset}/finetune/{init}/{view}.scores.npz",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "finetune", "split"),
        views_dir="results/{dataset}/views",
        state="results/{dataset}/finetune/{init}/{view}.state",
    log:
        "results/{dataset}/logs/finetune/{init}/{view}.log",
    benchmark:
        "results/{dataset}/benchmarks/finetune/{init}/{view}.tsv"
    threads: config["threads"]["finetune"]
    resources:
        mem_mb=config["resources"]["finetune"]["mem_mb"],
        runtime=config["resources"]["finetune"]["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["finetune"]["gpus"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/finetune.py"


rule finetune_report:
    input:
        manifest="results/{dataset}/manifest.tsv",
        scores=finetune_scores,
    output:
        json="results/{dataset}/finetune.json",
        markdown=report("results/{dataset}/finetune.md", caption="../report/finetune.rst", category="Results"),
        details="results/{dataset}/finetune_details.json",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "finetune", "split"),
        entries=finetune_entries,
    log:
        "results/{dataset}/logs/finetune_report.log",
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/finetune_report.py"
