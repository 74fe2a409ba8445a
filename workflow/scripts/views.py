from cocon.logs import stage_logging
from cocon.views import write_views_index

with stage_logging(snakemake.log[0]):
    write_views_index(snakemake.input.manifest, snakemake.input.shards, snakemake.output[0])
