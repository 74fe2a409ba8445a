from cocon.analysis.retrieval import write_retrieval
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    write_retrieval(snakemake.input, snakemake.params.ks, snakemake.output.json, snakemake.output.markdown,
                    memory_mb=snakemake.params.memory_mb)
