from cocon.logs import stage_logging
from cocon.train.import_checkpoint import import_checkpoint

if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        import_checkpoint(snakemake.input[0], snakemake.output[0], snakemake.params.options)
