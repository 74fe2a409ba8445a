# A linear probe: logistic regression on the frozen, averaged context features of the
# train split, tested on the test split (cocon.analysis.probe).
rule probe:
    input:
        analysis_features,
    output:
        json="results/{dataset}/split{split}/analysis/probe.json",
        markdown=report("results/{dataset}/split{split}/analysis/probe.md", caption="../report/probe.rst",
                        category="Analyses", subcategory="Linear probe"),
    params:
        cs=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["probe_cs"],
        seed=lambda wildcards: DATASETS[wildcards.dataset]["analysis"]["seed"],
    log:
        "results/{dataset}/logs/split{split}/probe.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/probe.tsv"
    threads: config["threads"]["analysis"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/probe.py"
