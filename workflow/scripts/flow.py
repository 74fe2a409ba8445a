from cocon.logs import stage_logging
from cocon.views.flow import extract_flow

with stage_logging(snakemake.log[0]):
    extract_flow(snakemake.params.dataset, snakemake.input.rgb, snakemake.output[0], snakemake.threads)
