from cocon.data.manifest import run_manifest
from cocon.logs import stage_logging

with stage_logging(snakemake.log[0]):
    run_manifest(snakemake.params.dataset, snakemake.output.manifest, snakemake.output.excluded, snakemake.threads)
