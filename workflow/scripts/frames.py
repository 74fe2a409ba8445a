from cocon.logs import stage_logging
from cocon.views.frames import extract_frames

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        extract_frames(snakemake.params.dataset, snakemake.input.manifest, snakemake.wildcards.shard, snakemake.output[0])
