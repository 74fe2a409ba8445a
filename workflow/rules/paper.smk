# The paper's Tables 1, 2, 3, 5 and 6 for one dataset in the UCF101 columns: every cell's
# fine-tuning runs (cocon.experiments.paper_cells), our numbers beside the paper's.
rule paper:
    input:
        manifests=paper_manifests,
        scores=paper_scores,
    output:
        json="results/{dataset}/paper.json",
        markdown=report("results/{dataset}/paper.md", caption="../report/paper.rst", category="Results"),
    params:
        cells=lambda wildcards: cells(wildcards.dataset),
        ensemble_weights=lambda wildcards: {cell.dataset: DATASETS[cell.dataset]["finetune"]["ensemble_weights"]
                                            for cell in cells(wildcards.dataset) if cell.run},
    log:
        "results/{dataset}/logs/paper.log",
    resources:
        mem_mb=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["report"].get(wildcards.dataset, config["resources"]["report"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/paper.py"
