from cocon.logs import stage_logging
from cocon.views.seg import extract_seg

with stage_logging(snakemake.log[0]):
    extract_seg(snakemake.params.dataset, snakemake.input.rgb, snakemake.output[0], snakemake.threads)
