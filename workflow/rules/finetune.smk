# Fine-tuning and dense testing per (split, initialisation, view); {init} is random,
# <source>/cpc or <source>/<method>/<view set> (cocon.experiments), so one pretraining
# can be fine-tuned on several datasets (the paper's Table 2).
rule finetune:
    input:
        unpack(finetune_inputs),
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
    output:
        model="results/{dataset}/split{split}/finetune/{init}/{view}.pt",
        scores="results/{dataset}/split{split}/finetune/{init}/{view}.scores.npz",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "finetune"),
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
        state="results/{dataset}/split{split}/finetune/{init}/{view}.state",
    log:
        "results/{dataset}/logs/split{split}/finetune/{init}/{view}.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/finetune/{init}/{view}.tsv"
    threads: config["threads"]["finetune"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["finetune"].get(wildcards.dataset, config["resources"]["finetune"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["finetune"].get(wildcards.dataset, config["resources"]["finetune"])["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["finetune"]["gpus"],
        # one task: its gpus, and a CPU per training process (one per GPU) and per data loader
        cpus_per_task=lambda wildcards, threads: max(threads, DATASETS[wildcards.dataset]["finetune"]["gpus"] * (DATASETS[wildcards.dataset]["finetune"]["workers"] + 1)),
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/finetune.py"


rule finetune_report:
    input:
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
        scores=split_finetune_scores,
    output:
        json="results/{dataset}/split{split}/finetune.json",
        markdown="results/{dataset}/split{split}/finetune.md",
        details="results/{dataset}/split{split}/finetune_details.json",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "finetune"),
        entries=lambda wildcards: finetune_entries(wildcards.dataset, wildcards.split),
    log:
        "results/{dataset}/logs/split{split}/finetune_report.log",
    resources:
        mem_mb=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/finetune_report.py"


rule finetune_splits:
    input:
        split_reports,
    output:
        json="results/{dataset}/finetune.json",
        markdown=report("results/{dataset}/finetune.md", caption="../report/finetune.rst", category="Results"),
    log:
        "results/{dataset}/logs/finetune_splits.log",
    resources:
        mem_mb=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/finetune_splits.py"
