from cocon.analysis.probe import write_probe
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    write_probe(snakemake.input, snakemake.params.cs, snakemake.params.seed, snakemake.output.json,
                snakemake.output.markdown, threads=snakemake.threads)
