# Features of a frozen encoder per (split, initialisation, view): the pooled context of
# every dense window averaged per video, and 18 block features per test video
# (cocon.analysis.features). Every analysis reads them; nothing else runs the encoder.
rule features:
    input:
        unpack(features_inputs),
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
    output:
        "results/{dataset}/split{split}/features/{init}/{view}.npz",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pretrain", "finetune"),
        batch_size=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["batch_size"],
        gpus=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["gpus"],
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
    log:
        "results/{dataset}/logs/split{split}/features/{init}/{view}.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/features/{init}/{view}.tsv"
    threads: config["threads"]["features"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["features"].get(wildcards.dataset, config["resources"]["features"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["features"].get(wildcards.dataset, config["resources"]["features"])["runtime"],
        gpu=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["gpus"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/features.py"
