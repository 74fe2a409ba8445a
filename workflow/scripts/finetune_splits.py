from cocon.logs import stage_logging
from cocon.train.evaluate import write_split_summary

if __name__ == "__main__":
    with stage_logging(snakemake.log[0]):
        write_split_summary(snakemake.input, snakemake.output.json, snakemake.output.markdown)
