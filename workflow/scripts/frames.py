from cocon.logs import stage_logging
from cocon.views.frames import extract_frames

with stage_logging(snakemake.log[0]):
    extract_frames(snakemake.params.dataset, snakemake.input.manifest, snakemake.wildcards.shard, snakemake.output[0])
