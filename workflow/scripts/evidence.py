from cocon.evidence import SeedRun, write_evidence
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    write_evidence(snakemake.params.seeds, [SeedRun(**run) for run in snakemake.params.runs], snakemake.output.json,
                   snakemake.output.markdown, snakemake.params.dataset, views_dir=snakemake.params.views_dir,
                   manifest=snakemake.input.manifest, logs=snakemake.params.logs, memory_mb=snakemake.params.memory_mb)
