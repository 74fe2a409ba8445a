from cocon.logs import stage_logging
from cocon.views.pose import extract_pose

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        extract_pose(snakemake.params.dataset, snakemake.input.rgb, snakemake.output[0], snakemake.threads)
