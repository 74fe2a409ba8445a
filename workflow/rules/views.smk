rule views:
    input:
        manifest="results/{dataset}/manifest.tsv",
        shards=view_shards,
    output:
        report("results/{dataset}/views.tsv", caption="../report/views.rst", category="Views"),
    log:
        "results/{dataset}/logs/views.log",
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/views.py"
