# The paper's qualitative analyses on the frozen features: class consistency (Tables 4/7),
# t-SNE (Fig. 3/8), cosine-similarity histograms (Fig. 10), per-class gains of the
# fine-tuned models (Fig. 4), soft alignment (Fig. 5/9), nearest neighbours (Fig. 11) and
# the training curves (cocon.analysis.analyse). Each figure is a PNG with its data beside it.
rule analyse:
    input:
        unpack(analyse_inputs),
        manifest=lambda wildcards: manifest_path(wildcards.dataset),
    output:
        consistency=report("results/{dataset}/split{split}/analysis/consistency.md", caption="../report/consistency.rst",
                           category="Analyses", subcategory="Class consistency"),
        consistency_json="results/{dataset}/split{split}/analysis/consistency.json",
        figures=report(directory("results/{dataset}/split{split}/analysis/figures"), patterns=["{name}.png"],
                       caption="../report/figures.rst", category="Figures"),
    params:
        dataset=lambda wildcards: DATASETS[wildcards.dataset],
        features=lambda wildcards: analysed_features(wildcards.dataset, wildcards.split),
        runs=lambda wildcards: training_runs(wildcards.dataset, wildcards.split),
        views_dir=lambda wildcards: views_folder(wildcards.dataset),
    log:
        "results/{dataset}/logs/split{split}/analyse.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/analyse.tsv"
    threads: config["threads"]["analysis"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["analysis"].get(wildcards.dataset, config["resources"]["analysis"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/analyse.py"
