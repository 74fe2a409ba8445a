from cocon.logs import stage_logging
from cocon.views.flow import extract_flow

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        extract_flow(snakemake.params.dataset, snakemake.input.rgb, snakemake.output[0], snakemake.threads)
