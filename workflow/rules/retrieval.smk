# Nearest-neighbour retrieval (the protocol of DPC's successors): test videos query the
# train videos, per initialisation and view and for the fused views (cocon.analysis.retrieval).
rule retrieval:
    input:
        analysis_features,
    output:
        json="results/{dataset}/split{split}/analysis/retrieval.json",
        markdown=report("results/{dataset}/split{split}/analysis/retrieval.md", caption="../report/retrieval.rst",
                        category="Analyses", subcategory="Retrieval"),
    params:
        ks=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["retrieval_ks"],
        memory_mb=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["memory_mb"],
    log:
        "results/{dataset}/logs/split{split}/retrieval.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/retrieval.tsv"
    resources:
        mem_mb=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/retrieval.py"
