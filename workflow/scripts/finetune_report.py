from cocon.logs import stage_logging
from cocon.train.evaluate import write_report

if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        write_report(snakemake.params.dataset, int(snakemake.wildcards.split), snakemake.input.manifest,
                     snakemake.params.entries, snakemake.output.json, snakemake.output.markdown,
                     snakemake.output.details)
