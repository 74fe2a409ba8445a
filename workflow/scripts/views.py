from cocon.logs import stage_logging
from cocon.views import write_views_index

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        write_views_index(snakemake.input.manifest, snakemake.input.shards, snakemake.output[0], snakemake.threads)
