# results/{dataset}/report.html: one self-contained page with the paper's tables, the
# fine-tuning results, retrieval, the linear probe, class consistency, every figure, the
# dataset summary and view contact sheets (cocon.analysis.report). `snakemake --report`
# gathers the same outputs with their captions (workflow/report/).
rule report:
    input:
        unpack(report_inputs),
    output:
        "results/{dataset}/report.html",
    params:
        dataset=lambda wildcards: DATASETS[wildcards.dataset],
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
    log:
        "results/{dataset}/logs/report.log",
    benchmark:
        "results/{dataset}/benchmarks/report.tsv"
    resources:
        mem_mb=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/report.py"
