from cocon.logs import stage_logging
from cocon.views.pose import extract_pose

with stage_logging(snakemake.log[0]):
    extract_pose(snakemake.params.dataset, snakemake.input.rgb, snakemake.output[0], snakemake.threads)
