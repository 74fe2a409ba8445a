from cocon.data.manifest import run_manifest
from cocon.logs import stage_logging

# guarded: worker processes re-import this file as __mp_main__, without the snakemake object
if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        run_manifest(snakemake.params.dataset, snakemake.output.manifest, snakemake.output.excluded, snakemake.threads)
