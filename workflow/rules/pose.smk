rule pose:
    input:
        rgb="results/{dataset}/views/rgb/{shard}.h5",
        model=lambda wildcards: model_files(wildcards.dataset, "pose"),
    output:
        "results/{dataset}/views/pose/{shard}.h5",
    params:
        dataset=lambda wildcards: dataset_params(wildcards.dataset, "pose"),
    log:
        "results/{dataset}/logs/pose/{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/pose/{shard}.tsv"
    threads: config["threads"]["pose"]
    resources:
        mem_mb=lambda wildcards: config["resources"]["pose"].get(wildcards.dataset, config["resources"]["pose"])["mem_mb"],
        runtime=lambda wildcards: config["resources"]["pose"].get(wildcards.dataset, config["resources"]["pose"])["runtime"],
    conda:
        "../../envs/cocon.yaml"
    script:
        "../scripts/pose.py"
