# A dataset and its seed variants (the datasets whose seeds_of names it, differing only in
# their training seeds) summarised: mean, spread and paired differences of random, CPC and
# CoCon on frozen encoders (cocon.evidence). `make evidence` builds results/evidence/evidence.json.
rule evidence:
    input:
        unpack(evidence_inputs),
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
    output:
        json="results/{dataset}/evidence.json",
        markdown=report("results/{dataset}/evidence.md", caption="../report/evidence.rst", category="Results"),
    params:
        runs=lambda wildcards: evidence_runs(wildcards.dataset),
        seeds=lambda wildcards: [DATASETS[name]["pretrain"]["seed"] for name in seed_datasets(wildcards.dataset)],
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "analysis"),
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
        logs=lambda wildcards: [f"results/{name}/logs" for name in seed_datasets(wildcards.dataset)],
        memory_mb=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["memory_mb"],
    log:
        "results/{dataset}/logs/evidence.log",
    resources:
        mem_mb=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/evidence.py"
